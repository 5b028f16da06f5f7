"""Callbacks that Lightning does not ship: the resumable last checkpoint, example figures, progress
lines for logs and a wall-time budget (:class:`TimeBudget`: it plans the epochs that fit, and the
learning-rate schedule with them, over all the sessions of a resumed run)."""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import Tensor
from torch.optim.lr_scheduler import CosineAnnealingLR, SequentialLR

from lenscnn.plots import lens_grid_figure
from lenscnn.progress import Tracker, is_terminal
from lenscnn.training import quiet
from lenscnn.training.figures import log_figure

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


class TimeBudget(pl.Callback):
    """Finish the run within ``minutes`` of wall time, whole epochs at a time, with its learning-rate
    schedule ending at its minimum where training ends.

    The budget covers the whole run, over all of its sessions: each session counts from this callback's
    creation (after the imports), and a resumed session adds the wall time its checkpoint's sessions had
    used, so ``ckpt_path=last`` with the same budget keeps the plan of a run that was interrupted, and a
    larger ``minutes`` (or ``trainer.max_epochs``) trains longer.

    The plan is the number of epochs that fit, at most ``trainer.max_epochs`` (or ``trainer.max_steps``
    in epochs), estimated from the measured epoch time, keeping back the time the test will take:

    * after every epoch, from the typical epoch (the median, without a session's first epoch, which
      compiles), up or down;
    * during an epoch, :attr:`CHECKS_PER_EPOCH` times from the rate of its batches so far: only down,
      when the budget would end within the epochs planned (so a budget shorter than an epoch ends its
      schedule with that epoch, not at the learning-rate peak where a decision after it would);
    * when a run resumes, from the epoch time its checkpoint measured, over the budget left.

    A changed plan sets ``trainer.fit_loop.max_epochs`` and the planned steps of the model's
    :class:`lenscnn.models.regressor.WarmupCosine` (whose learning rate is a function of the step and
    the plan, so it reaches its floor on the last planned step; a ``CosineAnnealingLR`` gets its
    ``T_max`` moved by the steps added or removed). With several ranks, rank 0's plan is everybody's.
    A run that fits its budget is left exactly as configured, step for step.

    When the budget ends training, one line says so (``time budget of 8.5 min ended training after 4 of 11
    epochs``) in place of Lightning's, which would name the lowered ``max_epochs`` as if it had been asked for
    (:func:`lenscnn.training.quiet.hide_max_epochs_stop`). What the run reached is in :attr:`summary`
    (``metrics.json``'s ``time_budget``, also of a resumed run).
    """

    #: Time kept back for the test, in validation passes (the test set is twice the validation
    #: set, plus the prior-mean baseline pass), and seconds of margin.
    TEST_PASSES, MARGIN_S = 3.0, 15.0
    #: Estimates within an epoch (after its first batch, which may compile).
    CHECKS_PER_EPOCH = 10

    def __init__(self, minutes: float):
        if not minutes > 0:
            raise ValueError(f"callbacks.time_budget.minutes must be > 0, got {minutes}")
        self.seconds, self.start = 60.0 * minutes, time.monotonic()
        self.spent = 0.0  # wall seconds of the earlier sessions of a resumed run
        self.planned: int | None = None
        self.configured: int | None = None
        self._saved_epoch_seconds: float | None = None  # the typical epoch of the earlier sessions
        self._epoch_times: list[float] = []
        self._epoch_start = self._val_start = self._val_seconds = self._epoch_val_seconds = 0.0
        self._batches = 0  # training batches of this session's current epoch
        self._first_batch_end = 0.0
        self._steps_per_epoch = 1
        self._schedules: list[tuple[Any, int]] = []  # (WarmupCosine, its planned steps without the budget)

    @property
    def summary(self) -> dict[str, Any]:
        return {
            "minutes": self.seconds / 60.0,
            "configured_epochs": self.configured,
            "trained_epochs": self.planned if self.planned is not None else self.configured,
            "shortened": self.shortened,
        }

    @property
    def shortened(self) -> bool:
        """Whether the plan trains fewer epochs than configured."""
        return self.planned is not None and self.configured is not None and self.planned < self.configured

    def _left(self, now: float) -> float:
        """Seconds of the budget left for training at ``now``, after the test and the margin."""
        used = self.spent + now - self.start
        return self.seconds - used - self.TEST_PASSES * self._val_seconds - self.MARGIN_S

    def training_seconds_left(self) -> float | None:
        """Seconds of the budget left for training now (after the test and the margin; 0 when spent), or
        ``None`` when the budget is not applied (no finite number of epochs to plan)."""
        if self.configured is None:
            return None
        return max(0.0, self._left(time.monotonic()))

    def _typical_epoch(self) -> float | None:
        """Seconds of a typical epoch (with its validation): this session's, else the earlier sessions'."""
        if len(self._epoch_times) >= 2:
            return statistics.median(self._epoch_times[1:])  # a session's first epoch compiles
        return self._saved_epoch_seconds or (self._epoch_times[0] if self._epoch_times else None)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lenscnn.models.regressor import WarmupCosine

        self._schedules = [
            (config.scheduler, config.scheduler.total_steps)
            for config in trainer.lr_scheduler_configs
            if isinstance(config.scheduler, WarmupCosine)
        ]
        self.configured, self.planned = trainer.max_epochs, None  # this fit's: a resume may raise it
        quiet.hide_max_epochs_stop(False)
        batches = trainer.num_training_batches
        if not math.isfinite(batches):
            self.configured = None
        else:
            self._steps_per_epoch = _steps_per_epoch(trainer)
            if not self.configured or self.configured < 0:  # trainer.max_steps bounds the run
                steps = trainer.max_steps
                self.configured = math.ceil(steps / self._steps_per_epoch) if steps > 0 else None
        typical = self._typical_epoch()
        if self.configured is None:
            log.warning("time budget: the run has no finite number of epochs to plan; the budget is not applied")
        elif typical is not None and trainer.global_step > 0:  # resumed: plan over the budget left
            done = trainer.global_step / self._steps_per_epoch
            affordable = math.floor(done + max(0.0, self._left(time.monotonic())) / typical)
            self._plan(trainer, max(math.ceil(done), affordable), grow=True)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start, self._batches, self._epoch_val_seconds = time.monotonic(), 0, 0.0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._batches += 1
        now = time.monotonic()
        if self._batches == 1:
            self._first_batch_end = now
            return
        total = trainer.num_training_batches
        if self.configured is None or self._batches % max(1, total // self.CHECKS_PER_EPOCH):
            return
        per_batch = (now - self._first_batch_end) / (self._batches - 1)
        this_epoch_left = max(0, total - batch_idx - 1) * per_batch + self._val_seconds
        future = self._typical_epoch() or per_batch * total + self._val_seconds
        affordable = trainer.current_epoch + 1 + math.floor(max(0.0, self._left(now) - this_epoch_left) / future)
        self._plan(trainer, affordable, grow=False)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_start = time.monotonic()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_seconds = time.monotonic() - self._val_start
            self._epoch_val_seconds += self._val_seconds

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.monotonic()
        seconds = now - self._epoch_start
        total = trainer.num_training_batches
        if 0 < self._batches < total:  # a resumed epoch: scale its training part to a whole epoch
            seconds = (seconds - self._epoch_val_seconds) * total / self._batches + self._epoch_val_seconds
        self._epoch_times.append(seconds)
        if self.configured is None:
            return
        affordable = trainer.current_epoch + 1 + math.floor(max(0.0, self._left(now)) / self._typical_epoch())
        self._plan(trainer, affordable, grow=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Say that the budget ended training, if it did (not an early stop before the plan's end)."""
        ended = self.shortened and trainer.current_epoch >= self.planned
        if ended and trainer.is_global_zero:
            log.info(
                "time budget of %.3g min ended training after %d of %d epochs",
                self.seconds / 60.0,
                self.planned,
                self.configured,
            )
        quiet.hide_max_epochs_stop(False)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        quiet.hide_max_epochs_stop(False)

    def _plan(self, trainer: pl.Trainer, epochs: int, grow: bool) -> None:
        """Train ``epochs`` epochs in all (at most the configured ones; more than now only if ``grow``), and
        have the learning-rate schedules end on the last step of the last one."""
        if getattr(trainer, "world_size", 1) > 1:  # every rank measures its own clock: rank 0 decides
            epochs = trainer.strategy.broadcast(epochs, src=0)
        current = self.planned if self.planned is not None else self.configured
        epochs = min(epochs, self.configured)
        if epochs == current or (epochs > current and not grow):
            return
        trainer.fit_loop.max_epochs = self.planned = epochs
        quiet.hide_max_epochs_stop(self.shortened)  # on_train_end says what ended training
        added_steps = (epochs - current) * self._steps_per_epoch
        for schedule, full in self._schedules:
            schedule.set_total_steps(min(full, epochs * self._steps_per_epoch))
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            parts = scheduler._schedulers if isinstance(scheduler, SequentialLR) else [scheduler]
            for part in parts:
                if isinstance(part, CosineAnnealingLR):  # torch's recursive form then ends at eta_min
                    part.T_max = max(1, part.T_max + added_steps)
        log.warning(
            "time budget of %.3g min: training stops after epoch %d of %d; the learning-rate schedule ends there",
            self.seconds / 60.0,
            epochs,
            self.configured,
        )

    def state_dict(self) -> dict[str, Any]:
        """The plan (for reading), the wall time used so far and the measured epoch and validation times,
        from which a resumed run plans the budget left."""
        return {
            "planned": self.planned,
            "configured": self.configured,
            "spent_seconds": self.spent + time.monotonic() - self.start,
            "epoch_seconds": self._typical_epoch(),
            "val_seconds": self._val_seconds,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume: count the wall time already used; the plan is made again (:meth:`on_train_start`) from
        this run's budget and limits. The saved plan stands (in :attr:`summary`) only where the resumed fit
        has nothing left to train, and Lightning then starts no training (no :meth:`on_train_start`)."""
        self.planned, self.configured = state_dict.get("planned"), state_dict.get("configured")
        self.spent = float(state_dict.get("spent_seconds", 0.0))
        self._saved_epoch_seconds = state_dict.get("epoch_seconds")
        self._val_seconds = float(state_dict.get("val_seconds", 0.0))


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
        per_epoch = _steps_per_epoch(trainer)
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
    per_epoch, epochs = _steps_per_epoch(trainer), trainer.fit_loop.max_epochs
    total = epochs * per_epoch if epochs and epochs > 0 and per_epoch else trainer.max_steps
    return total if total > 0 else None


def _steps_per_epoch(trainer: pl.Trainer) -> int | None:
    """Optimizer steps of an epoch (``None`` for an endless epoch)."""
    batches = trainer.num_training_batches
    if not math.isfinite(batches):
        return None
    return max(1, math.ceil(batches / getattr(trainer, "accumulate_grad_batches", 1)))
