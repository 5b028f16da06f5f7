"""Cosmic-ray detection in single exposures with L.A.Cosmic (van Dokkum 2001, PASP 113, 1420), through
``astroscrappy.detect_cosmics``.

Images are ``(H, W)`` arrays, row = y, column = x, in counts/s per pixel; ``variance`` is their per-pixel
noise variance [(counts/s)**2] (from an ERR/WHT/IVM extension, or ``rms**2 + max(image, 0) / exptime``).
The variance goes to astroscrappy as ``invar``, so its own noise model (gain, read noise, and the Poisson
noise of the data values, for which it wants the sky *in* the data) is not used, and no ``inbkg`` is
passed (astroscrappy would subtract it from ``invar`` as a Poisson term in counts): the image may be
sky-subtracted or not. The Laplacian and the median-filtered fine-structure image ignore a constant or
smooth sky; the level only sets what cleaned pixels are filled with between iterations.

What this module adds around astroscrappy:

* the image and variance are divided by the median variance (astroscrappy floors the variance at 1e-5 in
  its own units, and works in float32);
* they are padded by mirror reflection (:data:`PAD` pixels) and cropped back: astroscrappy's median
  filters leave the outer 3 pixels of an array unexamined, a sixth of a 64 x 64 cutout (without padding,
  the recall below falls from 0.90 to 0.70);
* bad pixels (``mask``, NaN image values, non-finite or non-positive variance) are masked for astroscrappy
  and filled with their nearest good pixel's values, so that they create no edges;
* the exact (not the separable) median filters: ``sepmed=False``.

The defaults were chosen on the project's own simulations (``tests/preparation/test_cosmic_rays.py``):
128 cutouts of ``prior=survey`` (bright lens galaxies with Sersic indices 3-5, bright arcs, neighbours and
field stars) at 0.08"/px with 20 cosmic rays each (1-9 pixel tracks of 5-500 background rms), with a
Gaussian PSF of FWHM 2 and 1.25 pixels (HST after resampling to 0.08"/px), the variance estimated from
the noisy image. Recall is that of cosmic-ray pixels adding more than 5 sigma; false positives are
counted on the same images without cosmic rays (FWHM 2 px / 1.25 px):

====================================  ===============  ===================  ======================
settings                              recall           false positives      in the lens core
====================================  ===============  ===================  ======================
astroscrappy's defaults, padded       0.905 / 0.906    0.21 % / 0.46 %      0 / 2
sepmed=False, objlim 2                0.905 / 0.906    0.019 % / 0.14 %     0 / 1
sepmed=False, objlim 3 (default)      0.886 / 0.890    0.017 % / 0.043 %    0 / 0
sepmed=False, objlim 4                0.871 / 0.872    0.012 % / 0.030 %    0 / 0
sepmed=False, objlim 3, sigclip 4     0.899 / 0.903    0.037 % / 0.061 %    0 / 0
====================================  ===============  ===================  ======================

(Lens core: within 0.28" of the lens centre where the lens light exceeds 20 sigma.) With the separable
median, the fine-structure image loses thin arcs and the cores of undersampled stars and galaxies, which
``objlim`` then cannot protect; with the exact median, ``objlim = 3`` has a third of the false positives
of ``objlim = 2`` on the undersampled images (mostly on lens light, arcs and stars) for 1.5-2 points of
recall.
The cosmic-ray pixels missed are those on bright light (27 % of those on light brighter than 30 sigma
per pixel, which ``objlim`` protects) and faint track pixels (5-7 sigma: the Laplacian of a pixel inside a
track stays below ``sigclip``); on empty sky (light below 3 sigma) recall is 0.97. ``sigclip = 4`` finds
more of both (recall 0.90) for twice the false positives, a tenth of them in empty sky.
"""

from __future__ import annotations

import math

import astroscrappy
import numpy as np
from scipy import ndimage

from lenscnn.errors import UserError

