"""``lenscnn-galaxies``: build a real-galaxy source library, report its splits and preview it.

The library (:mod:`lenscnn.sim.galaxies`) goes to ``out``: by default the cache file for the
built-in ``hudf`` library, else ``galaxies.h5`` in the Hydra run directory, where
``galaxies.png`` shows a grid of its stamps.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from omegaconf import DictConfig

from lenscnn.errors import UserError
from lenscnn.plots import save_figure
from lenscnn.sim.galaxies import SPLITS, GalaxyLibrary, hudf, load_library

log = logging.getLogger(__name__)


def galaxy_grid_figure(library: GalaxyLibrary, indices: np.ndarray, ncols: int = 5) -> Figure:
    """A grid of the stamps ``indices`` (square-root stretch, ``origin="lower"``), each titled with
    its name, split and half-light radius in arcsec; axes in arcsec about the stamp centre."""
    n = len(indices)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.6 * nrows), squeeze=False)
    half = library.stamp_size / 2
    split = library.split
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, indices, strict=False):
        scale = library.pixel_scale[i]
        ax.imshow(
            np.sqrt(library.images[i]),
            origin="lower",
            cmap="gray",
            extent=(-half * scale, half * scale, -half * scale, half * scale),
        )
        ax.set_axis_on()
        ax.tick_params(labelsize=6)
        title = f'{library.names[i]} ({SPLITS[split[i]]})\n$r_{{1/2}}$ = {library.r_half[i] * scale:.2f}"'
        ax.set_title(title, fontsize=7)
    fig.suptitle(f"{len(library)} galaxies: {library.origin}", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def galaxies(cfg: DictConfig) -> Path:
    """Build or load the library ``cfg.library``, write it to ``cfg.out`` and a preview into the run
    directory; return the library file."""
    size, preview = cfg.size, cfg.preview
    if not isinstance(size, int) or size < 8 or size % 2:
        raise UserError(f"size must be an even integer >= 8 (pixels), got {size!r}")
    if not isinstance(preview, int) or preview < 0:
        raise UserError(f"preview must be a non-negative integer, got {preview!r}")
    out_dir = Path(cfg.paths.output_dir)
    spec = str(cfg.library)
    if spec == "hudf":
        library = hudf.load_hudf(size, rebuild=bool(cfg.rebuild))
        out = Path(cfg.out) if cfg.out else hudf.cache_path(size)
        if out.resolve() != hudf.cache_path(size).resolve():
            library.save(out)
    else:
        library = load_library(spec, size)
        out = Path(cfg.out) if cfg.out else out_dir / "galaxies.h5"
        library.save(out)

    counts = np.bincount(library.split, minlength=len(SPLITS))
    per_split = ", ".join(f"{name} {count}" for name, count in zip(SPLITS, counts, strict=True))
    r_half = np.median(library.r_half * library.pixel_scale)
    log.info("%d galaxies (%s), %d x %d stamps", len(library), per_split, size, size)
    log.info("median half-light radius %.2f arcsec; %s", r_half, library.origin)
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
