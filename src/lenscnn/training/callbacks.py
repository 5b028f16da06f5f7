"""Callbacks that Lightning does not ship: the resumable last checkpoint and example figures."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import Tensor

from lenscnn.plots import lens_grid_figure
from lenscnn.training.figures import log_figure

log = logging.getLogger(__name__)


class SaveLast(pl.Callback):
    """Keep ``<dirpath>/<filename>.ckpt`` the latest state of the run.

    ``ModelCheckpoint(save_last=True)`` saves only when it checkpoints (after validation),
    so a run that stops mid-epoch (``max_steps``) or is interrupted would resume from an
    older state. This callback also saves when ``fit`` ends and on SIGINT (Ctrl-C) or
    SIGTERM, then the run exits; ``ckpt_path=last`` resumes from exactly there. Unlike
    Lightning's ``OnExceptionCheckpoint`` it keeps the file, and it ignores genuine errors,
    whose state is not worth resuming from.
    """

    def __init__(self, dirpath: str, filename: str = "last"):
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole state: a resume needs it

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or trainer.state.fn != "fit":
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole state: a resume needs it
        log.warning("interrupted at step %d: saved %s", trainer.global_step, self.path)


class ExampleLenses(pl.Callback):
    """Draw the first ``count`` validation lenses with their true and predicted parameters
    after every validation epoch (not the sanity check), as ``val/examples`` in the
    loggers and ``<run>/figures/val_examples_step<step>.png``.

    Reads the ``truth`` and ``prediction`` that :meth:`LensRegressor.validation_step` returns.
    """

    def __init__(self, count: int = 8):
        if count < 1:
            raise ValueError(f"callbacks.example_lenses.count must be >= 1, got {count}")
        self.count = count
        self._examples: dict[str, Tensor] | None = None

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Mapping[str, Tensor] | None,
        batch: Mapping[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or trainer.sanity_checking or not outputs:
            return
        k = self.count
        self._examples = {
            "image": batch["image"][:k],
            "truth": outputs["truth"][:k],
            "prediction": outputs["prediction"][:k],
        }

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._examples is None:
            return
        ex = {k: v.detach().float().cpu().numpy() for k, v in self._examples.items()}
        self._examples = None
        names = pl_module.target_names
        fig = lens_grid_figure(
            ex["image"],
            pl_module.hparams.pixel_scale,
            {n: ex["truth"][:, i] for i, n in enumerate(names)},
            names=names,
            predictions={n: ex["prediction"][:, i] for i, n in enumerate(names)},
        )
        log_figure(trainer, "val/examples", fig)
        plt.close(fig)
