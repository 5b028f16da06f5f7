"""The field a lens-model fit sees: chosen for the lens, not the network's crop.

``lenscnn-refine`` prepares each image on a square grid of the instrument's pixels large enough for the
**lens region**, the disc of radius ``reach * theta_E + margin`` around the lens centre (the network's
estimates): the arcs out to ~1.5 Einstein radii and the lens light's core. Beyond it, the PSF's border
(:func:`lenscnn.modelling.pixels.psf_border`) is added at each edge, since the fit cannot use those pixels. The
grid is never smaller than the network's (the sky and noise are estimated on at least its field) nor larger
than the cutout.

In that field, only the lens region is fitted, and **neighbours** are masked: the image less its median profile in
elliptical rings around the lens (the lens galaxy's smooth light) is segmented (photutils ``detect_sources`` above
``nsigma`` times the smoothed noise, then ``deblend_sources``), and every
segment whose flux-weighted centre lies outside the lens region (a neighbouring galaxy, a star, a trail) is
masked, grown by ``grow`` pixels, including any part of it that reaches into the region. Segments centred in
the region (the lens galaxy, the arcs, counter-images) are fitted. A mask HDU (``mask_hdu=``) adds to this.

Coordinates follow :func:`lenscnn.modelling.kwargs.observation_kwargs`: ``x`` [arcsec] grows with the column,
``y`` with the row, both 0 at the grid's centre.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.stats import mad_std
from photutils.segmentation import deblend_sources, detect_sources
from photutils.utils.exceptions import NoDetectionsWarning
from scipy import ndimage

from lenscnn.errors import UserError

#: Gaussian smoothing [pixels] of the image before it is segmented (a matched filter for arcs and neighbours).
SMOOTHING = 1.0


@dataclass(frozen=True)
class FitField:
    """How the fit's field and masks are chosen (``lenscnn-refine``'s ``field`` keys).

    Attributes:
        reach: the lens region's radius in units of the network's ``theta_E``; ``None``: the network's field as
            prepared for it, every pixel fitted, no neighbour masked (the behaviour before fit fields).
        margin: [arcsec] added to the lens region's radius (the PSF and the arcs' width).
        neighbours: mask the segments centred outside the lens region.
        nsigma: the segmentation's threshold, in units of the smoothed background noise.
        npixels: the fewest connected pixels of a segment.
        grow: pixels by which a masked segment is grown.
    """

    reach: float | None = 1.5
    margin: float = 0.3
    neighbours: bool = True
    nsigma: float = 3.0
    npixels: int = 5
    grow: int = 2

    def __post_init__(self) -> None:
        for name in ("reach", "nsigma") if self.reach is not None else ("nsigma",):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise UserError(f"field.{name}={value!r}: give a number > 0" + (" or null" if name == "reach" else ""))
        if isinstance(self.margin, bool) or not isinstance(self.margin, int | float) or not 0 <= self.margin < 100:
            raise UserError(f"field.margin={self.margin!r}: give a number of arcsec >= 0")
        for name, low in (("npixels", 1), ("grow", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"field.{name}={value!r}: give an integer >= {low}")
        if not isinstance(self.neighbours, bool):
            raise UserError(f"field.neighbours={self.neighbours!r}: give true or false")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> FitField:
        """The settings of a ``field`` config block (missing keys: the defaults; unknown keys refused)."""
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(cls.__dataclass_fields__))
        if unknown:
            raise UserError(f"field: unknown keys {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**cfg)

    def radius(self, theta_E: float) -> float:  # noqa: N803 (the physics name)
        """The lens region's radius [arcsec] for a lens of Einstein radius ``theta_E`` [arcsec]."""
        return float(self.reach) * abs(theta_E) + self.margin

    def size(
        self,
        prediction: Mapping[str, float],
        pixel_scale: float,
        border: int,
        smallest: tuple[int, int],
        largest: tuple[int, int],
    ) -> tuple[int, int]:
        """The fit's square grid ``(n, n)`` [pixels of ``pixel_scale`` arcsec; lenstronomy fits square images]
        for a lens predicted at ``prediction`` (``theta_E``, ``center_x``, ``center_y`` [arcsec]): the lens region
        around the predicted centre plus ``border`` pixels at each edge, at least ``smallest`` (the network's
        grid) and at most ``largest`` (the cutout's), of ``smallest``'s parity so that the grids share their
        centre."""
        offset = max(abs(prediction.get("center_x", 0.0)), abs(prediction.get("center_y", 0.0)))
        needed = 2 * math.ceil((self.radius(prediction["theta_E"]) + offset) / pixel_scale) + 1 + 2 * border
        n = max(needed, *smallest)
        n += (n - smallest[0]) % 2
        top = min(largest) - (min(largest) - smallest[0]) % 2
        n = max(max(smallest), min(n, top))
        return n, n


