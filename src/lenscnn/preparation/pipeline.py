"""Real cutouts as obtained, prepared the way the networks were trained: one pipeline for predict,
refine and eval.

Per image, on the input's own pixels first:

1. **Masks**: NaN/infinite pixels, pixels a mask HDU flags (non-zero), pixels without data in
   the noise map (zero inverse variance), and regions of at least :data:`ZERO_AREA` connected pixels
   set to exactly 0 (the masked or unobserved parts of released cutouts, not a noiseless sky).
2. **Sky**: ``sky=estimate`` (default) subtracts :func:`lenscnn.preparation.sky.estimate_sky`
   (source-masked, sigma-clipped median of the cutout's outskirts); ``sky=none`` subtracts
   nothing; a number subtracts that level [input units per input pixel].
3. **Noise**: the variance per pixel from a noise HDU (:mod:`lenscnn.preparation.noise`), else the
   background rms of step 2 squared plus, when an exposure time is known (``exposure_time`` or the
   header's ``EXPTIME``), the source's shot noise ``max(image, 0) / exposure_time``; with
   ``exposure_time=estimate`` an image that says neither has it estimated from its own noise against its
   flux (:func:`lenscnn.preparation.noise.shot_noise_exposure`: an effective gain, for cutouts as archives
   deliver them).
4. **Cosmic rays** (``cosmic_rays=auto``, the default: unless the header says the image combines several
   exposures, ``NCOMBINE`` or ``NDRIZIM`` > 1, whose combination rejected them; ``true``: always): detected
   with L.A.Cosmic
   (:func:`lenscnn.preparation.cosmic_rays.detect_cosmic_rays`) against that variance, masked, and
   cleaned: replaced by the Gaussian-weighted mean of the good pixels around them (:func:`filled`,
   as L.A.Cosmic cleans), so a detection on a sharp knot of an arc only smooths it (filling with 0
   punched holes in arcs: +35% theta_E RMSE on clean test lenses).
5. **Resampling** to the model's pixel scale when it differs by more than 1%: flux-conserving
   exact pixel overlap (:mod:`lenscnn.preparation.resample`), the variance propagated; masked input
   pixels are first filled from their neighbours, and an output pixel more than half of whose area
   they cover is masked.
6. **Crop** to the model's field around the cutout's centre; pixels without data (NaN, flagged, zero
   weight) get ``fill_nan`` (0: as the networks were trained, ``observation.artefacts.fill``).
7. **Units** (``units=noise``, the default, when the caller gives the model's noise level): the image is
   multiplied by ``flux_scale`` = the model's training background rms / the cutout's depth (both per model
   pixel; the depth of a resampled cutout is the rms of white noise of the same noise per unit area,
   ``rms * pixel_scale / scale``, larger than its pixels' rms, which the resampling's correlations lower), so the
   network sees the image in units of its own noise, as a training image of the same signal-to-noise: the
   answer does not depend on the flux unit (counts/s, electrons, MJy/sr, microjansky) nor on the zero point.
   ``units=counts`` takes the pixels as the model's counts/s as they are.

What was done is recorded per image (:attr:`Prepared.record`): the sky level, the background rms
of a model pixel (``noise_rms``: step 2's rms through the resampling, without the shot noise; ``noise_depth``: the
depth of step 7),
the factor to the model's units (``flux_scale``), the masked fraction, the cosmic-ray pixels, the
input's pixel scale (and whether it was assumed) and the PSF FWHM when known (``psf_fwhm``: a
``psf`` file with a pixel scale, a PSF HDU of the file, ``psf_fwhm``, or a ``PSF_FWHM`` header keyword)
for the domain flags (:mod:`lenscnn.preparation.domain`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from astropy.io import fits
from scipy import ndimage

from lenscnn.errors import UserError, one_line
from lenscnn.io.cutouts import (
    FITS_SUFFIXES,
    HDF5_SUFFIXES,
    Cutout,
    fits_cutouts,
    pixel_scale_from_header,
    read_cutouts,
)
from lenscnn.io.fits import image_hdus, image_in, is_image, open_fits, select_hdu
from lenscnn.preparation import noise as noise_maps
from lenscnn.preparation.cosmic_rays import detect_cosmic_rays
from lenscnn.preparation.psf import psf_fwhm, read_psf, read_psf_hdu
from lenscnn.preparation.resample import output_shape, resample_flux, resample_mask, resample_variance
from lenscnn.preparation.sky import estimate_sky

#: Largest relative difference between a cutout's and the model's pixel scale that is accepted as is.
PIXEL_SCALE_TOLERANCE = 0.01
#: A resampled pixel is masked when more than this fraction of its area comes from masked input pixels.
MASKED_AREA = 0.5
#: Header keywords giving the PSF FWHM [arcsec] of an image.
PSF_KEYWORDS = ("PSF_FWHM", "PSFFWHM")
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Connected pixels at exactly 0 from which on they are a masked region, not sky (a noisy sky is never
#: exactly 0 in more than a few pixels at once).
ZERO_AREA = 16
#: Header keywords that count the exposures combined into an image (HST: ``NCOMBINE``, drizzle's ``NDRIZIM``):
#: above 1, the combination has rejected cosmic rays and ``cosmic_rays=auto`` does not look for them.
COMBINED_KEYWORDS = ("NCOMBINE", "NDRIZIM")
#: ``units``: rescale by the image's own noise, or take the pixels as counts/s.
UNITS = ("noise", "counts")


def _number(value: Any, name: str, positive: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        kind = "a positive number" if positive else "a finite number"
        raise UserError(f"{name}={value!r}: give {kind}")
    return float(value)


@dataclass(frozen=True)
class Preparation:
    """The preparation settings (the ``preparation`` keys of predict, refine and eval configs).

    Attributes:
        hdu: FITS HDU of the images (index or EXTNAME), or ``"auto"`` (:func:`lenscnn.io.fits.science_hdu`:
            ``SCI``, a ``<BAND>_FLUX``, else the first image HDU).
        sky: ``"estimate"``, ``"none"`` or a level [input units per pixel] to subtract.
        noise_hdu: ``"auto"`` (an HDU named WHT/IVM/ERR/RMS/VAR..., else none), ``None``, or an HDU.
        noise_kind: ``"auto"`` (from the HDU's name), ``inverse_variance``, ``rms`` or ``variance``.
        mask_hdu: HDU whose non-zero pixels are bad (e.g. a data-quality array), or ``None``.
        cosmic_rays: detect and mask cosmic rays: ``"auto"`` (unless the header says several exposures were
            combined: :data:`COMBINED_KEYWORDS`), ``True`` or ``False``.
        fill_nan: value of masked pixels after sky subtraction (the training convention: 0).
        resample: resample images whose pixel scale is > 1% off the model's (else refuse them).
        pixel_scale: arcsec/px of inputs with neither WCS nor PIXSCALE (``None``: the model's, flagged).
        psf: the inputs' PSF, to compare its FWHM with the model's (and for refine to fit with): ``"auto"``
            (each file's ``<BAND>_PSF`` or ``PSF`` HDU if it has one), an HDU of each file (``VIS_PSF``),
            a FITS file (with ``PIXSCALE`` or a WCS), or ``None``.
        psf_fwhm: the inputs' PSF FWHM [arcsec] (instead of ``psf``).
        exposure_time: [s], for the shot noise of the noise map (``None``: the header's ``EXPTIME``, else no
            shot noise; ``"estimate"``: the header's ``EXPTIME``, else estimated from the image).
        units: ``"noise"``: the image rescaled to the model's noise level (any flux unit; step 7 of the
            module docstring); ``"counts"``: taken as the model's counts/s.
    """

    hdu: int | str = "auto"
    sky: str | float = "estimate"
    noise_hdu: int | str | None = "auto"
    noise_kind: str = "auto"
    mask_hdu: int | str | None = None
    cosmic_rays: bool | str = "auto"
    fill_nan: float = 0.0
    resample: bool = True
    pixel_scale: float | None = None
    psf: str | None = "auto"
    psf_fwhm: float | None = None
    exposure_time: float | str | None = None
    units: str = "noise"
    psf_file_fwhm: float | None = field(default=None, init=False)  # [arcsec], of the ``psf`` file

    def __post_init__(self) -> None:
        if self.sky not in ("estimate", "none") and (type(self.sky) not in (int, float) or not math.isfinite(self.sky)):
            raise UserError(f"sky={self.sky!r}: give estimate, none or a level to subtract (a finite number)")
        noise_maps.check_kind(self.noise_kind)
        _number(self.fill_nan, "fill_nan")
        if abs(self.fill_nan) >= FLOAT32_MAX:
            raise UserError(f"fill_nan={self.fill_nan!r}: give a number within float32's range")
        if not isinstance(self.cosmic_rays, bool) and self.cosmic_rays != "auto":
            raise UserError(f"cosmic_rays={self.cosmic_rays!r}: give auto, true or false")
        if not isinstance(self.resample, bool):
            raise UserError(f"resample={self.resample!r}: give true or false")
        for name in ("pixel_scale", "psf_fwhm"):
            if getattr(self, name) is not None:
                _number(getattr(self, name), name, positive=True)
        if self.exposure_time not in (None, "estimate"):
            try:
                _number(self.exposure_time, "exposure_time", positive=True)
            except UserError:
                raise UserError(
                    f"exposure_time={self.exposure_time!r}: give seconds (a positive number), estimate or null"
                ) from None
        if self.units not in UNITS:
            raise UserError(f"units={self.units!r}: choose {' or '.join(UNITS)}")
        if self.psf_file is not None and self.psf_fwhm is not None:
            raise UserError("give psf=<file> or psf_fwhm=<arcsec>, not both")
        if self.psf_file is not None:
            object.__setattr__(self, "psf_file_fwhm", psf_fwhm(*read_psf(self.psf_file)))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Preparation:
        """The settings from an app's config (its keys named as the settings; others are ignored)."""
        keys = [f.name for f in fields(cls) if f.init]
        return cls(**{k: cfg[k] for k in keys if k in cfg})

    @property
    def psf_file(self) -> str | None:
        """The ``psf`` setting when it names a file (a path, or a name ending like a FITS file)."""
        if self.psf is None or self.psf == "auto":
            return None
        psf = str(self.psf)
        looks_like_file = "/" in psf or psf.lower().endswith(FITS_SUFFIXES) or Path(psf).expanduser().is_file()
        return psf if looks_like_file else None

    @property
    def psf_hdu(self) -> str | None:
        """The HDU of each input file that holds its PSF: ``"auto"``, a name, or ``None`` (none, or a file)."""
        return None if self.psf is None or self.psf_file is not None else str(self.psf)

    @property
    def given_psf_fwhm(self) -> float | None:
        """The inputs' PSF FWHM [arcsec] given by ``psf_fwhm`` or the ``psf`` file, else ``None``."""
        return self.psf_fwhm if self.psf_fwhm is not None else self.psf_file_fwhm


@dataclass
class Prepared:
    """A cutout shaped for the model.

    ``image (1, h, w)`` float32, sky-subtracted, masked pixels at ``fill_nan``; ``variance (h, w)``
    [(counts/s)^2 per model pixel, ``inf`` where masked] and ``mask (h, w)`` (True: masked) on the same
    grid; ``record``: what the preparation did (module docstring). Model-frame pixel ``p`` is input
    pixel ``(p + offset + 0.5) / zoom - 0.5`` per axis (``offset`` and ``zoom`` as (column, row))."""

    image: torch.Tensor
    variance: np.ndarray
    mask: np.ndarray
    offset: tuple[float, float]
    zoom: tuple[float, float]
    record: dict[str, Any]

    def to_input_pixels(self, col: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            (col + self.offset[0] + 0.5) / self.zoom[0] - 0.5,
            (row + self.offset[1] + 0.5) / self.zoom[1] - 0.5,
        )


def read_file(path: Path, settings: Preparation) -> Iterator[tuple[Cutout, np.ndarray | None, np.ndarray | None]]:
    """``(cutout, variance or None, flagged or None)`` of every image of a file: its noise map
    (``noise_hdu``), bad-pixel mask (``mask_hdu``) and PSF (``psf`` naming an HDU: ``Cutout.psf``) read
    beside it, in one opening of the file."""
    if path.name.lower().endswith(HDF5_SUFFIXES):
        yield from ((cutout, None, None) for cutout in read_cutouts(path, settings.hdu))
        return
    with open_fits(path) as hdul:
        images = read_hdus(hdul, path, settings)
    yield from images


def read_hdus(
    hdul: fits.HDUList, path: Path, settings: Preparation
) -> list[tuple[Cutout, np.ndarray | None, np.ndarray | None]]:
    """:func:`read_file` of the FITS file ``path`` already open as ``hdul`` (a multi-band lens reads each band's
    HDUs from the one opening of its file)."""
    cutouts = list(fits_cutouts(hdul, path, settings.hdu))
    shapes = [c.image.shape for c in cutouts]
    variances: list = [None] * len(cutouts)
    flags: list = [None] * len(cutouts)
    science = str(cutouts[0].header.get("EXTNAME", ""))
    if settings.noise_hdu is not None:
        noise = settings.noise_hdu, settings.noise_kind
        variances = noise_maps.variances_in(hdul, path, *noise, shapes, science) or variances
    if settings.psf_hdu is not None:
        scale = cutouts[0].pixel_scale or settings.pixel_scale
        psf = read_psf_hdu(hdul, path, settings.psf_hdu, science, scale)
        for cutout in cutouts:
            cutout.psf = psf
    if settings.mask_hdu is not None:
        flags = [m != 0 for m in read_planes(hdul, path, settings.mask_hdu, shapes)]
    return list(zip(cutouts, variances, flags, strict=True))


def read_planes(hdul: fits.HDUList, path: Path, hdu: int | str, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """The planes of an image HDU of the file ``path`` open as ``hdul``, one per image of ``shapes`` (which
    they must match)."""
    data, _ = image_in(hdul, path, hdu)
    planes = list(data.reshape(-1, *data.shape[-2:])) if data.ndim == 3 else [data]
    if len(planes) != len(shapes) or any(p.shape != s for p, s in zip(planes, shapes, strict=False)):
        raise UserError(f"{path}: HDU {hdu!r} has {data.shape}, not one plane per image of shape {shapes[0]}")
    return planes


def check_readable(path: Path, settings: Preparation) -> str | None:
    """Why ``path`` cannot be prepared, found from its headers alone (``None``: it looks fine): a file
    that is not FITS or is truncated, a missing HDU, an HDU without an image, a WCS that cannot be used."""
    if path.name.lower().endswith(HDF5_SUFFIXES):
        return None
    try:
        with open_fits(path) as hdul:
            selected = select_hdu(hdul, settings.hdu, path)
            if not is_image(selected) or selected.header.get("NAXIS", 0) < 2:
                found = image_hdus(hdul)
                return f"{path}: HDU {settings.hdu!r} holds no image; its image HDUs: {found}; choose one with hdu="
            pixel_scale_from_header(selected.header, str(path))  # a WCS that cannot be used
    except UserError as exc:
        return str(exc)
    except Exception as exc:  # astropy raises many types for a broken file
        return f"{path}: not a readable FITS file ({one_line(exc)})"
    return None


def prepare(
    cutout: Cutout,
    settings: Preparation,
    image_size: tuple[int, int],
    pixel_scale: float,
    variance: np.ndarray | None = None,
    flagged: np.ndarray | None = None,
    noise_rms: float | None = None,
) -> Prepared:
    """Prepare one cutout for a model reading ``image_size`` pixels of ``pixel_scale`` arcsec (the
    steps of the module docstring; ``noise_rms``: the model's background rms per pixel [counts/s], to
    which ``units=noise`` rescales the image, ``None``: the image stays in its own units); a
    :class:`UserError` naming the cutout says why an image cannot be."""
    try:
        return _prepare(cutout, settings, image_size, pixel_scale, variance, flagged, noise_rms)
    except UserError as exc:
        message = str(exc)
        raise UserError(message if cutout.label in message else f"{cutout.label}: {message}") from None


def _prepare(
    cutout: Cutout,
    settings: Preparation,
    image_size: tuple[int, int],
    pixel_scale: float,
    variance: np.ndarray | None,
    flagged: np.ndarray | None,
    noise_rms: float | None,
) -> Prepared:
    image = np.array(cutout.image, dtype=np.float64)
    if image.ndim != 2:
        raise UserError(f"{cutout.label}: expected a 2-D image, got shape {image.shape}")
    scale, assumed = cutout.pixel_scale, False
    if scale is None:
        scale, assumed = (settings.pixel_scale, False) if settings.pixel_scale is not None else (pixel_scale, True)
    scale = _number(scale, f"{cutout.label}: pixel scale", positive=True)
    resampling = abs(scale / pixel_scale - 1) > PIXEL_SCALE_TOLERANCE
    if resampling and not settings.resample:
        raise UserError(
            f'{cutout.label}: pixel scale {scale:.4g}"/px differs from the model\'s {pixel_scale:.4g}"/px '
            "by more than 1%; set resample=true to resample it"
        )
    height, width = model_pixels(image.shape, scale, pixel_scale)
    if height < image_size[0] or width < image_size[1]:
        raise UserError(
            f"{cutout.label}: {height}x{width} px at the model's pixel scale is smaller than the model's "
            f"{image_size[0]}x{image_size[1]} px; give a larger cutout"
        )
    # everything below sees the model's field only (sky, noise and cosmic rays as in the training images)
    # (zero regions are found on the whole image: one reaching into the field may be small inside it)
    where = grid_geometry(image.shape, scale, pixel_scale, image_size)
    field = where.field
    zeros = zero_regions(image)[field]
    image = image[field]
    variance = None if variance is None else variance[field]
    flagged = None if flagged is None else flagged[field]
    bad = ~np.isfinite(image) | (np.abs(image) >= FLOAT32_MAX) | zeros
    if flagged is not None:
        bad |= flagged
    if variance is not None:
        bad |= ~np.isfinite(variance)
    if bad.all():
        raise UserError(f"{cutout.label}: every pixel is NaN, infinite or flagged")
    image[bad] = 0.0
    sky = estimate_sky(image, bad)
    level = {"estimate": sky.level, "none": 0.0}.get(settings.sky, settings.sky)  # type: ignore[arg-type]
    image -= level
    image[bad] = 0.0
    exposure_time, estimated = None, False
    if variance is None:
        exposure_time, estimated = shot_noise_time(cutout, settings, image, ~bad, sky.rms)
        variance = np.full(image.shape, sky.rms**2)
        if exposure_time:
            variance = variance + np.maximum(image, 0.0) / exposure_time
    variance = np.where(bad, np.inf, variance)
    cosmic = np.zeros(image.shape, dtype=bool)
    if cosmic_rays_wanted(cutout, settings) and sky.rms > 0:
        cosmic = detect_cosmic_rays(image, np.where(bad, sky.rms**2, variance), bad) & ~bad
    cosmic_pixels = int(cosmic.sum())
    # cosmic rays are cleaned (filled from their neighbours), pixels without data filled after resampling
    image = filled(image, bad | cosmic)
    background_gain = np.ones(image.shape)
    if resampling:
        # the variance of a model pixel per unit variance of the input pixels it sums
        background_gain = resample_variance(np.ones(image.shape), scale, pixel_scale)
        variance = resample_variance(filled(variance, bad | cosmic), scale, pixel_scale)
        image, _ = resample_flux(image, scale, pixel_scale)
        bad = resample_mask(bad, scale, pixel_scale, threshold=MASKED_AREA)
        cosmic = resample_mask(cosmic, scale, pixel_scale, threshold=MASKED_AREA)
    crop = where.crop
    image, variance, bad, masked = image[crop], variance[crop], bad[crop], (bad | cosmic)[crop]
    # the background rms of a model pixel (a resampled pixel sums parts of ~(pixel_scale / scale)^2 input pixels, so
    # its noise is correlated with its neighbours'), and the depth units=noise matches: the rms of white noise with
    # the same noise per unit area (a sum over a region of many pixels), sky.rms * pixel_scale / scale
    background_rms = sky.rms * float(np.sqrt(background_gain[crop].mean()))
    depth_rms = sky.rms * pixel_scale / scale if resampling else background_rms
    flux_scale = to_model_units(noise_rms if settings.units == "noise" else None, depth_rms)
    image = np.where(bad, settings.fill_nan, image * flux_scale)
    variance = np.where(masked, np.inf, variance * flux_scale**2)
    record = {
        "sky": float(level),
        "sky_reliable": sky.reliable,
        "noise_rms": float(background_rms),
        "noise_depth": float(depth_rms),
        "flux_scale": float(flux_scale),
        "masked_fraction": float(masked.mean()),
        "cosmic_ray_pixels": cosmic_pixels,
        "input_pixel_scale": float(scale),
        "pixel_scale_assumed": assumed,
        "psf_fwhm": cutout_psf_fwhm(cutout, settings),
        "exposure_time": exposure_time,
        "exposure_time_estimated": estimated,
    }
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    return Prepared(tensor, variance, masked, where.offset, where.zoom, record)


@dataclass(frozen=True)
class Geometry:
    """Where a model's grid lies on a cutout's pixels: the input block ``field`` that is prepared (resampled
    with ``zoom``, output over input pixels per axis as (columns, rows)), and the ``crop`` of the resampled
    block that is the model's grid."""

    field: tuple[slice, slice]
    crop: tuple[slice, slice]
    zoom: tuple[float, float]

    @property
    def offset(self) -> tuple[float, float]:
        """(column, row) offset of :attr:`Prepared.offset`: model pixel ``p`` is input pixel
        ``(p + offset + 0.5) / zoom - 0.5``."""
        return (
            self.crop[1].start + self.field[1].start * self.zoom[0],
            self.crop[0].start + self.field[0].start * self.zoom[1],
        )

    def centre(self) -> tuple[float, float]:
        """``(row, column)`` of the grid's centre in input pixels."""
        (top, left), (zoom_x, zoom_y) = self.offset[::-1], self.zoom
        height, width = self.crop[0].stop - self.crop[0].start, self.crop[1].stop - self.crop[1].start
        return ((height - 1) / 2 + top + 0.5) / zoom_y - 0.5, ((width - 1) / 2 + left + 0.5) / zoom_x - 0.5


def grid_geometry(shape: tuple[int, int], scale: float, pixel_scale: float, image_size: tuple[int, int]) -> Geometry:
    """Where :func:`prepare` puts a model grid of ``image_size`` pixels of ``pixel_scale`` arcsec on an image of
    ``shape`` pixels of ``scale`` arcsec (resampled when the scales differ by more than
    :data:`PIXEL_SCALE_TOLERANCE`): the centred block :func:`model_field`, then the centred crop."""
    resampling = abs(scale / pixel_scale - 1) > PIXEL_SCALE_TOLERANCE
    field = model_field(shape, scale / pixel_scale if resampling else 1.0, image_size)
    block = (field[0].stop - field[0].start, field[1].stop - field[1].start)
    height, width = model_pixels(block, scale, pixel_scale)
    (h, w), (top, left) = image_size, ((height - image_size[0]) // 2, (width - image_size[1]) // 2)
    crop = (slice(top, top + h), slice(left, left + w))
    return Geometry(field, crop, (width / block[1], height / block[0]))


def model_pixels(shape: tuple[int, int], scale: float, pixel_scale: float) -> tuple[int, int]:
    """The size of an image of ``shape`` pixels of ``scale`` arcsec on the model's pixels of ``pixel_scale``: as
    it is within :data:`PIXEL_SCALE_TOLERANCE`, else as :func:`prepare` resamples it."""
    if abs(scale / pixel_scale - 1) > PIXEL_SCALE_TOLERANCE:
        return output_shape(shape, scale, pixel_scale)
    return shape[0], shape[1]


def model_field(shape: tuple[int, int], ratio: float, image_size: tuple[int, int]) -> tuple[slice, slice]:
    """The central input pixels of an image of ``shape`` that cover the model's ``image_size`` pixels, each
    ``ratio`` input pixels wide (the input's whole extent where it is no larger): the smallest centred block
    that resamples to at least ``image_size``, centred as the model's crop of the whole image is."""
    field = []
    for n, size in zip(shape, image_size, strict=True):
        first = max(1, math.floor((size - 0.5) / ratio) - 1)  # no smaller block can resample to size pixels
        inner = min(n, next(k for k in range(first, n + 1) if output_shape((k, k), ratio, 1.0)[0] >= size))
        inner += (n - inner) % 2 if inner < n else 0  # the same centre as the input's
        start = (n - inner) // 2
        field.append(slice(start, start + inner))
    return field[0], field[1]


def to_model_units(model_rms: float | None, image_rms: float) -> float:
    """The factor that brings an image of background rms ``image_rms`` to the model's ``model_rms`` (step 7;
    1 when the model's is not given or the image has no noise to scale by: a blank image stays blank)."""
    return model_rms / image_rms if model_rms is not None and image_rms > 0 else 1.0


def shot_noise_time(
    cutout: Cutout, settings: Preparation, image: np.ndarray, valid: np.ndarray, background_rms: float
) -> tuple[float | None, bool]:
    """The exposure time [s] of a cutout's shot noise (step 3), and whether it was estimated: ``exposure_time``
    when a number, else the header's ``EXPTIME``, else with ``exposure_time=estimate`` the estimate from the
    (sky-subtracted) ``image`` (:func:`lenscnn.preparation.noise.shot_noise_exposure`); ``None``: no shot noise."""
    given = None if settings.exposure_time == "estimate" else settings.exposure_time
    exposure_time = given or header_number(cutout, "EXPTIME")
    if exposure_time or settings.exposure_time != "estimate":
        return exposure_time, False
    return noise_maps.shot_noise_exposure(image, valid, background_rms), True


def cosmic_rays_wanted(cutout: Cutout, settings: Preparation) -> bool:
    """Whether to look for cosmic rays in a cutout: ``cosmic_rays=true``, or ``auto`` and the header does not
    say that several exposures were combined (:data:`COMBINED_KEYWORDS`; no header: looked for)."""
    if settings.cosmic_rays != "auto":
        return bool(settings.cosmic_rays)
    return not any((header_number(cutout, keyword) or 0) > 1 for keyword in COMBINED_KEYWORDS)


def cutout_psf_fwhm(cutout: Cutout, settings: Preparation) -> float | None:
    """The PSF FWHM [arcsec] of a cutout: ``psf_fwhm`` or the ``psf`` file's, else its PSF HDU's, else a
    ``PSF_FWHM`` header keyword; ``None`` when unknown."""
    if settings.given_psf_fwhm is not None:
        return settings.given_psf_fwhm
    if cutout.psf is not None:
        return psf_fwhm(*cutout.psf)
    return header_number(cutout, *PSF_KEYWORDS)


def zero_regions(image: np.ndarray) -> np.ndarray:
    """Pixels in connected regions of at least :data:`ZERO_AREA` pixels that are exactly 0: the masked,
    unobserved or chip-gap parts of released cutouts (sky noise is never exactly 0 over such areas)."""
    zero = image == 0
    if zero.sum() < ZERO_AREA:
        return np.zeros(image.shape, dtype=bool)
    labels, count = ndimage.label(zero)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    large = sizes >= ZERO_AREA
    large[0] = False
    return large[labels]


def filled(image: np.ndarray, bad: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """``image`` with its ``bad`` pixels replaced by the Gaussian-weighted mean (``sigma`` pixels) of the
    good pixels around them (normalised convolution); good pixels unchanged."""
    if not bad.any():
        return image
    good = (~bad).astype(np.float64)
    weight = ndimage.gaussian_filter(good, sigma)
    smooth = ndimage.gaussian_filter(np.where(bad, 0.0, image), sigma) / np.maximum(weight, 1e-12)
    return np.where(bad, np.where(weight > 1e-6, smooth, 0.0), image)


def header_number(cutout: Cutout, *keywords: str) -> float | None:
    """The first of ``keywords`` in the cutout's header that is a positive number, else ``None``."""
    header = cutout.header
    for keyword in keywords:
        value = None if header is None else header.get(keyword)
        if not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
            return float(value)
    return None
