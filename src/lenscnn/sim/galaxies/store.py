"""Build (or load) a galaxy library, store it in a file and summarise it: what ``lenscnn-galaxies`` does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lenscnn.sim.galaxies import hudf
from lenscnn.sim.galaxies.library import SPLITS, GalaxyLibrary
from lenscnn.sim.galaxies.loading import load_library

#: The file :func:`write_library` writes a library other than ``hudf`` to, in ``out_dir``, when ``out`` is not given.
LIBRARY_FILE = "galaxies.h5"


@dataclass(frozen=True)
class LibrarySummary:
    """The size of a galaxy library.

    Attributes:
        per_split: ``{split: number of galaxies}`` for every split of :data:`SPLITS`, in that order.
        median_r_half: median half-light radius [arcsec] (``r_half * pixel_scale``; NaN for no galaxy).
    """

    per_split: dict[str, int]
    median_r_half: float


def summarize(library: GalaxyLibrary) -> LibrarySummary:
    """The galaxies per split and the median half-light radius [arcsec] of ``library``."""
    counts = np.bincount(library.split, minlength=len(SPLITS))
    return LibrarySummary(
        per_split={name: int(count) for name, count in zip(SPLITS, counts, strict=True)},
        median_r_half=float(np.median(library.r_half * library.pixel_scale)),
    )


def write_library(
    spec: str, size: int, *, out_dir: str | Path, out: str | Path | None = None, rebuild: bool = False
) -> tuple[GalaxyLibrary, Path]:
    """The library ``spec`` with ``size x size`` stamps (:func:`load_library`), written to a file.

    ``hudf`` is loaded from its cache file (:func:`hudf.cache_path`; built first if missing, or when
    ``rebuild``) and copied to ``out`` when ``out`` is another file. Any other ``spec`` is built
    (or read) afresh and written to ``out``, by default ``out_dir / "galaxies.h5"``. Files are
    written atomically (:meth:`GalaxyLibrary.save`). Returns the library and its file.
    """
    if spec == "hudf":
        library = hudf.load_hudf(size, rebuild=rebuild)
        path = Path(out) if out else hudf.cache_path(size)
        if path.resolve() != hudf.cache_path(size).resolve():
            library.save(path)
    else:
        library = load_library(spec, size)
        path = Path(out) if out else Path(out_dir) / LIBRARY_FILE
        library.save(path)
    return library, path
