"""Callbacks that Lightning does not ship: the resumable last checkpoint, example figures, progress
lines for logs and a wall-time budget."""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import Tensor
from torch.optim.lr_scheduler import CosineAnnealingLR, SequentialLR

from lenscnn.plots import lens_grid_figure
from lenscnn.progress import Tracker, is_terminal
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


class TimeBudget(pl.Callback):
    """Finish the run within ``minutes`` of wall time, counted from this callback's creation (after
    the imports): after every epoch the number of epochs still affordable is estimated (from the
    typical epoch time, keeping back the time the test will take), and if fewer than
    ``trainer.max_epochs`` fit, the run is shortened to whole epochs and its cosine learning-rate
    schedule is compressed to end at its minimum on the new last step. A run that fits its budget
    is left exactly as configured, step for step.

    What the run reached is in :attr:`summary` (``metrics.json``'s ``time_budget``). The plan is
    saved in checkpoints, so a resumed run keeps it (and may shorten it further).
    """

    #: Time kept back for the test, in validation passes (the test set is twice the validation
    #: set, plus the prior-mean baseline pass), and seconds of margin.
    TEST_PASSES, MARGIN_S = 3.0, 15.0

    def __init__(self, minutes: float):
        if not minutes > 0:
            raise ValueError(f"callbacks.time_budget.minutes must be > 0, got {minutes}")
        self.seconds, self.start = 60.0 * minutes, time.monotonic()
        self.planned: int | None = None
        self.configured: int | None = None
        self._epoch_times: list[float] = []
        self._epoch_start = self._val_start = self._val_seconds = 0.0

    @property
    def summary(self) -> dict[str, Any]:
        return {
            "minutes": self.seconds / 60.0,
            "configured_epochs": self.configured,
            "trained_epochs": self.planned if self.planned is not None else self.configured,
            "shortened": self.planned is not None and self.planned < (self.configured or 0),
        }

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.configured = self.configured or trainer.max_epochs
        if self.planned is not None:  # resumed: keep the plan
            trainer.fit_loop.max_epochs = self.planned

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.monotonic()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_start = time.monotonic()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_seconds = time.monotonic() - self._val_start

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.monotonic()
        self._epoch_times.append(now - self._epoch_start)
        typical = statistics.median(self._epoch_times[1:] or self._epoch_times)  # epoch 1 compiles
        left = self.seconds - (now - self.start) - self.TEST_PASSES * self._val_seconds - self.MARGIN_S
        done = trainer.current_epoch + 1
        affordable = done + max(0, math.floor(left / typical))
        if affordable < trainer.fit_loop.max_epochs:
            self._shorten(trainer, affordable)

    def _shorten(self, trainer: pl.Trainer, epochs: int) -> None:
        removed_steps = (trainer.fit_loop.max_epochs - epochs) * trainer.num_training_batches
        trainer.fit_loop.max_epochs = self.planned = epochs
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            parts = scheduler._schedulers if isinstance(scheduler, SequentialLR) else [scheduler]
            for part in parts:
                if isinstance(part, CosineAnnealingLR):  # torch's recursive form then ends at eta_min
                    part.T_max = max(1, part.T_max - removed_steps)
        log.warning(
            "time budget %.1f min: training stops after epoch %d of %d; the learning-rate schedule ends there",
            self.seconds / 60.0,
            epochs,
            self.configured,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"planned": self.planned, "configured": self.configured}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.planned, self.configured = state_dict["planned"], state_dict["configured"]


class ProgressLog(pl.Callback):
    """Progress of the fit as log lines when stdout is not a terminal (a log file, ``| tee``, a batch
    job), where the rich progress bar shows nothing until the end: at most every ``every`` seconds
    ``epoch 3/11: 1,234/5,500 steps (22%), 157,952 lenses, 1,480 lenses/s, 0:01:46 elapsed, ~0:06:20
    left``, and the validation metrics after every epoch. On a terminal it does nothing."""

    def __init__(self, every: float = 30.0):
        self.every = every
        self._tracker: Tracker | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if is_terminal() or not trainer.is_global_zero:
            return
        self._tracker = Tracker("training", None, unit="lenses", of="steps", every=self.every, logger=log)
        self._tracker.completed = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._tracker is None:
            return
        epochs, batches = trainer.fit_loop.max_epochs, trainer.num_training_batches
        self._tracker.total = epochs * batches if epochs and epochs > 0 else trainer.max_steps
        self._tracker.description = f"epoch {trainer.current_epoch + 1}/{epochs}"
        self._tracker.advance(batch["image"].shape[0], completed=trainer.global_step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._tracker is None or trainer.sanity_checking:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(values.items()) if k.count("/") == 1)
        log.info("epoch %d/%s validated: %s", trainer.current_epoch + 1, trainer.fit_loop.max_epochs, shown)