def centre_pixel(shape: tuple[int, int], x: float, y: float, pixel_scale: float) -> tuple[float, float]:
    """``(row, column)`` of the position ``(x, y)`` [arcsec] on a grid of ``shape`` pixels of ``pixel_scale``."""
    return y / pixel_scale + (shape[0] - 1) / 2, x / pixel_scale + (shape[1] - 1) / 2


def lens_region(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    """Pixels of a grid of ``shape`` whose centre lies within ``radius`` pixels of ``centre`` (row, column)."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(rows - centre[0], cols - centre[1]) <= radius


def radial_profile(image: np.ndarray, use: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """The median of ``image`` over the ``use``-d pixels in elliptical rings one pixel wide around ``centre``
    (row, column), as an image: the smooth part of a lens galaxy's light. The rings' axis ratio and angle are
    the flux-weighted second moments of the pixels within 8 of the centre (the galaxy's core); rings without
    used pixels are 0."""
    rows, cols = np.mgrid[: image.shape[0], : image.shape[1]]
    dy, dx = rows - centre[0], cols - centre[1]
    core = use & (np.hypot(dx, dy) <= 8) & (image > 0)
    weights = np.where(core, image, 0.0)
    ring_radius = np.hypot(dx, dy)
    if weights.sum() > 0:
        moments = np.cov(np.stack([dx[core], dy[core]]), aweights=weights[core])
        values, vectors = np.linalg.eigh(moments)
        if values[0] > 0:
            major, minor = vectors[:, 1], vectors[:, 0]
            ratio = math.sqrt(values[0] / values[1])
            ring_radius = np.hypot(dx * major[0] + dy * major[1], (dx * minor[0] + dy * minor[1]) / ratio)
    ring = np.floor(ring_radius).astype(int)
    medians = np.zeros(ring.max() + 1)
    for k in np.unique(ring[use]):
        medians[k] = np.median(image[use & (ring == k)])
    return medians[ring]


def neighbour_mask(
    image: np.ndarray,
    noise: np.ndarray,
    use: np.ndarray,
    centre: tuple[float, float],
    radius: float,
    settings: FitField,
) -> tuple[np.ndarray, int]:
    """The pixels of sources centred outside the lens region (``True``: a neighbour's) and how many such
    sources there are: ``image`` [counts/s/px] less its median profile in elliptical rings around ``centre``
    (:func:`radial_profile`: the lens galaxy's light, which would otherwise join every source into one
    segment) segmented where ``use`` (the pixels with data) above ``nsigma`` times its smoothed ``noise``
    (rms per pixel, scaled by the measured spread of the smoothed image over it), deblended; a segment whose
    flux-weighted centre lies farther than ``radius`` pixels from ``centre`` (row, column) is masked, grown by
    ``grow`` pixels."""
    filled = np.where(use, image - radial_profile(image, use, centre), 0.0)
    smoothed = ndimage.gaussian_filter(filled, SMOOTHING)
    # the smoothed noise per pixel: the noise map scaled by what smoothing keeps of it, measured (astropy's mad_std
    # of the smoothed image over the noise: sources barely move it) since drizzled noise is correlated
    noise = np.where(use, noise, np.median(noise[use]))
    kept = mad_std(smoothed[use] / noise[use])
    threshold = settings.nsigma * kept * noise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segments = detect_sources(smoothed, threshold, settings.npixels, mask=~use)
        if segments is None:
            return np.zeros(image.shape, dtype=bool), 0
        segments = deblend_sources(smoothed, segments, settings.npixels, progress_bar=False)
    labels = segments.labels
    weights = np.clip(smoothed, 0.0, None)
    centres = ndimage.center_of_mass(weights, segments.data, labels)
    outside = [
        label
        for label, (row, col) in zip(labels, centres, strict=True)
        if not math.isfinite(row) or math.hypot(row - centre[0], col - centre[1]) > radius
    ]
    mask = np.isin(segments.data, outside)
    if settings.grow > 0 and outside:
        mask = ndimage.binary_dilation(mask, iterations=settings.grow)
    return mask, len(outside)
