"""Real or simulated lens cutouts for prediction: find and read them (astropy, h5py).

A cutout's pixel scale comes from its WCS (``CDELT``/``CD`` with their ``CUNIT``), else from a
``PIXSCALE`` keyword [arcsec/pixel], else from the caller. Images must be in the units the model
was trained on (counts/s per pixel) or, as :mod:`lenscnn.preparation` prepares them by default, in any
unit (they are rescaled by their own noise); :mod:`lenscnn.preparation` shapes them for a model.
"""

from __future__ import annotations

import glob
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from lenscnn.errors import UserError, one_line
from lenscnn.io.fits import image_in, open_fits
from lenscnn.io.hdf5 import read_lens_dataset

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fz")
HDF5_SUFFIXES = (".h5", ".hdf5")
#: Largest relative difference between a pixel's two sides accepted as square.
PIXEL_SCALE_TOLERANCE = 0.01
WCS_KEYS = ("CTYPE1", "CDELT1", "CD1_1", "PC1_1")


@dataclass
class Cutout:
    """One image ``(H, W)`` as read: ``label`` names it (``file`` or ``file[k]`` in a cube); its
    FITS ``header`` (``None`` for HDF5) gives keywords such as ``EXPTIME``; ``psf``, when the file
    carries one: the PSF kernel (unit sum) and its pixel scale [arcsec/px]."""

    label: str
    image: np.ndarray
    pixel_scale: float | None
    wcs: WCS | None
    header: fits.Header | None = None
    psf: tuple[np.ndarray, float] | None = None


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
                f"{source}: the WCS in the header cannot be used ({one_line(exc)}); fix or remove its WCS keywords"
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
    with open_fits(path) as hdul:
        yield from fits_cutouts(hdul, path, hdu)


def fits_cutouts(hdul: fits.HDUList, path: Path, hdu: int | str = 0) -> Iterator[Cutout]:
    """The images of HDU ``hdu`` of the FITS file ``path`` already open as ``hdul`` (:func:`read_cutouts`)."""
    data, header = image_in(hdul, path, hdu)
    if data.ndim not in (2, 3):
        raise UserError(f"{path}: HDU {hdu!r} holds a {data.ndim}-D array; expected a 2-D image or an (N, H, W) cube")
    scale, wcs = pixel_scale_from_header(header, str(path))
    if data.ndim == 2:
        yield Cutout(str(path), data, scale, wcs, header)
    else:
        for k, image in enumerate(data):
            yield Cutout(f"{path}[{k}]", image, scale, wcs, header)


def image_stem(label: str) -> str:
    """A file name stem for an image label: ``dir/lens.fits[3]`` -> ``lens_3``, ``dir/lens.fits`` -> ``lens``."""
    name = Path(label.split("[")[0]).name
    for suffix in (".gz", ".fz", ".fits", ".fit", ".fts", ".h5", ".hdf5"):
        name = name.removesuffix(suffix)
    index = label[label.index("[") + 1 : -1] if label.endswith("]") else None
    return f"{name}_{index}" if index is not None else name
