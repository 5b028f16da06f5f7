"""Detector noise (pure, batched).

Images are in counts per second (electrons/s) per pixel. The noise model is
lenstronomy's (``Util.image_util``): Gaussian background of rms ``background_rms``
[counts/s] plus shot noise of the source counts collected in ``exposure_time`` [s].
By default the shot noise uses lenstronomy's Gaussian approximation
(variance ``|image| / exposure_time``); ``exact_poisson=True`` draws Poisson counts.

Unit normals for the Gaussian model come from :func:`counter_normal`, a counter-based
generator (SplitMix64 hashing + Box-Muller) that is a pure function of a per-image seed
and the pixel index. It fuses into the rendering kernel, costs a fraction of
``torch.randn`` on CPU, and gives the same numbers on every device and in every chunking.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def noise_sigma(image: Tensor, background_rms: float | Tensor, exposure_time: float | Tensor) -> Tensor:
    """Per-pixel noise standard deviation [counts/s] of a noiseless ``image`` [counts/s]."""
    return torch.sqrt(image.abs() / exposure_time + background_rms**2)


def draw_seeds(n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
    """``n`` independent 62-bit seeds for :func:`counter_normal`, int64 on ``device``."""
    return torch.randint(0, 2**62, (n,), generator=generator, device=device, dtype=torch.int64)


def add_noise(
    image: Tensor,
    background_rms: float | Tensor,
    exposure_time: float | Tensor,
    *,
    generator: torch.Generator | None = None,
    exact_poisson: bool = False,
) -> Tensor:
    """Return a batch of images ``(B, ..., H, W)`` plus background and shot noise [counts/s]."""
    if exact_poisson:
        counts = torch.poisson(image.clamp(min=0.0) * exposure_time, generator=generator)
        background = torch.randn(image.shape, generator=generator, dtype=image.dtype, device=image.device)
        return counts / exposure_time + background * background_rms
    seeds = draw_seeds(image.shape[0], generator, image.device).view(-1, *[1] * (image.dim() - 1))
    counter = torch.arange(image[0].numel(), device=image.device).view(image.shape[1:])
    standard = counter_normal(seeds, counter, image.dtype)
    return apply_gaussian_noise(image, standard, background_rms, exposure_time)


_GOLDEN_GAMMA = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed 64-bit integer
_MIX_1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MIX_2 = -7723592293110705685  # 0x94D049BB133111EB
_LOW_32 = 0xFFFFFFFF


def _logical_shift_right(z: Tensor, bits: int) -> Tensor:
    """``z >>> bits`` for int64 tensors (torch's ``>>`` is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(seed: Tensor, counter: Tensor) -> Tensor:
    """The ``counter``-th output of SplitMix64 (Steele, Lea & Flood 2014) started at ``seed``.

    int64 tensors that broadcast; arithmetic wraps modulo 2^64 as in the reference.
    """
    z = seed + (counter + 1) * _GOLDEN_GAMMA
    z = (z ^ _logical_shift_right(z, 30)) * _MIX_1
    z = (z ^ _logical_shift_right(z, 27)) * _MIX_2
    return z ^ _logical_shift_right(z, 31)


def counter_normal(seed: Tensor, counter: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal deviates, one per ``(seed, counter)`` pair (broadcast int64 tensors).

    Box-Muller on the two 32-bit halves of :func:`splitmix64`; deviates are exact normals
    up to the 32-bit resolution of the uniforms (|z| < 6.7).
    """
    bits = splitmix64(seed, counter)
    u1 = ((bits & _LOW_32).to(dtype) + 0.5) * (1.0 / 2**32)
    u2 = _logical_shift_right(bits, 32).to(dtype) * (1.0 / 2**32)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)


def counter_uniform(seed: Tensor, counter: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform deviates in (0, 1), one per ``(seed, counter)`` pair (broadcast int64 tensors): the
    low 32 bits of :func:`splitmix64`."""
    return ((splitmix64(seed, counter) & _LOW_32).to(dtype) + 0.5) * (1.0 / 2**32)


def drizzle_taps(correlation: Tensor) -> Tensor:
    """Taps ``(c, 1, c) / sqrt(1 + 2 c^2)`` ``(B, 3)`` of the separable 3 x 3 kernel that gives white
    noise of unit variance the nearest-neighbour correlation ``correlation`` (``(B,)``, in
    ``[0, 1/sqrt 2]``) along rows and columns, keeping its variance 1: noise as left by drizzling
    (Fruchter & Hook 2002) to first order. ``rho = 2 c / (1 + 2 c^2)``, so
    ``c = (1 - sqrt(1 - 2 rho^2)) / (2 rho)``."""
    rho = correlation.clamp(min=0.0, max=0.5**0.5)
    c = torch.where(rho > 0, (1 - torch.sqrt((1 - 2 * rho * rho).clamp(min=0))) / (2 * rho).clamp(min=1e-12), 0.0)
    taps = torch.stack([c, torch.ones_like(c), c], dim=-1)
    return taps / torch.sqrt(1 + 2 * c * c)[:, None]


def correlated_normal(seed: Tensor, counter: Tensor, correlation: Tensor) -> Tensor:
    """Unit-variance Gaussian noise ``(B, H, W)`` with nearest-neighbour correlation ``correlation``
    (``(B,)``): white :func:`counter_normal` deviates of the int64 ``counter`` grid ``(H + 2, W + 2)``
    through the per-image kernel of :func:`drizzle_taps` ("valid" convolution, so the border pixels
    are correlated like the rest). ``seed``: int64 ``(B, 1, 1)``."""
    height, width = counter.shape[0] - 2, counter.shape[1] - 2
    white = counter_normal(seed, counter, correlation.dtype)
    taps = drizzle_taps(correlation)[:, :, None, None]  # (B, 3, 1, 1)
    rows = sum(taps[:, t] * white[:, :, t : t + width] for t in range(3))
    return sum(taps[:, t] * rows[:, t : t + height, :] for t in range(3))


def apply_gaussian_noise(
    image: Tensor, standard_normal: Tensor, background_rms: float | Tensor, exposure_time: float | Tensor
) -> Tensor:
    """``image + standard_normal * noise_sigma(image)``: the noisy image for given unit normals.

    Separating the draw from the arithmetic lets the arithmetic be fused with rendering.
    """
    return image + standard_normal * noise_sigma(image, background_rms, exposure_time)
