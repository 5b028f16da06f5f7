"""Callbacks that Lightning does not ship: the resumable last checkpoint, example figures and progress
lines for logs. The wall-time budget (:class:`TimeBudget`: it plans the epochs that fit, and the
learning-rate schedule with them, over all the sessions of a resumed run) is in
:mod:`lenscnn.training.time_budget`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import Tensor

from lenscnn.plots import lens_grid_figure
from lenscnn.progress import Tracker, is_terminal
from lenscnn.training.figures import log_figure
from lenscnn.training.time_budget import TimeBudget, steps_per_epoch

log = logging.getLogger(__name__)


def epoch_label(epoch: int, epochs: int | None, word: str = "epoch") -> str:
    """``epoch 3/11`` for the 0-based ``epoch`` 2 of ``epochs`` 11 (what the fit will train: a time budget's
    plan once it has one, ``trainer.fit_loop.max_epochs``); ``epoch 3`` when only ``trainer.max_steps`` bounds
    the run (``epochs`` -1 or ``None``)."""
    label = f"{word} {epoch + 1}"
    return f"{label}/{epochs}" if epochs is not None and epochs > 0 else label


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar with the epochs counted as the log lines count them (:class:`ProgressLog`,
    :class:`TimeBudget`): ``Epoch 1/11`` for the first of 11 (Lightning's bar says ``Epoch 0/10``), updated
    when a time budget changes the plan during the epoch."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._described: tuple[int, int | None] | None = None  # (epoch, max_epochs) of the description shown

    def _get_train_description(self, current_epoch: int) -> str:
        epochs = self.trainer.fit_loop.max_epochs
        self._described = (current_epoch, epochs)
        description = epoch_label(current_epoch, epochs, word="Epoch")
        # padded to the validation bar's description, as Lightning's, so the bars do not flicker
        return f"{description:{len(self.validation_description)}}"

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        shown = self.progress is not None and self.train_progress_bar_id is not None
        if shown and self._described != (trainer.current_epoch, trainer.fit_loop.max_epochs):
            description = self._get_train_description(trainer.current_epoch)
            self.progress.update(self.train_progress_bar_id, description=description)


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
        log_figure(trainer, "val/examples", fig)  # closes the figure


class ProgressLog(pl.Callback):
    """Progress of the fit as log lines when stdout is not a terminal (a log file, ``| tee``, a batch
    job), where the rich progress bar shows nothing until the end: at most every ``every`` seconds
    ``epoch 3/11: 1,234/5,500 steps (22%), 157,952 lenses, 1,480 lenses/s, 0:01:46 elapsed, ~0:06:20
    left``, and the validation metrics after every epoch. On a terminal it does nothing.

    The rate is this session's (a resumed run's steps before it are not counted as done in its time). The
    steps to go are those of the epochs planned (a :class:`TimeBudget` cuts the run to the epochs that fit),
    and the time left is at most the budget's, the current epoch finished: a budget may plan only after
    some batches were measured."""

    def __init__(self, every: float = 30.0):
        self.every = every
        self.tracker: Tracker | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if is_terminal() or not trainer.is_global_zero:
            self.tracker = None
            return
        per_epoch = steps_per_epoch(trainer)
        budget = next((cb for cb in trainer.callbacks if isinstance(cb, TimeBudget)), None)

        def time_left(left: float) -> float:
            """``left`` at most the budget's, the current epoch finished (the budget ends training after the
            epoch it runs out in)."""
            seconds = budget.training_seconds_left() if budget is not None else None
            step, total = trainer.global_step, self.tracker.total
            if seconds is None or not per_epoch or not total or step >= total:
                return left
            this_epoch = max(0, (trainer.current_epoch + 1) * per_epoch - step) * left / (total - step)
            return min(left, max(seconds, this_epoch))

        self.tracker = Tracker(
            epoch_label(trainer.current_epoch, trainer.fit_loop.max_epochs),
            _planned_steps(trainer),
            unit="lenses",
            of="steps",
            every=self.every,
            logger=log,
            start=trainer.global_step,
            time_left=time_left,
        )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.tracker is not None:  # a budget's plan may have changed the epochs since the last batch
            self.tracker.description = epoch_label(trainer.current_epoch, trainer.fit_loop.max_epochs)
            self.tracker.total = _planned_steps(trainer)
            self.tracker.advance(batch["image"].shape[0], completed=trainer.global_step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.tracker is None or trainer.sanity_checking:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(values.items()) if k.count("/") == 1)
        log.info("%s validated: %s", epoch_label(trainer.current_epoch, trainer.fit_loop.max_epochs), shown)


def _planned_steps(trainer: pl.Trainer) -> int | None:
    """Optimizer steps of the epochs planned now (``max_steps`` for endless epochs; ``None``: no end)."""
    per_epoch, epochs = steps_per_epoch(trainer), trainer.fit_loop.max_epochs
    total = epochs * per_epoch if epochs and epochs > 0 and per_epoch else trainer.max_steps
    return total if total > 0 else None
