"""``lenscnn-simulate``: render simulated lenses with their true parameters.

Writes into the Hydra run directory: ``lenses.h5`` (and/or ``lenses.fits``, rendered and written by
:func:`lenscnn.data.simulated_set.write_simulated_set`) and ``preview.png``, a grid of the first
lenses with their parameters. The lenses are the first ``n`` of the seed's lens stream
(:class:`lenscnn.sim.lens_streams.LensStream`): lens ``i`` of a seed is the same whatever ``n``,
``batch_size`` or ``device`` (its parameters exactly; its image to the float rounding of the
device), except for the noise of ``poisson: exact`` instruments.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from lenscnn.data.simulated_set import FORMATS, write_simulated_set
from lenscnn.errors import UserError
from lenscnn.plots import lens_grid_figure, save_figure
from lenscnn.sim import Simulator
from lenscnn.sim.galaxies import SPLITS

log = logging.getLogger(__name__)


def checked_device(name: str) -> torch.device:
    """The torch device ``name``, refused (a :class:`UserError`, before anything is written) when it
    is not a device or is a CUDA device this torch cannot use."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device {name!r} is not a torch device; use cpu or cuda") from None
    if device.type != "cuda":
        return device
    if not torch.backends.cuda.is_built():
        raise UserError(f"device={name}: this torch has no CUDA device (it is built for the CPU only); use device=cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise UserError(
            f"device={name}: this torch has no CUDA device (none visible: check the driver and "
            "CUDA_VISIBLE_DEVICES); use device=cpu"
        )
    if device.index is not None and device.index >= count:
        raise UserError(f"device={name}: this torch has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device


def simulate(cfg: DictConfig) -> Path:
    """Render ``cfg.n`` lenses and write them into ``cfg.paths.output_dir``; return that directory."""
    n, batch_size = cfg.n, cfg.batch_size
    if not isinstance(n, int) or n < 1:
        raise UserError(f"n must be a positive integer, got {n!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    formats = list(cfg.formats)
    if not formats or set(formats) - set(FORMATS):
        raise UserError(f"formats must be a non-empty list of {list(FORMATS)}, got {formats}")
    if cfg.galaxy_split not in SPLITS:
        raise UserError(f"galaxy_split must be one of {list(SPLITS)}, got {cfg.galaxy_split!r}")
    device = checked_device(str(cfg.device))
    simulator = Simulator.from_config(cfg.simulator).to(device)
    out_dir = Path(cfg.paths.output_dir)
    result = write_simulated_set(
        simulator,
        n,
        out_dir,
        seed=cfg.seed,
        formats=formats,
        batch_size=batch_size,
        noise=cfg.noise,
        split=cfg.galaxy_split,
        keep=int(cfg.preview),
        config_yaml=OmegaConf.to_yaml(cfg.simulator, resolve=True),
    )
    for path in result.files.values():
        log.info("wrote %d lenses to %s", n, path)
    if cfg.preview:
        k = min(int(cfg.preview), n)
        shown = list(simulator.lens_model.component("lens").own.values())  # the main lens's parameters
        values = {name: v[:k] for name, v in result.params.items()}
        bands = simulator.instrument.band_names
        band = bands[0] if len(bands) > 1 else None
        fig = lens_grid_figure(result.images[:k], result.pixel_scale, values, names=shown, band=band)
        save_figure(fig, out_dir / "preview.png", dpi=110)
        log.info("wrote a preview of %d lenses to %s", k, out_dir / "preview.png")
    return out_dir


def task(cfg: DictConfig) -> None:
    """The Hydra task."""
    simulate(cfg)


if __name__ == "__main__":
    from lenscnn.cli import entry

    entry.simulate()
