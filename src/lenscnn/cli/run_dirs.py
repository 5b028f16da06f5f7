"""Run directories: each run gets its own, created exclusively, and a run that fails before doing
any work leaves none behind.

``conf/hydra/default.yaml`` names run and sweep directories ``${lenscnn_run_dir:<parent>}``:
``<parent>/<date>_<time>``, or ``<date>_<time>_2``, ``_3``, ... when another run started in the
same second took that name. The name is taken with ``os.mkdir``, which fails when the directory
exists, so runs started at the same instant (a script, a job array) never share a directory,
on any file system with atomic ``mkdir`` (local disks, NFS, Lustre). ``${lenscnn_run_dir:<parent>,<stamp>}``
with a non-empty stamp (``LENSCNN_RUN_STAMP``, set inside SLURM jobs) is ``<parent>/<stamp>``,
shared on purpose by every rank of the job and by its requeued restarts.

The resolver is cached per config (OmegaConf ``use_cache``, which Hydra copies into each job of a
sweep), so a run resolves its directory once.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

RESOLVER = "lenscnn_run_dir"

#: Run directories this process created through :func:`create_run_dir` (the only ones
#: :func:`remove_if_unused` may delete), each with the parent directories it created for it
#: (deepest first).
_CREATED: dict[Path, list[Path]] = {}

#: What Hydra writes into every run directory before the app does any work.
_HYDRA_FILES = (".hydra",)


def create_run_dir(parent: str | Path, name: str) -> Path:
    """Create and return ``parent/name``, or ``parent/name_2``, ``name_3``, ... : the first that did
    not exist. Concurrent callers always get different directories."""
    given, parent = Path(parent), Path(parent).resolve()
    path, attempt = parent / name, 1
    while True:
        made = [p for p in (parent, *parent.parents) if not p.exists()]
        parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
        except FileExistsError:
            attempt += 1
            path = parent / f"{name}_{attempt}"
            continue
        except FileNotFoundError:  # a refused run removed the empty parent meanwhile: make it again
            continue
        _CREATED[path] = made
        return given / path.name


def run_dir(parent: str, stamp: str | None = None) -> str:
    """The ``${lenscnn_run_dir:<parent>[,<stamp>]}`` resolver: ``parent/<stamp>`` for a shared stamp,
    else a new ``parent/<date>_<time>[_N]`` (see the module docstring)."""
    if stamp:
        return str(Path(parent) / stamp)
    return str(create_run_dir(parent, datetime.now().strftime("%Y-%m-%d_%H-%M-%S")))


def register_resolver() -> None:
    """Register ``${lenscnn_run_dir:...}`` with OmegaConf (cached per config); a no-op if registered."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, run_dir, use_cache=True)


def remove_if_unused(directory: str | Path) -> bool:
    """Delete ``directory`` if this process created it and it holds nothing but Hydra's ``.hydra/``
    and log files (a run refused before it wrote anything), with the parent directories created for
    it that are now empty; return whether it was deleted."""
    directory = Path(directory).resolve()
    if directory not in _CREATED or not directory.is_dir():
        return False
    if any(p.name not in _HYDRA_FILES and p.suffix != ".log" for p in directory.iterdir()):
        return False
    shutil.rmtree(directory)
    for parent in _CREATED.pop(directory):
        try:
            parent.rmdir()
        except OSError:  # not empty: another run is in it
            break
    return True
