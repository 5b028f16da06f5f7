"""Real or simulated lens cutouts for prediction: find, read (astropy, h5py), check and shape them.

A cutout's pixel scale comes from its WCS (``CDELT``/``CD`` with their ``CUNIT``), else from a
``PIXSCALE`` keyword [arcsec/pixel], else from the caller. Images must be in the units the model
was trained on (counts/s per pixel, lenstronomy's convention).
"""

from __future__ import annotations

import glob
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from lenscnn.errors import UserError
from lenscnn.io.fits import read_image_hdu, reason
from lenscnn.io.hdf5 import read_lens_dataset

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fz")
HDF5_SUFFIXES = (".h5", ".hdf5")
#: Largest relative difference between a cutout's and the model's pixel scale that is accepted as is.
PIXEL_SCALE_TOLERANCE = 0.01
WCS_KEYS = ("CTYPE1", "CDELT1", "CD1_1", "PC1_1")
#: Most pixels a cutout may have after resampling (4096 x 4096): more means a pixel scale far off the model's.
MAX_RESAMPLED_PIXELS = 4096**2
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Cutout:
    """One image ``(H, W)`` as read: ``label`` names it (``file`` or ``file[k]`` in a cube)."""

    label: str
    image: np.ndarray
    pixel_scale: float | None
    wcs: WCS | None


@dataclass
class Prepared:
    """A cutout shaped for the model: ``image (1, h, w)`` float32 and the map back to the input's
    pixels: model-frame pixel ``p`` is input pixel ``(p + offset + 0.5) / zoom - 0.5`` per axis."""

    image: torch.Tensor
    offset: tuple[float, float]  # (column, row) of the crop in the (resampled) input
    zoom: tuple[float, float]  # (column, row) resampled pixels per input pixel

    def to_input_pixels(self, col: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            (col + self.offset[0] + 0.5) / self.zoom[0] - 0.5,
            (row + self.offset[1] + 0.5) / self.zoom[1] - 0.5,
        )


def find_inputs(spec: str) -> list[Path]:
    """Files named by ``spec``: one FITS or HDF5 file, a directory of FITS files, or a glob pattern."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.lower().endswith(FITS_SUFFIXES))
        if not files:
            raise UserError(f"input={spec}: the directory holds no FITS files ({', '.join(FITS_SUFFIXES)})")
        return files
    if any(c in spec for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        if not files:
            raise UserError(f"input={spec}: the pattern matches no files")
        return files
    if not path.is_file():
        raise UserError(f"input={spec}: no such file or directory")
    return [path]


def pixel_scale_from_header(header: fits.Header, source: str) -> tuple[float | None, WCS | None]:
    """``(arcsec per pixel or None, the celestial WCS or None)`` of an image header: from a WCS
    whose axes are angles (square pixels), else from a ``PIXSCALE`` keyword [arcsec/pixel]; a
    non-positive or non-numeric scale, or WCS keywords astropy cannot use, is a :class:`UserError`."""
    if any(k in header for k in WCS_KEYS):
        scale, wcs = wcs_pixel_scale(header, source)
        if scale is not None:
            return scale, wcs
    if "PIXSCALE" in header:
        value = header["PIXSCALE"]
        try:
            scale = math.nan if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            scale = math.nan
        if not (math.isfinite(scale) and scale > 0):
            raise UserError(f"{source}: PIXSCALE = {value!r} is not a positive number of arcsec/pixel")
        return scale, None
    return None, None


def wcs_pixel_scale(header: fits.Header, source: str) -> tuple[float | None, WCS | None]:
    """``(arcsec per pixel, celestial WCS or None)`` from the WCS keywords of a header; ``(None, None)``
    if its axes are not angles. The WCS must map pixels to the sky now, not fail after predicting."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            full = WCS(header, naxis=2)
            scales = angular_pixel_scales(full)
            wcs = full.celestial if scales is not None and full.has_celestial else None
            if wcs is not None:
                wcs.pixel_to_world_values(0.0, 0.0)
        except Exception as exc:  # astropy and wcslib raise many types for broken WCS keywords
            raise UserError(
                f"{source}: the WCS in the header cannot be used ({reason(exc)}); fix or remove its WCS keywords"
            ) from None
    if scales is None:
        return None, None
    if not all(np.isfinite(scales)) or min(scales) <= 0:
        raise UserError(f"{source}: the WCS gives pixel scales {scales} arcsec; fix CDELT/CD in the header")
    if abs(scales[0] / scales[1] - 1) > PIXEL_SCALE_TOLERANCE:
        raise UserError(f'{source}: pixels are not square ({scales[0]:.4g}" x {scales[1]:.4g}"); resample them first')
    return float(np.mean(scales)), wcs


def angular_pixel_scales(wcs: WCS) -> list[float] | None:
    """Pixel sides [arcsec] of a WCS, ``None`` if its axes are not angles (then they say nothing of the scale)."""
    try:
        return [
            (s * unit).to_value(u.arcsec) for s, unit in zip(proj_plane_pixel_scales(wcs), wcs.wcs.cunit, strict=True)
        ]
    except u.UnitConversionError:
        return None


