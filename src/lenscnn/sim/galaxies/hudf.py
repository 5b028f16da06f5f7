"""The built-in galaxy library: galaxies cut from the Hubble eXtreme Deep Field picture of scikit-image.

``skimage.data.hubble_deep_field()`` is NASA/STScI's colour release of the Hubble eXtreme Deep
Field (XDF, release STScI-2012-37a), shipped inside scikit-image's wheel, so nothing is downloaded:
an 8-bit JPEG, 1000 x 872 pixels, of a composite of several ACS and WFC3/IR filters.

Limits: the picture is a display product (colour composite, non-linear stretch, 8-bit quantisation,
JPEG compression), so the library is a set of realistic galaxy **morphologies** (clumps, spiral arms,
irregulars, mergers), not photometry: every stamp is normalised to unit flux and its colour and
absolute brightness are meaningless. One band is made from the colour picture by undoing the
sRGB display encoding and taking the linear-light luminance ``0.2126 R + 0.7152 G + 0.0722 B``
(the artistic stretch of the release cannot be undone, so profiles remain somewhat flattened).

Pixel scale (approximate): the release is cut to the deep WFC3/IR field of the XDF, whose press
material gives as "about 2 arcminutes" across; the WFC3/IR field is about 136 x 123 arcsec, which on
1000 x 872 pixels makes 0.136 and 0.141 arcsec per pixel along the two axes. :data:`PIXEL_SCALE` =
0.14 arcsec/pixel, good to perhaps 15%. The resolution is that of this downsampled picture, several
times coarser than the native 0.03-0.06 arcsec/pixel XDF mosaics.

Catalogue: sky level and noise from 3-sigma-clipped statistics of the whole picture; sources from
:func:`_segment` (detection, then a watershed deblending); sources smaller than :data:`MIN_AREA`
pixels, below :data:`MIN_SNR`, or at :data:`STARS` are dropped. Each source's footprint is grown
by :data:`~lenscnn.sim.galaxies.library.FOOTPRINT_GROWTH` pixels (not into other sources) and
everything outside it, neighbours included, is zeroed;
:func:`~lenscnn.sim.galaxies.library.prepare_stamp` then drops unresolved sources (half-light radius
below 1.5 stamp pixels: compact galaxies, faint stars). The build is deterministic: galaxies are
named ``hudf-NNNN`` by their source number (raster order of their peaks), with gaps where a source
was dropped.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from astropy.stats import sigma_clipped_stats
from scipy import ndimage

from lenscnn.cache import cache_dir
from lenscnn.sim.galaxies.library import DEFAULT_SIZE, FOOTPRINT_GROWTH, GalaxyLibrary, build_library, cached_library

log = logging.getLogger(__name__)

#: Version of the built library: bump it whenever the build changes, so old cache files are not used.
VERSION = 1
#: Approximate arcsec per pixel of the scikit-image XDF picture (see the module docstring).
PIXEL_SCALE = 0.14
#: Detection threshold [sigma of the smoothed sky] and minimum segment area [pixels].
DETECT_SIGMA = 3.0
MIN_AREA = 20
#: Deblending: smoothing [pixels], minimum peak separation [pixels] and peak threshold [sigma].
DEBLEND_SMOOTHING = 2.5
DEBLEND_DISTANCE = 5
DEBLEND_SIGMA = 5.0
#: Sources below this signal-to-noise ratio (footprint flux over sky noise) are too noisy to keep.
MIN_SNR = 50.0
#: (row, column) of the two bright foreground stars with diffraction spikes, whose sources are dropped.
STARS = ((166, 253), (578, 755))
ORIGIN = (
    "Hubble eXtreme Deep Field colour release STScI-2012-37a (skimage.data.hubble_deep_field), linear-light "
    f"luminance, ~{PIXEL_SCALE} arcsec/px, morphology only"
)


def cache_path(size: int = DEFAULT_SIZE) -> Path:
    """The cache file of the built-in library with ``size x size`` stamps (in :func:`lenscnn.cache.cache_dir`)."""
    return cache_dir() / f"hudf_v{VERSION}_{size}px.h5"


def xdf_luminance() -> tuple[np.ndarray, float]:
    """The XDF picture as one sky-subtracted band (linear-light luminance, arbitrary unit) and its
    sky noise (3-sigma-clipped standard deviation), ``(image (872, 1000), sigma)``."""
    from skimage.data import hubble_deep_field

    encoded = hubble_deep_field().astype(np.float64) / 255.0
    linear = np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)  # sRGB decoding
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722])
    _, sky, sigma = sigma_clipped_stats(luminance, sigma=3.0, maxiters=10)
    return luminance - sky, float(sigma)


def _segment(image: np.ndarray) -> np.ndarray:
    """Label map of the sources in the sky-subtracted picture (0: sky and discarded sources).

    Detection: 8-connected regions above :data:`DETECT_SIGMA` sigma of the picture smoothed by a
    1-pixel Gaussian; regions touching the picture's edge are discarded. Deblending: a watershed of
    the picture smoothed by :data:`DEBLEND_SMOOTHING` pixels, seeded at its peaks above
    :data:`DEBLEND_SIGMA` sigma and at least :data:`DEBLEND_DISTANCE` pixels apart, so the clumps of
    one galaxy (closer than the smoothing) stay together while neighbouring galaxies are split.
    Sources are numbered in raster order of their peaks.
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    smooth = ndimage.gaussian_filter(image, 1.0)
    _, _, noise = sigma_clipped_stats(smooth, sigma=3.0, maxiters=10)
    detected, _ = ndimage.label(smooth > DETECT_SIGMA * noise, structure=np.ones((3, 3)))
    on_edge = np.unique(np.concatenate([detected[0], detected[-1], detected[:, 0], detected[:, -1]]))
    detected[np.isin(detected, on_edge)] = 0

    smooth = ndimage.gaussian_filter(image, DEBLEND_SMOOTHING)
    _, _, noise = sigma_clipped_stats(smooth, sigma=3.0, maxiters=10)
    peaks = peak_local_max(smooth, min_distance=DEBLEND_DISTANCE, threshold_abs=DEBLEND_SIGMA * noise, labels=detected)
    peaks = peaks[np.lexsort((peaks[:, 1], peaks[:, 0]))]
    markers = np.zeros(image.shape, dtype=np.int32)
    markers[peaks[:, 0], peaks[:, 1]] = np.arange(1, len(peaks) + 1)
    return watershed(-smooth, markers, mask=detected > 0)


