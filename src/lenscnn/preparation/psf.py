"""The inputs' PSF from a FITS file or an HDU beside the image: its width, and its kernel on the model's pixels.

A PSF file (a TinyTim model, a star stamp) is a 2-D image with its pixel scale in a ``PIXSCALE``
keyword [arcsec/pixel] or a WCS; any size (TinyTim's are even-sided). A PSF HDU of the image's own
file (Euclid's ``VIS_PSF``, a ``PSF`` extension) takes the image's pixel scale when it has none. Its
FWHM is compared with the PSFs a model was trained on (:mod:`lenscnn.preparation.domain`); refine fits with the kernel
resampled to the model's pixel scale (flux-conserving, :mod:`lenscnn.preparation.resample`) and cut
to odd sides around its peak, as lenstronomy needs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from lenscnn.errors import UserError
from lenscnn.io.cutouts import pixel_scale_from_header
from lenscnn.io.fits import band_prefix, image_hdus, is_image, pixscale, read_image_hdu
from lenscnn.preparation.resample import resample_flux


def read_psf(path: str | Path) -> tuple[np.ndarray, float]:
    """``(kernel normalised to unit sum, arcsec per pixel)`` of a PSF FITS file; a file without a pixel
    scale, not 2-D, with non-finite pixels or without positive flux is refused."""
    kernel, header = read_image_hdu(path)
    what = f"psf={path}"
    scale, _ = pixel_scale_from_header(header, what)
    if scale is None:
        scale = pixscale(header, Path(path))  # raises: no pixel scale
    return checked_kernel(kernel, what), scale


def checked_kernel(kernel: np.ndarray, what: str) -> np.ndarray:
    """A PSF image refused unless 2-D, finite and of positive flux; normalised to unit sum."""
    if kernel.ndim != 2:
        raise UserError(f"{what}: expected a 2-D PSF image, got shape {kernel.shape}")
    if not np.isfinite(kernel).all() or not kernel.sum() > 0:
        raise UserError(f"{what}: the kernel has NaN/infinite pixels or no positive flux")
    return kernel / kernel.sum()


def find_psf_hdu(hdul: fits.HDUList, science: str) -> int | None:
    """The PSF HDU that ``psf=auto`` takes from an open file: the one of the science image's band
    (``science="VIS_FLUX"``: ``VIS_PSF``), else one named ``PSF``; ``None`` if there is neither."""
    names = [h.name.upper() for h in hdul]
    for wanted in (f"{band_prefix(science)}PSF", "PSF"):
        if wanted in names and is_image(hdul[wanted]) and hdul[wanted].header.get("NAXIS", 0) == 2:
            return names.index(wanted)
    return None


def read_psf_hdu(
    hdul: fits.HDUList, path: Path, hdu: str, science: str, image_scale: float | None
) -> tuple[np.ndarray, float] | None:
    """``(kernel of unit sum, arcsec per pixel)`` of the PSF an image file ``path`` (open as ``hdul``)
    carries: HDU ``hdu`` (``"auto"``: :func:`find_psf_hdu`, ``None`` when there is none); its pixel scale
    from its own header (WCS or ``PIXSCALE``), else the image's (Euclid's cutouts sample the PSF on the
    image's pixels)."""
    index = find_psf_hdu(hdul, science) if hdu == "auto" else hdu
    if index is None:
        return None
    try:
        selected = hdul[index]
    except (IndexError, KeyError):
        raise UserError(
            f"{path}: has no PSF HDU {hdu!r}; its image HDUs: {image_hdus(hdul)}; choose one with psf="
        ) from None
    if not is_image(selected) or selected.data is None:
        raise UserError(f"{path}: PSF HDU {hdu!r} holds no image; its image HDUs: {image_hdus(hdul)}")
    kernel, header = np.asarray(selected.data, dtype=np.float64), selected.header
    what = f"{path} PSF HDU {hdu if hdu != 'auto' else selected.name!r}"
    scale, _ = pixel_scale_from_header(header, what)
    scale = scale or image_scale
    if scale is None:
        raise UserError(f"{what}: no pixel scale in its header nor the image's; give pixel_scale=<arcsec/px>")
    return checked_kernel(kernel, what), scale


def psf_fwhm(kernel: np.ndarray, scale: float, box: int = 15) -> float:
    """The FWHM [arcsec] of a kernel of ``scale`` arcsec/px: that of a round 2-D Gaussian fitted (astropy
    modeling, least squares) to its central ``box`` x ``box`` pixels around the peak. The core decides
    what the network sees; the fit is not thrown by an undersampled peak (TinyTim's at 0.05"/px) as a
    count of pixels above half the maximum is, nor by diffraction wings as second moments are."""
    from astropy.modeling import fitting, models

    row, col = np.unravel_index(np.argmax(kernel), kernel.shape)
    half = box // 2
    top, left = max(0, row - half), max(0, col - half)
    core = kernel[top : row + half + 1, left : col + half + 1]
    y, x = np.mgrid[: core.shape[0], : core.shape[1]]
    start = models.Gaussian2D(core.max(), col - left, row - top, 1.0, 1.0)
    start.y_stddev.tied = lambda model: model.x_stddev  # round
    start.theta.fixed = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns when the fit is not ideal; the width is what we keep
        fitted = fitting.LevMarLSQFitter()(start, x, y, core)
    return float(2 * np.sqrt(2 * np.log(2)) * abs(fitted.x_stddev.value) * scale)


def kernel_at_scale(kernel: np.ndarray, scale: float, pixel_scale: float, radius: int | None = None) -> np.ndarray:
    """The kernel resampled from ``scale`` to ``pixel_scale`` arcsec/px (flux-conserving), cut to
    ``2 * radius + 1`` pixels square around its brightest pixel (default: as large as fits) and
    normalised to unit sum."""
    resampled, _ = resample_flux(kernel, scale, pixel_scale)
    row, col = np.unravel_index(np.argmax(resampled), resampled.shape)
    fits = min(row, col, resampled.shape[0] - 1 - row, resampled.shape[1] - 1 - col)
    radius = fits if radius is None else min(radius, fits)
    if radius < 1:
        raise UserError(f'the PSF is {resampled.shape} px at {pixel_scale}"/px: too small to cut around its peak')
    cut = resampled[row - radius : row + radius + 1, col - radius : col + radius + 1]
    return cut / cut.sum()
