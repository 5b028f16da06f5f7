"""Point-spread functions and convolution (pure, batched, differentiable).

Kernels are normalised to unit sum, have odd sizes and are centred on their central
pixel. Convolution treats the image as zero outside its borders, as lenstronomy's
pixel-kernel convolution (``scipy.signal.fftconvolve(..., mode="same")``) does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def gaussian_kernel_1d(
    fwhm: float,
    pixel_scale: float,
    truncate: float = 5.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Pixel-integrated 1-D Gaussian of full width at half maximum ``fwhm`` [arcsec].

    The kernel extends to ``truncate`` standard deviations (at least one pixel either
    side) and sums to one. The 2-D Gaussian PSF is its outer product with itself.
    """
    sigma = fwhm / FWHM_PER_SIGMA / pixel_scale  # in pixels
    radius = max(1, math.ceil(truncate * sigma))
    kernel = gaussian_pixel_fractions(torch.tensor([[sigma]], dtype=torch.float64), radius)[0]
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def gaussian_pixel_fractions(sigma: Tensor, radius: int) -> Tensor:
    """The share of a 1-D Gaussian of standard deviation ``sigma`` [pixels] ``(B, 1)`` in each pixel
    ``-radius .. radius`` around its centre: ``(B, 2 radius + 1)`` differences of its CDF at the pixel
    edges (not renormalised to the cut kernel)."""
    edges = torch.arange(-radius, radius + 2, dtype=sigma.dtype, device=sigma.device) - 0.5
    cdf = 0.5 * (1.0 + torch.erf(edges / (sigma * math.sqrt(2.0))))
    return cdf[..., 1:] - cdf[..., :-1]


def convolve_separable(image: Tensor, kernel_1d: Tensor) -> Tensor:
    """Convolve the last two axes of ``image`` with ``outer(kernel_1d, kernel_1d)``.

    Written as a sum of shifted copies so that a compiler fuses it with the rest of
    the rendering; the cost is ``2 K`` multiply-adds per pixel for a ``K``-tap kernel.
    """
    size = kernel_1d.shape[0]
    r = size // 2
    h, w = image.shape[-2:]
    flipped = kernel_1d.flip(0)
    padded = torch.nn.functional.pad(image, (r, r, r, r))  # zeros outside the image
    rows = sum(flipped[t] * padded[..., :, t : t + w] for t in range(size))
    return sum(flipped[t] * rows[..., t : t + h, :] for t in range(size))


def smooth_fft_length(n: int) -> int:
    """Smallest integer ``>= n`` with no prime factor above 5 (fast FFT length)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def kernel_transform(kernel: Tensor, image_shape: tuple[int, int]) -> Tensor:
    """Real FFT of ``kernel`` (``(K, K)``, or ``(B, K, K)`` per image) zero-padded for
    :func:`convolve_fft` on images of ``image_shape``."""
    h, w = image_shape
    kh, kw = kernel.shape[-2:]
    fft_shape = (smooth_fft_length(h + kh - 1), smooth_fft_length(w + kw - 1))
    return torch.fft.rfft2(kernel, s=fft_shape)


def convolve_fft(image: Tensor, kernel: Tensor, kernel_fft: Tensor | None = None) -> Tensor:
    """Convolve the last two axes of ``image`` with a 2-D ``kernel`` through the FFT.

    ``kernel`` is one ``(K, K)`` kernel for every image or a batch ``(B, K, K)``, one per image of
    ``image`` ``(B, H, W)``. Pass ``kernel_fft = kernel_transform(kernel, image.shape[-2:])`` to reuse the kernel's
    transform between calls. The output has the shape of ``image`` ("same" mode).
    """
    h, w = image.shape[-2:]
    kh, kw = kernel.shape[-2:]
    if kernel_fft is None:
        kernel_fft = kernel_transform(kernel, (h, w))
    fft_shape = (smooth_fft_length(h + kh - 1), smooth_fft_length(w + kw - 1))
    full = torch.fft.irfft2(torch.fft.rfft2(image, s=fft_shape) * kernel_fft, s=fft_shape)
    top, left = kh // 2, kw // 2
    return full[..., top : top + h, left : left + w]


def gaussian_kernels(fwhm: Tensor, pixel_scale: float, radius: int) -> Tensor:
    """Pixel-integrated Gaussian PSFs, one per image: ``(B, 2 radius + 1, 2 radius + 1)``, each summing
    to one, for full widths at half maximum ``fwhm`` [arcsec] of shape ``(B,)``."""
    kernel_1d = gaussian_pixel_fractions((fwhm / FWHM_PER_SIGMA / pixel_scale)[:, None], radius)
    kernel = kernel_1d[:, :, None] * kernel_1d[:, None, :]
    return kernel / kernel.sum(dim=(-2, -1), keepdim=True)


def moffat_alpha(fwhm: Tensor, beta: Tensor) -> Tensor:
    """Moffat core width ``alpha`` [same unit as ``fwhm``]: ``fwhm = 2 alpha sqrt(2^(1/beta) - 1)``
    (lenstronomy's ``MOFFAT`` light profile and Moffat 1969)."""
    return fwhm / (2.0 * torch.sqrt(torch.pow(2.0, 1.0 / beta) - 1.0))


def moffat_kernels(fwhm: Tensor, beta: Tensor, pixel_scale: float, radius: int, oversampling: int = 5) -> Tensor:
    """Moffat PSFs ``(1 + r^2 / alpha^2)^-beta``, one per image: ``(B, 2 radius + 1, 2 radius + 1)``,
    averaged over ``oversampling^2`` sub-pixels per pixel and normalised to unit sum (the wings beyond
    ``radius`` pixels are cut). ``fwhm`` [arcsec] and ``beta`` have shape ``(B,)``."""
    size = 2 * radius + 1
    offsets = (torch.arange(oversampling, dtype=fwhm.dtype, device=fwhm.device) + 0.5) / oversampling - 0.5
    axis = ((torch.arange(size, dtype=fwhm.dtype, device=fwhm.device) - radius)[:, None] + offsets).reshape(-1)
    r2 = (axis[:, None] ** 2 + axis[None, :] ** 2) * pixel_scale**2
    alpha = moffat_alpha(fwhm, beta)[:, None, None]
    fine = torch.pow(1.0 + r2 / alpha**2, -beta[:, None, None])
    kernel = fine.reshape(-1, size, oversampling, size, oversampling).mean(dim=(-3, -1))
    return kernel / kernel.sum(dim=(-2, -1), keepdim=True)


def kernel_fwhm(kernel: Tensor, pixel_scale: float) -> Tensor:
    """Full width at half maximum [arcsec] of PSF kernels ``(..., K, K)``: the diameter of the disk
    whose area is that of the pixels above half the peak (exact for a round, well-sampled PSF)."""
    peak = kernel.amax(dim=(-2, -1), keepdim=True)
    area = (kernel >= 0.5 * peak).sum(dim=(-2, -1)).to(kernel.dtype)
    return 2.0 * torch.sqrt(area / math.pi) * pixel_scale
