"""``lenscnn-galaxies``: build a real-galaxy source library, report its splits and preview it.

The library (:mod:`lenscnn.sim.galaxies`, built and written by
:func:`lenscnn.sim.galaxies.store.write_library`) goes to ``out``: by default the cache file for the
built-in ``hudf`` library, else ``galaxies.h5`` in the Hydra run directory, where
``galaxies.png`` shows a grid of its stamps.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from lenscnn.errors import UserError
from lenscnn.plots import galaxy_grid_figure, save_figure
from lenscnn.sim.galaxies.store import summarize, write_library

log = logging.getLogger(__name__)


def galaxies(cfg: DictConfig) -> Path:
    """Build or load the library ``cfg.library``, write it to ``cfg.out`` and a preview into the run
    directory; return the library file."""
    size, preview = cfg.size, cfg.preview
    if not isinstance(size, int) or size < 8 or size % 2:
        raise UserError(f"size must be an even integer >= 8 (pixels), got {size!r}")
    if not isinstance(preview, int) or preview < 0:
        raise UserError(f"preview must be a non-negative integer, got {preview!r}")
    out_dir = Path(cfg.paths.output_dir)
    library, out = write_library(str(cfg.library), size, out_dir=out_dir, out=cfg.out, rebuild=bool(cfg.rebuild))

    summary = summarize(library)
    per_split = ", ".join(f"{name} {count}" for name, count in summary.per_split.items())
    log.info("%d galaxies (%s), %d x %d stamps", len(library), per_split, size, size)
    log.info("median half-light radius %.2f arcsec; %s", summary.median_r_half, library.origin)
    log.info("galaxy library: %s", out)
    if preview:
        k = min(preview, len(library))
        fig = galaxy_grid_figure(library, np.linspace(0, len(library) - 1, k).round().astype(int))
        save_figure(fig, out_dir / "galaxies.png", dpi=110)
        log.info("preview of %d galaxies: %s", k, out_dir / "galaxies.png")
    return out


def task(cfg: DictConfig) -> None:
    """The Hydra task."""
    galaxies(cfg)


if __name__ == "__main__":
    from lenscnn.cli import entry

    entry.galaxies()