def _sources(image: np.ndarray, sigma: float, size: int) -> list[tuple[str, np.ndarray, float, np.ndarray]]:
    """``(name, cut-out, pixel_scale, footprint)`` of every source of at least :data:`MIN_AREA` pixels
    and :data:`MIN_SNR` signal-to-noise ratio (``sigma``: the sky noise of ``image``), stars excluded."""
    labels = _segment(image)
    areas = np.bincount(labels.ravel())
    stars = {labels[row, column] for row, column in STARS}
    height, width = image.shape
    sources = []
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or areas[label] < MIN_AREA or label in stars:
            continue
        ys, xs = box
        half = max(size // 2, math.ceil(max(ys.stop - ys.start, xs.stop - xs.start) / 2) + FOOTPRINT_GROWTH + 4)
        cy, cx = (ys.start + ys.stop) // 2, (xs.start + xs.stop) // 2
        window = np.s_[max(cy - half, 0) : min(cy + half, height), max(cx - half, 0) : min(cx + half, width)]
        cut, others = image[window], labels[window]
        footprint = ndimage.binary_dilation(others == label, structure=np.ones((3, 3)), iterations=FOOTPRINT_GROWTH)
        footprint &= (others == 0) | (others == label)
        if np.clip(cut[footprint], 0, None).sum() < MIN_SNR * sigma * math.sqrt(np.count_nonzero(footprint)):
            continue
        sources.append((f"hudf-{label:04d}", cut, PIXEL_SCALE, footprint))
    return sources


def build_hudf(size: int = DEFAULT_SIZE) -> GalaxyLibrary:
    """Build the built-in library from the XDF picture (a few seconds; deterministic)."""
    image, sigma = xdf_luminance()
    sources = _sources(image, sigma, size)
    return build_library(iter(sources), len(sources), size, ORIGIN, "cutting XDF galaxies")


def load_hudf(size: int = DEFAULT_SIZE, rebuild: bool = False) -> GalaxyLibrary:
    """The built-in library from its cache file (:func:`cache_path`), built and cached on first use
    (or when ``rebuild``, or when the cache file cannot be read)."""
    return cached_library(cache_path(size), lambda: build_hudf(size), "XDF galaxy library", rebuild)