#: Pixels of mirror padding around the image: astroscrappy's largest median filter (9 pixels) plus margin.
PAD = 8


def detect_cosmic_rays(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    sigclip: float = 4.5,
    objlim: float = 3.0,
    sigfrac: float = 0.3,
    niter: int = 4,
) -> np.ndarray:
    """The cosmic-ray pixels (True) of a single exposure ``image`` ``(H, W)`` [counts/s per pixel, sky
    subtracted or not] of per-pixel noise ``variance`` ``(H, W)`` [(counts/s)**2].

    ``mask`` (True = bad, e.g. NaN or known bad pixels) is passed to astroscrappy as ``inmask``; NaN image
    values and non-finite or non-positive variances are bad too. Bad pixels are never flagged, and neither
    are their direct neighbours (astroscrappy grows the mask by one pixel).

    Args:
        sigclip: Laplacian-to-noise threshold of a cosmic-ray pixel (lower: more detections).
        objlim: minimum contrast between the Laplacian and the fine-structure image: raise it if the
            cores of stars, galaxies or arcs are flagged (see the module docstring for the choice of 3).
        sigfrac: neighbours of cosmic-ray pixels are flagged above ``sigfrac * sigclip``.
        niter: L.A.Cosmic iterations (each cleans the pixels found and looks again).
    """
    image, variance, bad = _inputs(image, variance, mask)
    for name, value in (("sigclip", sigclip), ("objlim", objlim)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise UserError(f"detect_cosmic_rays: {name} must be a positive number, got {value!r}")
    if isinstance(sigfrac, bool) or not isinstance(sigfrac, (int, float)) or not 0 < sigfrac <= 1:
        raise UserError(f"detect_cosmic_rays: sigfrac must be a number in (0, 1], got {sigfrac!r}")
    if isinstance(niter, bool) or not isinstance(niter, (int, np.integer)) or niter < 1:
        raise UserError(f"detect_cosmic_rays: niter must be a positive integer, got {niter!r}")
    scale = float(np.median(variance[~bad]))
    if bad.any():  # fill bad pixels from their nearest good one: no edges for the Laplacian
        nearest = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
        image, variance = image[tuple(nearest)], variance[tuple(nearest)]
    padded_image = np.pad(image / math.sqrt(scale), PAD, mode="reflect").astype(np.float32)
    padded_variance = np.pad(variance / scale, PAD, mode="reflect").astype(np.float32)
    padded_bad = np.pad(bad, PAD, mode="reflect")
    found, _ = astroscrappy.detect_cosmics(
        padded_image,
        inmask=padded_bad,
        invar=padded_variance,
        sigclip=float(sigclip),
        sigfrac=float(sigfrac),
        objlim=float(objlim),
        gain=1.0,
        readnoise=0.0,
        satlevel=np.inf,
        niter=int(niter),
        sepmed=False,
        cleantype="meanmask",
        fsmode="median",
    )
    return found[PAD:-PAD, PAD:-PAD] & ~bad


def _inputs(image: np.ndarray, variance: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """``(image, variance, bad)`` as float64, float64 and bool arrays of one 2-D shape."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or 0 in image.shape:
        raise UserError(f"detect_cosmic_rays: the image must be a non-empty 2-D (H, W) array, got shape {image.shape}")
    variance = np.asarray(variance, dtype=np.float64)
    if variance.shape != image.shape:
        raise UserError(
            f"detect_cosmic_rays: the variance map has shape {variance.shape}, the image {image.shape}; "
            "give one variance per pixel"
        )
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(image) | ~np.isfinite(variance) | ~(variance > 0)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != image.shape:
            raise UserError(f"detect_cosmic_rays: the mask has shape {mask.shape}, the image {image.shape}")
        bad |= mask.astype(bool)
    if bad.all():
        raise UserError(
            "detect_cosmic_rays: no pixel has a finite value and a positive variance; check the image and "
            "its variance (ERR/WHT) map"
        )
    return image, variance, bad
