"""A fixed set of simulated lenses written to files: the first ``n`` lenses of a seed's lens stream.

:func:`write_simulated_set` renders them batch by batch with a :class:`~lenscnn.sim.simulator.Simulator`
and writes ``lenses.h5`` (:mod:`lenscnn.io.hdf5`, streamed batch by batch) and/or ``lenses.fits``
(:mod:`lenscnn.io.fits`, written whole from memory); it returns a :class:`SimulatedSet`. Lens ``i`` of
a seed is the same whatever ``n``, ``batch_size`` or device (see :class:`~lenscnn.sim.lens_streams.LensStream`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lenscnn.io.atomic import atomic_path
from lenscnn.io.fits import write_lens_dataset_fits
from lenscnn.io.hdf5 import create_lens_dataset, write_batch
from lenscnn.progress import progress

if TYPE_CHECKING:
    from lenscnn.sim.simulator import Simulator

#: The file formats :func:`write_simulated_set` writes, and the name of the file of each.
FILE_NAMES = {"hdf5": "lenses.h5", "fits": "lenses.fits"}
FORMATS = tuple(FILE_NAMES)


@dataclass(frozen=True, eq=False)
class SimulatedSet:
    """What :func:`write_simulated_set` wrote.

    Attributes:
        files: the files written, ``{format: path}`` in the order written (``hdf5`` before ``fits``).
        names: the parameters of every lens (:attr:`Simulator.drawn_names`), in that order.
        images: ``(K, 1, H, W)`` float32 [counts/s per pixel], the first ``K`` lenses kept in memory
            (all ``n`` when FITS is written, else ``min(keep, n)``).
        params: ``{name: (n,) float64}``, the true parameters of all ``n`` lenses.
        pixel_scale: arcsec per image pixel.
    """

    files: dict[str, Path]
    names: list[str]
    images: np.ndarray
    params: dict[str, np.ndarray]
    pixel_scale: float


def write_simulated_set(
    simulator: Simulator,
    n: int,
    out_dir: str | Path,
    *,
    seed: int,
    formats: Sequence[str] = ("hdf5",),
    batch_size: int = 256,
    noise: bool = True,
    split: str = "train",
    keep: int = 0,
    config_yaml: str = "",
) -> SimulatedSet:
    """Render the first ``n`` lenses of ``seed``'s lens stream and write them into ``out_dir``.

    Lenses are drawn ``batch_size`` at a time (:meth:`Simulator.sample` on one
    :meth:`Simulator.make_generator` stream, with ``noise`` and the galaxy ``split`` of galaxy
    sources); ``batch_size`` changes no lens. Each file goes through
    :func:`lenscnn.io.atomic.atomic_path`: a failure leaves no half-written file (``lenses.h5`` is
    complete before ``lenses.fits`` is written). Both record the pixel scale [arcsec/pixel],
    ``config_yaml`` (the simulator config as YAML) and the lens model's profile lists.

    Args:
        simulator: renders the lenses on its device.
        n: number of lenses, >= 1.
        out_dir: an existing directory; ``lenses.h5`` and/or ``lenses.fits`` are written there.
        seed: the lens stream; same seed, same lenses.
        formats: any of :data:`FORMATS` (a ``ValueError`` for others).
        batch_size: lenses rendered per batch (memory), >= 1.
        noise: add the instrument's noise.
        split: which galaxies of a galaxy-source library (``train``, ``val``, ``test``).
        keep: how many of the first lenses' images to return (all ``n`` anyway when FITS is written).
        config_yaml: the simulator config, stored in the files.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; use any of {list(FORMATS)}")
    out_dir = Path(out_dir)
    stream = simulator.make_generator(seed)  # each batch continues the seed's lens stream
    names = simulator.drawn_names
    kwargs_model = simulator.lens_model.kwargs_model()
    pixel_scale = simulator.instrument.pixel_scale
    bands = simulator.instrument.band_names if len(simulator.instrument.bands) > 1 else None
    files = {fmt: out_dir / FILE_NAMES[fmt] for fmt in FORMATS if fmt in formats}

    kept = n if "fits" in files else min(keep, n)  # FITS is written whole, from memory
    images_kept = np.empty((kept, *simulator.image_shape), dtype=np.float32)
    params_all = {name: np.empty(n) for name in names}
    with contextlib.ExitStack() as stack:
        h5 = None
        if "hdf5" in files:
            tmp = stack.enter_context(atomic_path(files["hdf5"]))
            h5 = stack.enter_context(
                create_lens_dataset(tmp, n, simulator.image_shape, names, pixel_scale, config_yaml, kwargs_model, bands)
            )
        tracker = stack.enter_context(progress("simulating", total=n, unit="lenses"))
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            images, params = simulator.sample(count, stream, noise=noise, split=split)
            images_np = images.cpu().numpy()
            params_np = {k: params[k].double().cpu().numpy() for k in names}
            if start < kept:
                images_kept[start : min(start + count, kept)] = images_np[: kept - start]
            for k in names:
                params_all[k][start : start + count] = params_np[k]
            if h5 is not None:
                write_batch(h5, start, images_np, params_np)
            tracker.advance(count)
    if "fits" in files:
        with atomic_path(files["fits"]) as tmp:
            write_lens_dataset_fits(tmp, images_kept, params_all, pixel_scale, config_yaml, kwargs_model, bands)
    return SimulatedSet(files=files, names=names, images=images_kept, params=params_all, pixel_scale=pixel_scale)