def read_cutouts(path: Path, hdu: int | str = 0) -> Iterator[Cutout]:
    """Every image in a FITS file (a 2-D image, or each plane of an ``(N, H, W)`` cube) or an HDF5
    file written by ``lenscnn-simulate``."""
    if path.name.lower().endswith(HDF5_SUFFIXES):
        images, _, attrs = read_lens_dataset(path)
        scale = attrs.get("pixel_scale")
        for k, image in enumerate(images.reshape(-1, *images.shape[-2:])):
            yield Cutout(f"{path}[{k}]", np.asarray(image, dtype=np.float64), scale, None)
        return
    data, header = read_image_hdu(path, hdu)
    if data.ndim not in (2, 3):
        raise UserError(f"{path}: HDU {hdu!r} holds a {data.ndim}-D array; expected a 2-D image or an (N, H, W) cube")
    scale, wcs = pixel_scale_from_header(header, str(path))
    if data.ndim == 2:
        yield Cutout(str(path), data, scale, wcs)
    else:
        for k, image in enumerate(data):
            yield Cutout(f"{path}[{k}]", image, scale, wcs)


def prepare(
    cutout: Cutout,
    image_size: tuple[int, int],
    pixel_scale: float,
    resample: bool = False,
    fill_nan: float | None = None,
) -> Prepared:
    """Shape a cutout for a model reading ``image_size`` pixels of ``pixel_scale`` arcsec.

    Non-finite pixels are refused unless ``fill_nan`` replaces them. A pixel scale more than 1%
    off the model's is refused unless ``resample``: then the image is resampled (bilinear with
    antialiasing, flux per pixel scaled by the pixel-area ratio, so surface brightness is kept).
    Larger images are centre-cropped; smaller ones are refused.
    """
    tensor = torch.from_numpy(finite_pixels(cutout, fill_nan))
    zoom = (1.0, 1.0)
    scale = cutout.pixel_scale if cutout.pixel_scale is not None else pixel_scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
        raise UserError(f"{cutout.label}: pixel scale {scale!r} is not a positive number of arcsec/pixel")
    if abs(scale / pixel_scale - 1) > PIXEL_SCALE_TOLERANCE:
        if not resample:
            raise UserError(
                f'{cutout.label}: pixel scale {scale:.4g}"/px differs from the model\'s {pixel_scale:.4g}"/px '
                "by more than 1%; set resample=true to resample it"
            )
        tensor, zoom = resampled(tensor, scale, pixel_scale, cutout.label)
    height, width = tensor.shape
    h, w = image_size
    if height < h or width < w:
        raise UserError(
            f"{cutout.label}: {height}x{width} px at the model's pixel scale is smaller than the model's "
            f"{h}x{w} px; give a larger cutout"
        )
    top, left = (height - h) // 2, (width - w) // 2
    return Prepared(tensor[top : top + h, left : left + w][None].contiguous(), (float(left), float(top)), zoom)


def finite_pixels(cutout: Cutout, fill_nan: float | None) -> np.ndarray:
    """The cutout as contiguous float32; NaN and infinite pixels (also values beyond float32's
    range) replaced by ``fill_nan``, or refused when it is ``None``."""
    with np.errstate(over="ignore", invalid="ignore"):
        image = np.array(cutout.image, dtype=np.float32, order="C")
    bad = ~np.isfinite(image)
    if bad.any():
        if fill_nan is None:
            raise UserError(
                f"{cutout.label}: {int(bad.sum())} NaN or infinite pixels; set fill_nan=<value> to replace them"
            )
        if isinstance(fill_nan, bool) or not isinstance(fill_nan, (int, float)) or not abs(fill_nan) < FLOAT32_MAX:
            raise UserError(f"fill_nan={fill_nan!r}: give a finite number to replace NaN pixels with")
        image[bad] = fill_nan
    return image


def resampled(
    tensor: torch.Tensor, scale: float, pixel_scale: float, label: str
) -> tuple[torch.Tensor, tuple[float, float]]:
    """An image of ``scale`` arcsec/px resampled to ``pixel_scale`` (surface brightness kept), and
    the zoom ``(column, row)``; refused if it would exceed :data:`MAX_RESAMPLED_PIXELS`."""
    height, width = tensor.shape
    rows, cols = height * scale / pixel_scale, width * scale / pixel_scale
    if not rows * cols <= MAX_RESAMPLED_PIXELS:
        raise UserError(
            f'{label}: resampling {height}x{width} px from {scale:.4g}"/px to the model\'s {pixel_scale:.4g}"/px '
            f"gives {rows:.4g}x{cols:.4g} px; check the pixel scale (CDELT/CD/PIXSCALE) or crop the cutout"
        )
    size = (max(1, round(rows)), max(1, round(cols)))
    out = (
        torch.nn.functional.interpolate(
            tensor[None, None], size=size, mode="bilinear", antialias=True, align_corners=False
        )[0, 0]
        * (pixel_scale / scale) ** 2
    )
    if not torch.isfinite(out).all():
        raise UserError(f"{label}: resampling overflows float32 (pixels up to {tensor.abs().max():.3g}); rescale it")
    return out, (size[1] / width, size[0] / height)


def image_stem(label: str) -> str:
    """A file name stem for an image label: ``dir/lens.fits[3]`` -> ``lens_3``, ``dir/lens.fits`` -> ``lens``."""
    name = Path(label.split("[")[0]).name
    for suffix in (".gz", ".fz", ".fits", ".fit", ".fts", ".h5", ".hdf5"):
        name = name.removesuffix(suffix)
    index = label[label.index("[") + 1 : -1] if label.endswith("]") else None
    return f"{name}_{index}" if index is not None else name
