"""Detector noise (pure, batched).

Images are in counts per second (electrons/s) per pixel. The noise model is
lenstronomy's (``Util.image_util``): Gaussian background of rms ``background_rms``
[counts/s] plus shot noise of the source counts collected in ``exposure_time`` [s].
By default the shot noise uses lenstronomy's Gaussian approximation
(variance ``|image| / exposure_time``); ``exact_poisson=True`` draws Poisson counts.
"""

from __future__ import annotations

import torch
from torch import Tensor


def noise_sigma(image: Tensor, background_rms: float | Tensor, exposure_time: float | Tensor) -> Tensor:
    """Per-pixel noise standard deviation [counts/s] of a noiseless ``image`` [counts/s]."""
    return torch.sqrt(image.abs() / exposure_time + background_rms**2)


def add_noise(
    image: Tensor,
    background_rms: float | Tensor,
    exposure_time: float | Tensor,
    *,
    generator: torch.Generator | None = None,
    exact_poisson: bool = False,
) -> Tensor:
    """Return ``image`` plus one realisation of background and shot noise [counts/s]."""
    standard = torch.randn(image.shape, generator=generator, dtype=image.dtype, device=image.device)
    if not exact_poisson:
        return apply_gaussian_noise(image, standard, background_rms, exposure_time)
    counts = torch.poisson(image.clamp(min=0.0) * exposure_time, generator=generator)
    return counts / exposure_time + standard * background_rms


def apply_gaussian_noise(
    image: Tensor, standard_normal: Tensor, background_rms: float | Tensor, exposure_time: float | Tensor
) -> Tensor:
    """``image + standard_normal * noise_sigma(image)``: the noisy image for given unit normals.

    Separating the draw from the arithmetic lets the arithmetic be fused with rendering.
    """
    return image + standard_normal * noise_sigma(image, background_rms, exposure_time)
