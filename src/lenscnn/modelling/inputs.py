"""The inputs of a lens-model fit: the images (prepared on the instrument's grid as for the network,
with a noise map and a mask) and the network's predictions for them, matched by image."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lenscnn.data.streams import shard_bounds
from lenscnn.errors import UserError
from lenscnn.io.cutouts import Cutout, find_inputs
from lenscnn.io.predictions import predictions_file, read_table
from lenscnn.modelling.field import FitField
from lenscnn.modelling.kwargs import pixel_psf
from lenscnn.modelling.pixels import psf_border
from lenscnn.params import LENS
from lenscnn.preparation.bands import band_hdus
from lenscnn.preparation.images import PreparedImage, prepared_images
from lenscnn.preparation.pipeline import Preparation, grid_geometry, model_pixels
from lenscnn.preparation.psf import kernel_at_scale
from lenscnn.sim import Instrument

log = logging.getLogger(__name__)

#: Columns of ``predictions.csv`` that hold text, not numbers.
TEXT_COLUMNS = ("image", "status", "flags")


def image_key(label: str) -> tuple[str, str]:
    """An image label (``path`` or ``path[k]``) as ``(resolved path, index)``, to match predictions."""
    path, _, index = label.partition("[")
    return str(Path(path).expanduser().resolve()), index.rstrip("]")


def read_predictions(path: str) -> dict[tuple[str, str], dict[str, float]]:
    """The rows of a ``predictions.csv`` (or of the one in a ``lenscnn-predict`` run directory) by image."""
    file = predictions_file(path)
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


@dataclass
class FitImage:
    """One image to fit, prepared on the instrument's grid as for the network (sky subtracted, cosmic rays
    masked, resampled): its ``label`` (``file`` or ``file[k]``); ``data`` and ``noise`` (its rms per pixel,
    ``None``: the instrument's background and shot noise) [counts/s/px], ``mask`` (True: a pixel to fit;
    ``None``: every pixel), the ``sky`` level subtracted [input units] and ``psf``, the kernel on the
    instrument's pixels when the image's file carries its PSF (``psf=auto`` or an HDU); ``exposure_time``
    [s] of its shot noise (``None``: none) and whether it was ``estimated`` from the image
    (``exposure_time=estimate``); ``shift`` [arcsec], ``(x, y)`` of the network's grid centre on this image's
    grid (a fit field other than the network's: :class:`FieldPlan`); or the ``error`` that stopped it (no
    pixel scale, an unreadable file, a bad noise map...)."""

    label: str
    data: np.ndarray | None = None
    noise: np.ndarray | None = None
    mask: np.ndarray | None = None
    sky: float | None = None
    psf: np.ndarray | None = None
    exposure_time: float | None = None
    estimated: bool = False
    shift: tuple[float, float] = (0.0, 0.0)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class FieldPlan:
    """The fit's grid of each image, chosen for its lens (:meth:`FitField.size`): called with a cutout as read, it
    returns the grid ``(height, width)`` on the instrument's pixels to prepare it on, and records in ``shifts``
    (by label) where the network's grid centre lies on it, ``(x, y)`` [arcsec].

    Attributes:
        settings: the ``field`` settings (``reach=None``: the network's grid for every image).
        predictions: the network's values by image (:func:`read_predictions`): ``theta_E``, ``center_x``,
            ``center_y`` [arcsec] size the field.
        instrument: the network's pixel grid.
        preparation: the preparation settings (a pixel scale for inputs without one; ``psf_fwhm``).
        kernel: the run's PSF kernel on the instrument's pixels; an image whose file carries its own is fitted
            with that one, whose border then counts.
    """

    settings: FitField
    predictions: Mapping[tuple[str, str], Mapping[str, float]]
    instrument: Instrument
    preparation: Preparation
    kernel: np.ndarray | None
    shifts: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __call__(self, cutout: Cutout) -> tuple[int, int]:
        network = tuple(self.instrument.image_size)
        values = self.predictions.get(image_key(cutout.label))
        scale = cutout.pixel_scale or self.preparation.pixel_scale
        if self.settings.reach is None or values is None or scale is None:
            return network
        pixel_scale = self.instrument.pixel_scale
        kernel = self.kernel
        if cutout.psf is not None and self.preparation.psf_fwhm is None:
            try:
                kernel = fit_kernel(*cutout.psf, self.instrument)
            except UserError:
                return network  # the fit reports the unusable PSF (fit_image)
        border = psf_border(pixel_psf(kernel))
        shape = cutout.image.shape
        largest = model_pixels(shape, scale, pixel_scale)
        size = self.settings.size(values, pixel_scale, border, network, largest)
        if min(largest[0] - network[0], largest[1] - network[1]) >= 0:
            row, col = grid_geometry(shape, scale, pixel_scale, network).centre()
            own_row, own_col = grid_geometry(shape, scale, pixel_scale, size).centre()
            self.shifts[cutout.label] = ((col - own_col) * scale, (row - own_row) * scale)
        return size


def load_images(
    inputs: str, instrument: Instrument, settings: Preparation, shard: Any = None, plan: FieldPlan | None = None
) -> list[FitImage]:
    """Every input image of shard ``"i/N"`` (a contiguous block of the sorted input files) prepared on the
    instrument's grid (:func:`lenscnn.preparation.images.prepared_images`, in input units: a fit models the
    counts as they are), of the size ``plan`` chooses for its lens (``None``: the instrument's). Only the
    shard's files are read."""
    files = find_inputs(str(inputs))
    shard = parse_shard(shard)
    if shard is not None:
        start, stop = shard_bounds(len(files), *shard)
        files = files[start:stop]
    size = instrument.image_size if plan is None else plan
    per_file = first_band_hdus(files, instrument, settings)
    images = prepared_images(files, settings, size, instrument.pixel_scale, per_file=per_file, require_pixel_scale=True)
    items = [fit_image(image, instrument, settings) for image in images]
    for item in items:
        item.shift = (plan.shifts if plan is not None else {}).get(item.label, (0.0, 0.0))
    return items


def first_band_hdus(files: list[Path], instrument: Instrument, settings: Preparation) -> dict[Path, Preparation]:
    """A fit models one band: for predictions of a multi-band model and ``hdu=auto``, each multi-extension file is
    read at its HDU of the model's first band (:func:`lenscnn.preparation.bands.band_hdus`: Euclid's ``VIS_FLUX``),
    said in a log line; files without one are read as ``hdu=auto`` finds them."""
    if len(instrument.bands) < 2 or settings.hdu != "auto":
        return {}
    band = instrument.band_names[0]
    per_file = {}
    for path in files:
        try:
            per_file[path] = replace(settings, hdu=band_hdus(path, [band])[0])
        except UserError:
            continue
    log.info(
        "fitting one band, the model's first (%s): its HDU in each file (%d of %d files hold one; the others as "
        "hdu=auto finds them); hdu= names another",
        band,
        len(per_file),
        len(files),
    )
    return per_file


def fit_kernel(kernel: np.ndarray, scale: float, instrument: Instrument) -> np.ndarray:
    """A PSF kernel of ``scale`` arcsec/px on the instrument's pixels, at most the image's size
    (:func:`lenscnn.preparation.psf.kernel_at_scale`): what a fit convolves with."""
    return kernel_at_scale(kernel, scale, instrument.pixel_scale, (min(instrument.image_size) - 1) // 2)


def fit_image(image: PreparedImage, instrument: Instrument, settings: Preparation) -> FitImage:
    """A prepared image as a fit sees it: masked pixels left out (their noise at the median, so they
    neither count nor break lenstronomy), the file's own PSF on the instrument's pixels unless
    ``psf_fwhm`` names one for every image."""
    if not image.ok:
        return FitImage(image.label, error=image.error)
    prepared = image.prepared
    use = ~prepared.mask
    noise = np.sqrt(prepared.variance)
    noise[~use] = np.median(noise[use]) if use.any() else 1.0  # masked pixels are left out of the fit
    data = prepared.image[0].numpy().astype(float)
    record = prepared.record
    item = FitImage(
        image.label,
        data,
        noise,
        use,
        record["sky"],
        exposure_time=record["exposure_time"],
        estimated=record["exposure_time_estimated"],
    )
    if image.psf is not None and settings.psf_fwhm is None:
        try:
            item.psf = fit_kernel(*image.psf, instrument)
        except UserError as exc:
            return FitImage(image.label, error=f"its PSF: {exc}")
    return item
