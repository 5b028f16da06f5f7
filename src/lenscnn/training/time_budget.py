"""A wall-time budget for training (:class:`TimeBudget`): it plans the epochs that fit, and the
learning-rate schedule with them, over all the sessions of a resumed run."""

from __future__ import annotations

import logging
import math
import statistics
import time
from typing import Any

import pytorch_lightning as pl
from torch.optim.lr_scheduler import CosineAnnealingLR, SequentialLR

from lenscnn.training import quiet

log = logging.getLogger(__name__)


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
            self._steps_per_epoch = steps_per_epoch(trainer)
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


def steps_per_epoch(trainer: pl.Trainer) -> int | None:
    """Optimizer steps of an epoch (``None`` for an endless epoch)."""
    batches = trainer.num_training_batches
    if not math.isfinite(batches):
        return None
    return max(1, math.ceil(batches / getattr(trainer, "accumulate_grad_batches", 1)))
