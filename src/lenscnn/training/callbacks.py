"""Callbacks that Lightning does not ship in the form a resumable run needs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

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
        trainer.save_checkpoint(self.path)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or trainer.state.fn != "fit":
            return
        trainer.save_checkpoint(self.path)
        log.warning("interrupted at step %d: saved %s", trainer.global_step, self.path)
