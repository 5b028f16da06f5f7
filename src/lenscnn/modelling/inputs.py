"""The inputs of a lens-model fit: the images (prepared on the instrument's grid as for the network,
with a noise map and a mask) and the network's predictions for them, matched by image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lenscnn.data.streams import shard_bounds
from lenscnn.errors import UserError
from lenscnn.io.cutouts import Cutout, find_inputs
from lenscnn.io.predictions import read_table
from lenscnn.io.run_dir import RunDir
from lenscnn.params import LENS
from lenscnn.preparation.pipeline import Preparation, prepare, read_file
from lenscnn.preparation.psf import kernel_at_scale
from lenscnn.sim import Instrument

#: Columns of ``predictions.csv`` that hold text, not numbers.
TEXT_COLUMNS = ("image", "status", "flags")


def image_key(label: str) -> tuple[str, str]:
    """An image label (``path`` or ``path[k]``) as ``(resolved path, index)``, to match predictions."""
    path, _, index = label.partition("[")
    return str(Path(path).expanduser().resolve()), index.rstrip("]")


def read_predictions(path: str) -> dict[tuple[str, str], dict[str, float]]:
    """The rows of a ``predictions.csv`` (or of the one in a ``lenscnn-predict`` run directory) by image."""
    file = Path(path).expanduser()
    file = RunDir(file).predictions if file.is_dir() else file
    if not file.is_file():
        raise UserError(f"predictions={path}: no predictions.csv there; run lenscnn-predict first")
    table = read_table(file)
    missing = [n for n in ("image", *LENS) if n not in table.columns]
    if missing:
        raise UserError(f"predictions={file}: lacks the columns {missing}; is it a lenscnn-predict output?")
    rows = {}
    for row in table.rows:
        if not row.get("status", "ok").startswith("ok"):
            continue  # an image predict could not read: nothing to start from
        values = {k: float(v) for k, v in row.items() if k not in TEXT_COLUMNS and v not in ("", None)}
        rows[image_key(row["image"])] = values
    return rows


def parse_shard(shard: Any) -> tuple[int, int] | None:
    """``"i/N"`` as ``(i, N)`` with ``0 <= i < N`` (``None`` when not sharded)."""
    if shard in (None, ""):
        return None
    index, _, count = str(shard).partition("/")
    if not (index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count):
        raise UserError(f"shard={shard!r}: give i/N with 0 <= i < N, e.g. shard=0/4")
    return int(index), int(count)


def load_images(inputs: str, instrument: Instrument, settings: Preparation, shard: Any = None) -> list[dict[str, Any]]:
    """One task per input image of shard ``"i/N"`` (a contiguous block of the sorted input files),
    prepared on the instrument's grid as for the network (:mod:`lenscnn.preparation.pipeline`: sky
    subtracted, cosmic rays masked, resampled): ``{"image": label, "data": (H, W), "noise": (H, W) rms
    [counts/s/px], "mask": (H, W) bool (True: a pixel to fit), "sky": the level subtracted}`` (and "psf": the
    kernel on the instrument's pixels when the image's file carries its PSF, ``psf=auto`` or an HDU), or
    ``{"image": label, "error": reason}`` (no pixel scale, an unreadable file, a bad noise map...).
    Only the shard's files are read."""
    files = find_inputs(str(inputs))
    shard = parse_shard(shard)
    if shard is not None:
        start, stop = shard_bounds(len(files), *shard)
        files = files[start:stop]
    items = []
    for path in files:
        try:
            images = list(read_file(path, settings))
        except UserError as exc:
            items.append({"image": str(path), "error": str(exc)})
            continue
        items += [_image_task(cutout, variance, flagged, instrument, settings) for cutout, variance, flagged in images]
    return items


def fit_kernel(kernel: np.ndarray, scale: float, instrument: Instrument) -> np.ndarray:
    """A PSF kernel of ``scale`` arcsec/px on the instrument's pixels, at most the image's size
    (:func:`lenscnn.preparation.psf.kernel_at_scale`): what a fit convolves with."""
    return kernel_at_scale(kernel, scale, instrument.pixel_scale, (min(instrument.image_size) - 1) // 2)


def _image_task(
    cutout: Cutout,
    variance: np.ndarray | None,
    flagged: np.ndarray | None,
    instrument: Instrument,
    settings: Preparation,
) -> dict[str, Any]:
    if cutout.pixel_scale is None and settings.pixel_scale is None:
        return {
            "image": cutout.label,
            "error": "no pixel scale (no WCS or PIXSCALE in its header); give pixel_scale=<arcsec/px>",
        }
    try:
        prepared = prepare(cutout, settings, instrument.image_size, instrument.pixel_scale, variance, flagged)
    except UserError as exc:
        return {"image": cutout.label, "error": str(exc)}
    use = ~prepared.mask
    noise = np.sqrt(prepared.variance)
    noise[~use] = np.median(noise[use]) if use.any() else 1.0  # masked pixels are left out of the fit
    item = {
        "image": cutout.label,
        "data": prepared.image[0].numpy().astype(float),
        "noise": noise,
        "mask": use,
        "sky": prepared.record["sky"],
    }
    if cutout.psf is not None and settings.psf_fwhm is None:
        try:
            item["psf"] = fit_kernel(*cutout.psf, instrument)
        except UserError as exc:
            return {"image": cutout.label, "error": f"its PSF: {exc}"}
    return item
