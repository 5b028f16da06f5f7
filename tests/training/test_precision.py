"""CPU training precision (``lenscnn.training.precision``): bf16 mixed where the CPU has AMX, float32
elsewhere; the network's outputs, the loss and the weights stay float32 under bf16 autocast."""

from __future__ import annotations

import json
import math

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from lenscnn.cli.train import build_model
from lenscnn.training.precision import cpu_precision
from tests.helpers import TINY_FAST, TINY_TRAIN, compose_train


@pytest.mark.parametrize(("amx", "expected"), [(True, "bf16-mixed"), (False, "32-true"), (None, "32-true")])
def test_cpu_precision_follows_the_cpu(monkeypatch, amx, expected):
    """bf16 mixed with AMX tiles, float32 without (also on a PyTorch that cannot tell: ``None``)."""
    if amx is None:
        monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    else:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert cpu_precision() == expected


@pytest.mark.parametrize("amx", [True, False])
def test_trainer_cpu_resolves_its_precision_and_the_survey_recipe_pins_float32(tmp_path, monkeypatch, amx):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    native = "bf16-mixed" if amx else "32-true"
    assert compose_train(tmp_path, ["experiment=quickstart"]).trainer.precision == native
    assert compose_train(tmp_path, ["trainer=cpu", "trainer.precision=32-true"]).trainer.precision == "32-true"
    # the shipped survey ensemble was trained in float32: make pretrained reproduces it bit for bit
    assert compose_train(tmp_path, ["experiment=survey_trunk"]).trainer.precision == "32-true"
    assert compose_train(tmp_path, ["experiment=survey_ensemble"]).trainer.precision == "32-true"


def test_a_bf16_mixed_cpu_training_step_keeps_outputs_loss_and_weights_float32(tmp_path):
    """The backbone computes in bfloat16 under CPU autocast; the regressor hands float32 outputs to the loss
    and the predictions; the weights stay float32, change and remain finite."""
    cfg = compose_train(tmp_path, [*TINY_TRAIN, "trainer=cpu", "trainer.precision=bf16-mixed"])
    datamodule = instantiate(cfg.data, _convert_="all")
    model = build_model(cfg.model, datamodule)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    seen: dict[str, torch.dtype] = {}

    def record(name):
        def hook(module, inputs, output):
            if module.training:
                seen[name] = output.dtype

        return hook

    model.net.register_forward_hook(record("net"))
    model.register_forward_hook(record("regressor"))
    trainer = pl.Trainer(
        accelerator="cpu",
        precision=cfg.trainer.precision,
        max_steps=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    assert seen == {"net": torch.bfloat16, "regressor": torch.float32}
    assert trainer.global_step == 3
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    after = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(after[k], before[k]) for k in before)


def test_a_run_records_its_precision_in_metrics_json(hydra_run, tmp_path):
    """The precision depends on the machine under ``trainer=cpu``: ``metrics.json`` says which one trained."""
    _, summary = hydra_run([*TINY_FAST, "trainer=cpu", "trainer.precision=bf16-mixed", "test=false"])
    assert summary.precision == "bf16-mixed"
    assert json.loads((tmp_path / "metrics.json").read_text())["precision"] == "bf16-mixed"
