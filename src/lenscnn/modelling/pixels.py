"""The pixels of an image that count in a fit's likelihood: those of the mask, away from the edge where the
PSF reaches beyond the image (:func:`psf_border`), of finite value and of non-zero weight (:func:`used_pixels`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: A noise rms [counts/s/px] at least this large is a zero weight: the pixel is left out like a masked one.
ZERO_WEIGHT_NOISE = 1e10
#: The edge of an image is left out of the likelihood where the PSF kernel reaches beyond the image by more than
#: this share of its flux (:func:`psf_border`).
EDGE_TAIL = 0.005


def psf_border(kwargs_psf: Mapping[str, Any]) -> int:
    """How many pixels at each edge of the image the fit leaves out: those for which more than
    :data:`EDGE_TAIL` of the PSF kernel of lenstronomy's ``kwargs_psf`` (``PIXEL``; 0 for any other PSF) falls
    beyond the edge.

    lenstronomy convolves with zeros beyond the image, so its model of light that continues past the edge
    (a sky level, an envelope; always so in a real image) is too faint there: a flat sky would come out
    biased by the edge pixels."""
    if kwargs_psf.get("psf_type") != "PIXEL":
        return 0
    kernel = np.abs(np.asarray(kwargs_psf["kernel_point_source"], dtype=float))
    border = 0
    for marginal in (kernel.sum(axis=0), kernel.sum(axis=1)):
        marginal = marginal / marginal.sum()
        centre = len(marginal) // 2
        # the flux beyond the edge seen from the pixel d pixels inside it: kernel offsets beyond d, either side
        tails = [max(marginal[centre + d + 1 :].sum(), marginal[: centre - d].sum()) for d in range(centre)]
        border = max(border, next((d for d, tail in enumerate(tails) if tail <= EDGE_TAIL), centre))
    return border


def used_pixels(
    image: np.ndarray, noise_map: np.ndarray | None, mask: np.ndarray | None, border: int = 0
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``(image, noise map, mask)`` ready for lenstronomy: the mask (``True``: use) also leaves out the
    ``border`` pixels at each edge (:func:`psf_border`) and pixels whose value or noise is not finite, whose
    noise is not positive or is a zero weight (at least :data:`ZERO_WEIGHT_NOISE`); left-out pixels get the
    value 0 and the median noise of the used ones (they do not count, but lenstronomy computes with them).
    Raises ``ValueError`` when no pixel is left."""
    image = np.asarray(image, dtype=float)
    use = np.ones(image.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).copy()
    if use.shape != image.shape:
        raise ValueError(f"the mask's shape {use.shape} is not the image's {image.shape}")
    if border > 0:
        use[:border], use[-border:], use[:, :border], use[:, -border:] = False, False, False, False
    use &= np.isfinite(image)
    noise = None
    if noise_map is not None:
        noise = np.asarray(noise_map, dtype=float)
        if noise.shape != image.shape:
            raise ValueError(f"the noise map's shape {noise.shape} is not the image's {image.shape}")
        use &= np.isfinite(noise) & (noise > 0) & (noise < ZERO_WEIGHT_NOISE)
    if not use.any():
        raise ValueError("no pixel to fit: every pixel is masked, not finite or of zero weight")
    if noise is not None:
        noise = np.where(use, noise, float(np.median(noise[use])))
    return np.where(use, image, 0.0), noise, use
