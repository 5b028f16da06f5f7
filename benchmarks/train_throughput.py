"""Training throughput including on-the-fly rendering, and the share of time spent rendering.

Rows: the quickstart model (``experiment=quickstart``: fast CNN, 64 x 64) and Ensai's
AlexNet on ``hst_ensai`` images (192 x 192). Each is trained with Lightning for a number of
steps (after warm-up steps that absorb compilation); rendering time is measured inside
``LensDataModule.on_after_batch_transfer`` in the same run.

    python benchmarks/train_throughput.py [--steps 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from lenscnn.cli.train import build_model

ROWS = {
    "quickstart (fast CNN, 64x64)": ["experiment=quickstart"],
    "Ensai AlexNet, hst_ensai 192x192": ["model=alexnet", "instrument=hst_ensai", "prior=ensai", "data.batch_size=32"],
}


class _StepTimer(pl.Callback):
    """Wall time of the training steps after ``warmup`` steps."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.batch_size = warmup, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()
            self.batch_size = batch["image"].shape[0]

    def on_train_end(self, trainer, pl_module):  # noqa: D102
        self.end = time.perf_counter()


def measure(overrides: list[str], steps: int, warmup: int) -> tuple[float, float]:
    """``(images/s, render share)`` of ``steps`` training steps of the composed config."""
    with initialize_config_module("lenscnn.conf", version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "logger=[]", "callbacks=none"], return_hydra_config=False)
    datamodule = instantiate(cfg.data, _convert_="all")
    model = build_model(cfg.model, datamodule)
    render_time = [0.0]
    render = datamodule.on_after_batch_transfer

    def timed_render(batch, dataloader_idx):
        t0 = time.perf_counter()
        out = render(batch, dataloader_idx)
        if model.trainer is not None and model.trainer.global_step >= warmup:
            render_time[0] += time.perf_counter() - t0
        return out

    datamodule.on_after_batch_transfer = timed_render
    timer = _StepTimer(warmup)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=warmup + steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=datamodule)
    elapsed = timer.end - timer.start
    return steps * timer.batch_size / elapsed, render_time[0] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["quickstart", "alexnet"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for name, overrides in ROWS.items():
        if args.only and args.only not in name.lower():
            continue
        images_per_s, share = measure(overrides, args.steps, args.warmup)
        results.append((name, images_per_s, share))
    print(f"\ntraining throughput, {args.threads} threads, {args.steps} steps after {args.warmup} warm-up steps")
    print(f"{'setting':<36} {'images/s':>9} {'render share':>13}")
    for name, images_per_s, share in results:
        print(f"{name:<36} {images_per_s:>9.0f} {share:>12.1%}")


if __name__ == "__main__":
    main()
