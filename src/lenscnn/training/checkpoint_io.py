"""Crash-safe checkpoints: every checkpoint Lightning writes (``ModelCheckpoint``, ``last.ckpt``,
:class:`~lenscnn.training.callbacks.SaveLast`, SLURM's ``hpc_ckpt``) goes to a temporary sibling,
is flushed to disk, and is renamed onto its name only when complete.

Lightning's own :class:`TorchCheckpointIO` serialises into memory and then overwrites the file
in place, so a process killed while writing (SIGKILL, out of memory, a node failure) leaves a
truncated checkpoint where the previous good one was. Here a reader, or a resume, always finds
either the previous checkpoint or the new one, whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lenscnn.io.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` whose saves are atomic on local and network file systems
    (``os.replace``); paths with a protocol (``s3://``...) are left to Lightning's fsspec writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
