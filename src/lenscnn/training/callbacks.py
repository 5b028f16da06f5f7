"""Callbacks that Lightning does not ship in the form a resumable run needs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class SaveOnInterrupt(pl.Callback):
    """On SIGINT (Ctrl-C) or SIGTERM, save ``<dirpath>/<filename>.ckpt`` before the run exits.

    Unlike Lightning's ``OnExceptionCheckpoint`` it keeps the file (that is the point: the
    run resumes from it with ``ckpt_path=last``) and ignores genuine errors, whose state
    is not worth resuming from.
    """

    def __init__(self, dirpath: str, filename: str = "last"):
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or not trainer.training:
            return
        trainer.save_checkpoint(self.path)
        log.warning("interrupted at step %d: saved %s", trainer.global_step, self.path)
