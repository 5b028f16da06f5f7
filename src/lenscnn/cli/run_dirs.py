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
sweep), so a run resolves its directory once. OmegaConf also resolves a value that a config file
overrides while Hydra composes the config (an ``experiment=...`` naming its own ``hydra.sweep.dir``):
the directory then made is never used, and is removed when the process exits
(:func:`remove_empty_run_dirs`), as is any other this process made and left empty.
"""

from __future__ import annotations

import atexit
import shutil
from datetime import datetime
from pathlib import Path

RESOLVER = "lenscnn_run_dir"

#: Run directories this process created through :func:`create_run_dir` (the only ones
#: :func:`remove_if_unused` may delete), each with the parent directories it created for it
#: (deepest first).
_CREATED: dict[Path, list[Path]] = {}

#: What Hydra writes into every run directory before the app does any work (and log files).
_HYDRA_FILES = (".hydra",)
#: What Hydra writes into a sweep directory before its first job.
_SWEEP_FILES = ("multirun.yaml",)


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


def _unused(directory: Path, hydra_files: tuple[str, ...]) -> bool:
    return all(p.name in hydra_files or (p.suffix == ".log" and p.is_file()) for p in directory.iterdir())


def remove_if_unused(directory: str | Path) -> bool:
    """Delete ``directory`` if this process created it and it holds nothing but Hydra's ``.hydra/``
    and log files (a run refused before it wrote anything), with the parent directories created for
    it that are now empty; return whether it was deleted.

    The directory of a job of a sweep that this process created (``<sweep>/<job>``, made by Hydra) is
    deleted likewise, and then the sweep directory too if no other job is in it (only Hydra's
    ``multirun.yaml``): a sweep whose jobs were all refused leaves nothing."""
    directory = Path(directory).resolve()
    owner = next((d for d in (directory, *directory.parents) if d in _CREATED), None)
    if owner is None or not directory.is_dir() or not _unused(directory, _HYDRA_FILES):
        return False
    shutil.rmtree(directory)
    if directory != owner:  # a job's directory: its sweep's, and the levels between, if now unused
        for level in directory.parents:
            if not _unused(level, _HYDRA_FILES + _SWEEP_FILES if level == owner else ()):
                return True
            shutil.rmtree(level)
            if level == owner:
                break
    _remove_parents(owner)
    return True


def _remove_parents(directory: Path) -> None:
    """Forget ``directory`` (removed), and remove the parents made for it that are now empty."""
    for parent in _CREATED.pop(directory):
        try:
            parent.rmdir()
        except OSError:  # not empty: another run is in it
            break


@atexit.register
def remove_empty_run_dirs() -> None:
    """Remove the directories this process created that are still empty (and the parents made for them
    that are then empty): names resolved but never used, such as a default ``hydra.sweep.dir`` that an
    experiment's own replaced while Hydra composed the config (OmegaConf resolves what it overwrites)."""
    for directory in reversed(list(_CREATED)):  # the newest first: parents made for an older one empty last
        try:
            directory.rmdir()  # only an empty directory
        except OSError:  # not empty (a run), or already gone
            if directory.exists():
                continue
        _remove_parents(directory)
