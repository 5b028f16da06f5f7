"""HDF5 datasets of simulated lenses (h5py).

Layout: ``images`` ``(N, 1, H, W)`` float32 [counts/s per pixel]; ``params/<name>`` ``(N,)``
per parameter (names of :mod:`lenscnn.params`); file attributes ``pixel_scale`` [arcsec/pixel] and
``config`` (the simulator config as YAML, whose prior is the lens model) so a dataset documents
itself, and ``kwargs_model`` (lenstronomy's profile lists of that lens model, JSON).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from lenscnn.errors import UserError, one_line


def create_lens_dataset(
    path: str | Path,
    n: int,
    image_shape: tuple[int, int, int],
    param_names: list[str],
    pixel_scale: float,
    config_yaml: str,
    kwargs_model: Mapping[str, list[str]] | None = None,
    bands: Sequence[str] | None = None,
) -> h5py.File:
    """Open a new file for ``n`` lenses of ``image_shape`` ``(C, H, W)`` (filled batch by batch with
    :func:`write_batch`); ``kwargs_model`` (lenstronomy's profile lists of the lens model) and the ``C`` band
    names ``bands`` (a multi-band instrument's) are stored as JSON."""
    f = h5py.File(path, "w")  # the caller closes it (h5py files are context managers)
    f.attrs["pixel_scale"] = pixel_scale
    f.attrs["config"] = config_yaml
    if kwargs_model is not None:
        f.attrs["kwargs_model"] = json.dumps(dict(kwargs_model))
    if bands is not None:
        f.attrs["bands"] = json.dumps(list(bands))
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
    """``(images (N, C, H, W) float32, params {name: (N,) float64}, attrs)`` of a file written by
    ``lenscnn-simulate``, checked: one number per lens and parameter, ``attrs["pixel_scale"]`` a
    positive float (if present), ``attrs["config"]`` text. Anything else is a one-line :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"HDF5 file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            images = member(f, "images", h5py.Dataset, path)[()]
            group = member(f, "params", h5py.Group, path)
            params = {name: member(group, name, h5py.Dataset, path)[()] for name in group}
            attrs = {name: f.attrs[name] for name in f.attrs}
    except UserError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError, ... on broken files and links
        raise UserError(
            f"{path}: not a readable HDF5 file ({one_line(exc)}); write it again with lenscnn-simulate"
        ) from None
    images = lens_images(images, path)
    params = {name: lens_values(values, name, len(images), path) for name, values in params.items()}
    return images, params, {**attrs, **dataset_attrs(attrs, path)}


def member(parent: h5py.Group, name: str, kind: type, path: Path) -> h5py.Dataset | h5py.Group:
    """``parent[name]``, which must be a ``kind`` (dataset or group) of a lenscnn dataset."""
    where = f"{parent.name.rstrip('/')}/{name}".lstrip("/")
    try:
        obj = parent.get(name)
    except Exception as exc:  # a soft link in a loop, an external link to a missing file, ...
        raise UserError(
            f"{path}: '{where}' cannot be read ({one_line(exc)}); write the file with lenscnn-simulate"
        ) from None
    if obj is None:
        raise UserError(
            f"{path}: not a lenscnn dataset ('{where}' is missing or a broken link; it needs images (N, 1, H, W) "
            "and params/<name> (N,)); write it with lenscnn-simulate"
        )
    if not isinstance(obj, kind):
        what = "group" if kind is h5py.Group else "dataset"
        raise UserError(f"{path}: '{where}' must be a {what} (layout: images (N, 1, H, W), params/<name> (N,))")
    return obj


def lens_images(images: np.ndarray, path: Path) -> np.ndarray:
    """``images`` as ``(N, C, H, W)`` float32, a channel per band (an ``(N, H, W)`` stack gains its channel axis)."""
    if images.dtype.kind not in "iuf":
        raise UserError(f"{path}: 'images' holds {images.dtype} values; expected float32 pixels (counts/s)")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or min(images.shape, default=0) < 1:
        raise UserError(f"{path}: 'images' has shape {images.shape}; expected (N, C, H, W) with N, C, H, W >= 1")
    with np.errstate(over="ignore"):
        return images.astype(np.float32, copy=False)


def lens_values(values: np.ndarray, name: str, n: int, path: Path) -> np.ndarray:
    """Parameter ``name`` as ``(n,)`` float64: one number per lens."""
    if values.dtype.kind not in "iuf" or values.shape != (n,):
        raise UserError(
            f"{path}: 'params/{name}' holds {values.dtype} values of shape {values.shape}; "
            f"expected one number per image, shape ({n},) for its {n} images"
        )
    return values.astype(np.float64)


def dataset_attrs(attrs: Mapping, path: Path) -> dict:
    """``pixel_scale`` (if present) as a positive float and ``config`` as text; refuses others."""
    out: dict = {"config": attrs.get("config", "")}
    if isinstance(out["config"], bytes):
        out["config"] = out["config"].decode("utf-8", errors="replace")
    if not isinstance(out["config"], str):
        raise UserError(f"{path}: the 'config' attribute must be the simulator config as YAML text")
    if "pixel_scale" in attrs:
        value = attrs["pixel_scale"]
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
        if not (number and np.isfinite(value) and value > 0):
            raise UserError(
                f"{path}: the 'pixel_scale' attribute is {value!r}; it must be a positive number of arcsec/pixel"
            )
        out["pixel_scale"] = float(value)
    return out
