"""The inputs of a lens-model fit: the images (prepared on the instrument's grid, with a noise map
from a weight HDU) and the network's predictions for them, matched by image."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from lenscnn.data.streams import shard_bounds
from lenscnn.errors import UserError
from lenscnn.io.cutouts import Cutout, find_inputs, prepare, read_cutouts
from lenscnn.params import LENS
from lenscnn.sim import Instrument


def image_key(label: str) -> tuple[str, str]:
    """An image label (``path`` or ``path[k]``) as ``(resolved path, index)``, to match predictions."""
    path, _, index = label.partition("[")
    return str(Path(path).expanduser().resolve()), index.rstrip("]")


def read_predictions(path: str) -> dict[tuple[str, str], dict[str, float]]:
    """The rows of a ``predictions.csv`` (or of the one in a ``lenscnn-predict`` run directory) by image."""
    file = Path(path).expanduser()
    file = file / "predictions.csv" if file.is_dir() else file
    if not file.is_file():
        raise UserError(f"predictions={path}: no predictions.csv there; run lenscnn-predict first")
    with open(file, newline="") as f:
        reader = csv.DictReader(f)
        missing = [n for n in ("image", *LENS) if n not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"predictions={file}: lacks the columns {missing}; is it a lenscnn-predict output?")
        rows = {}
        for row in reader:
            values = {k: float(v) for k, v in row.items() if k != "image" and v not in ("", None)}
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


def load_images(
    inputs: str,
    instrument: Instrument,
    *,
    hdu: int | str = 0,
    weight_hdu: int | str | None = None,
    pixel_scale: float | None = None,
    fill_nan: float | None = None,
    shard: Any = None,
) -> list[dict[str, Any]]:
    """One task per input image of shard ``"i/N"`` (a contiguous block of the sorted input files):
    ``{"image": label, "data": (H, W), "noise": (H, W) or None}`` on the instrument's grid, or
    ``{"image": label, "error": reason}`` (no pixel scale, another pixel scale, NaNs, a missing
    weight map...). ``pixel_scale`` is used for images whose header gives none. Only the shard's
    files are read."""
    files = find_inputs(str(inputs))
    shard = parse_shard(shard)
    if shard is not None:
        start, stop = shard_bounds(len(files), *shard)
        files = files[start:stop]
    items = []
    for path in files:
        try:
            cutouts = list(read_cutouts(path, hdu))
        except UserError as exc:
            items.append({"image": str(path), "error": str(exc)})
            continue
        weights: list[Any] = [None] * len(cutouts)
        if weight_hdu is not None:
            try:
                weights = [c.image for c in read_cutouts(path, weight_hdu)]
                if len(weights) != len(cutouts):
                    raise UserError(f"{len(weights)} weight maps for {len(cutouts)} images")
            except UserError as exc:
                weights = [f"weight_hdu={weight_hdu}: {exc}"] * len(cutouts)
        items += [
            _image_task(cutout, weight, instrument, pixel_scale, fill_nan)
            for cutout, weight in zip(cutouts, weights, strict=True)
        ]
    return items


def _image_task(
    cutout: Cutout,
    weight: np.ndarray | str | None,
    instrument: Instrument,
    pixel_scale: float | None,
    fill_nan: float | None,
) -> dict[str, Any]:
    if isinstance(weight, str):
        return {"image": cutout.label, "error": weight}
    scale = cutout.pixel_scale if cutout.pixel_scale is not None else pixel_scale
    if scale is None:
        return {
            "image": cutout.label,
            "error": "no pixel scale (no WCS or PIXSCALE in its header); give pixel_scale=<arcsec/px>",
        }
    cutout.pixel_scale = float(scale)
    try:
        prepared = prepare(cutout, instrument.image_size, instrument.pixel_scale, False, fill_nan)
        noise = None
        if weight is not None:
            weight = np.where(np.isfinite(weight) & (weight > 0), weight, 0.0)
            sigma = 1.0 / np.sqrt(np.maximum(weight, 1e-30))  # zero weight: a pixel that does not count
            noise_cutout = type(cutout)(cutout.label, sigma, cutout.pixel_scale, None)
            noise = prepare(noise_cutout, instrument.image_size, instrument.pixel_scale).image[0].numpy().astype(float)
    except UserError as exc:
        return {"image": cutout.label, "error": str(exc)}
    return {"image": cutout.label, "data": prepared.image[0].numpy().astype(float), "noise": noise}
