"""Send a matplotlib figure to every configured logger (and always to the run directory)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from pytorch_lightning import Trainer
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger

from lenscnn.io.run_dir import RunDir
from lenscnn.plots import save_figure


def send_figure(loggers: Sequence[Logger], key: str, fig: Figure, step: int = 0) -> None:
    """Log ``fig`` under ``key`` to the TensorBoard and wandb loggers among ``loggers``."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(key, fig, global_step=step, close=False)
        elif isinstance(logger, WandbLogger):
            import wandb

            logger.experiment.log({key: wandb.Image(fig), "trainer/global_step": step})


def log_figure(trainer: Trainer, key: str, fig: Figure) -> None:
    """Log ``fig`` under ``key`` to the trainer's loggers; save a PNG under ``<run>/figures/``
    (:func:`lenscnn.plots.save_figure`); ``fig`` is closed after, on every rank and on failure."""
    try:
        if not trainer.is_global_zero:
            return
        step = trainer.global_step
        send_figure(trainer.loggers, key, fig, step)
        if trainer.default_root_dir:
            out = RunDir(trainer.default_root_dir).figures
            out.mkdir(parents=True, exist_ok=True)
            save_figure(fig, out / f"{key.replace('/', '_')}_step{step:07d}.png", dpi=90)
    finally:
        plt.close(fig)
