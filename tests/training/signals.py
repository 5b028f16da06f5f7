"""A callback that sends a signal to its own training process at a chosen point (for resume tests)."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class SignalAt(pl.Callback):
    """Send ``signum`` to this process after training step ``step``, or during the validation after it."""

    def __init__(self, step: int, during_validation: bool = False, signum: int = signal.SIGTERM):
        self.step, self.during_validation, self.signum, self.sent = step, during_validation, signum, False

    def _send(self, trainer: pl.Trainer) -> None:
        if not self.sent and trainer.global_step == self.step:
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: D102
        if not self.during_validation:
            self._send(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):  # noqa: D102
        if self.during_validation and not trainer.sanity_checking:
            self._send(trainer)
