"""Atomic file writes: readers never see a half-written file, and a failure keeps the old one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path, private: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; move it onto ``path`` only if the block succeeds.

    Readers never see a half-written file and an existing ``path`` survives a failure. ``private``:
    the sibling is this process's own (named by its process id), for a file that several processes
    may write at once (a shared cache: DDP ranks, parallel jobs); each writes whole and the last
    rename wins.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial" if private else f".{path.name}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a fresh hidden sibling directory of ``path``; it replaces ``path`` only if the block
    succeeds and is deleted either way, so a failure leaves neither it nor a partial ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class StagedDirectory:
    """An output directory written file by file inside a ``with`` block: the files go into ``staging`` (a
    hidden sibling, :func:`atomic_directory`) that becomes ``directory`` only when the block succeeds."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._staged = atomic_directory(self.directory)

    def __enter__(self) -> StagedDirectory:
        self.staging = self._staged.__enter__()
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        return self._staged.__exit__(*exc)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as indented, key-sorted JSON to ``path`` atomically."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True))
