"""A bf16-mixed Lightning training step of a tiny model on a GPU (``trainer=gpu``), images rendered there."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from lenscnn.cli.train import build_model
from tests.gpu.device import DEVICE, GPU
from tests.helpers import TINY_TRAIN, compose_train

pytestmark = GPU


def test_a_bf16_mixed_training_step(tmp_path):
    """``trainer=gpu`` (bf16-mixed, channels-last): the backbone computes in bfloat16 under autocast, the
    weights stay float32, change, and remain finite; the loss is finite."""
    accelerator = "gpu" if DEVICE.type == "cuda" else "cpu"
    cfg = compose_train(tmp_path, [*TINY_TRAIN, "trainer=gpu", f"trainer.accelerator={accelerator}"])
    assert cfg.trainer.precision == "bf16-mixed" and cfg.model.channels_last
    datamodule = instantiate(cfg.data, _convert_="all")
    model = build_model(cfg.model, datamodule)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    seen: dict[str, object] = {}

    def record(module, inputs, output):
        if module.training:
            seen["dtype"], seen["device"] = output.dtype, output.device.type

    model.net.register_forward_hook(record)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=[DEVICE.index or 0] if accelerator == "gpu" else 1,
        precision=cfg.trainer.precision,
        max_steps=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    assert seen == {"dtype": torch.bfloat16, "device": DEVICE.type}
    assert trainer.global_step == 3
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    after = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(after[k].cpu(), before[k].cpu()) for k in before)
