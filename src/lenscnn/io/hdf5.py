"""HDF5 datasets of simulated lenses (h5py).

Layout: ``images`` ``(N, 1, H, W)`` float32 [counts/s per pixel]; ``params/<name>`` ``(N,)``
per parameter (names of :mod:`lenscnn.params`); file attributes ``pixel_scale`` [arcsec/pixel] and
``config`` (the simulator config as YAML) so a dataset documents itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from lenscnn.errors import UserError


def create_lens_dataset(
    path: str | Path,
    n: int,
    image_shape: tuple[int, int, int],
    param_names: list[str],
    pixel_scale: float,
    config_yaml: str,
) -> h5py.File:
    """Open a new file for ``n`` lenses (filled batch by batch with :func:`write_batch`)."""
    f = h5py.File(path, "w")  # the caller closes it (h5py files are context managers)
    f.attrs["pixel_scale"] = pixel_scale
    f.attrs["config"] = config_yaml
    f.create_dataset("images", shape=(n, *image_shape), dtype="float32", chunks=(1, *image_shape))
    group = f.create_group("params")
    for name in param_names:
        group.create_dataset(name, shape=(n,), dtype="float64")
    return f


def write_batch(f: h5py.File, start: int, images: np.ndarray, params: Mapping[str, np.ndarray]) -> None:
    """Write lenses ``start .. start + len(images)``."""
    stop = start + images.shape[0]
    f["images"][start:stop] = images
    for name, values in params.items():
        f["params"][name][start:stop] = values


def read_lens_dataset(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """``(images, params, attrs)`` of a file written by ``lenscnn-simulate``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"HDF5 file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            if "images" not in f or "params" not in f:
                raise UserError(
                    f"{path}: not a lenscnn dataset (needs 'images' and 'params'); write it with lenscnn-simulate"
                )
            images = f["images"][()]
            params = {name: ds[()] for name, ds in f["params"].items()}
            attrs = dict(f.attrs)
    except OSError as exc:
        raise UserError(f"{path}: not a readable HDF5 file ({exc})") from None
    return images, params, attrs
