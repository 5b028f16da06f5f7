"""``lenscnn-simulate``: render simulated lenses with their true parameters.

Writes into the Hydra run directory: ``lenses.h5`` (and/or ``lenses.fits``) and
``preview.png``, a grid of the first lenses with their parameters. The lenses are the first ``n``
of the seed's lens stream (:class:`lenscnn.sim.simulator.LensStream`): lens ``i`` of a seed is the
same whatever ``n``, ``batch_size`` or ``device`` (its parameters exactly; its image to the float
rounding of the device), except for the noise of ``poisson: exact`` instruments.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lenscnn.errors import UserError
from lenscnn.io.atomic import atomic_path
from lenscnn.io.fits import write_lens_dataset_fits
from lenscnn.io.hdf5 import create_lens_dataset, write_batch
from lenscnn.plots import lens_grid_figure, save_figure
from lenscnn.progress import progress
from lenscnn.sim import Simulator
from lenscnn.sim.galaxies import SPLITS

log = logging.getLogger(__name__)
FORMATS = ("hdf5", "fits")


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
    stream = simulator.make_generator(cfg.seed)  # each batch continues the seed's lens stream
    out_dir = Path(cfg.paths.output_dir)
    config_yaml = OmegaConf.to_yaml(cfg.simulator, resolve=True)
    names = simulator.drawn_names
    kwargs_model = simulator.lens_model.kwargs_model()
    pixel_scale = simulator.instrument.pixel_scale

    keep_all = "fits" in formats  # FITS is written whole, from memory
    kept = n if keep_all else min(int(cfg.preview), n)
    images_kept = np.empty((kept, *simulator.image_shape), dtype=np.float32)
    params_all = {name: np.empty(n) for name in names}
    with contextlib.ExitStack() as stack:
        h5 = None
        if "hdf5" in formats:
            tmp = stack.enter_context(atomic_path(out_dir / "lenses.h5"))
            h5 = stack.enter_context(
                create_lens_dataset(tmp, n, simulator.image_shape, names, pixel_scale, config_yaml, kwargs_model)
            )
        tracker = stack.enter_context(progress("simulating", total=n, unit="lenses"))
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            images, params = simulator.sample(count, stream, noise=cfg.noise, split=cfg.galaxy_split)
            images_np = images.cpu().numpy()
            params_np = {k: params[k].double().cpu().numpy() for k in names}
            if start < kept:
                images_kept[start : min(start + count, kept)] = images_np[: kept - start]
            for k in names:
                params_all[k][start : start + count] = params_np[k]
            if h5 is not None:
                write_batch(h5, start, images_np, params_np)
            tracker.advance(count)
    if "hdf5" in formats:
        log.info("wrote %d lenses to %s", n, out_dir / "lenses.h5")
    if "fits" in formats:
        with atomic_path(out_dir / "lenses.fits") as tmp:
            write_lens_dataset_fits(tmp, images_kept, params_all, pixel_scale, config_yaml, kwargs_model)
        log.info("wrote %d lenses to %s", n, out_dir / "lenses.fits")
    if cfg.preview:
        k = min(int(cfg.preview), n)
        shown = list(simulator.lens_model.component("lens").own.values())  # the main lens's parameters
        values = {name: v[:k] for name, v in params_all.items()}
        fig = lens_grid_figure(images_kept[:k], pixel_scale, values, names=shown)
        save_figure(fig, out_dir / "preview.png", dpi=110)
        log.info("wrote a preview of %d lenses to %s", k, out_dir / "preview.png")
    return out_dir


def task(cfg: DictConfig) -> None:
    """The Hydra task."""
    simulate(cfg)


if __name__ == "__main__":
    from lenscnn.cli import entry

    entry.simulate()
