"""The noiseless image: library-galaxy light, pixel integration and PSF.

Pure functions of tensors (parameters of shape ``(B, 1, 1)``, grids ``(H, W)``), so that a whole
render can be compiled and fused as one kernel; which profiles make the surface brightness is
the lens model's business (:mod:`lenscnn.sim.lens_model`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from torch import Tensor

from lenscnn.sim.func.grid import downsample
from lenscnn.sim.func.light import interpolated_profile, sersic_total_flux
from lenscnn.sim.func.psf import convolve_fft, convolve_separable


class GalaxyStamps(NamedTuple):
    """A library of pixelated galaxies on the simulator's device.

    ``images``: ``(N, S, S)``, each stamp non-negative and summing to 1, its flux centroid at
    the stamp centre; ``r_half``: ``(N,)`` half-light radii [stamp pixels].
    """

    images: Tensor
    r_half: Tensor


def galaxy_light(
    x: Tensor,
    y: Tensor,
    sersic: Mapping[str, Tensor],
    galaxy: Tensor,
    phi_G: Tensor,
    flip: Tensor,
    galaxies: GalaxyStamps,
) -> Tensor:
    """Surface brightness [counts/s/arcsec^2] of library galaxies at ``(x, y)``.

    Galaxy ``galaxy`` of the library (an index, ``(B, 1, 1)``) is scaled to the half-light radius
    ``sersic["R_sersic"]`` [arcsec] and to the total flux of the Sersic profile of
    ``amp, R_sersic, n_sersic``, centred on ``center_x, center_y``, rotated by ``phi_G`` [rad] and
    mirrored where ``flip`` is 1. A negative index (a Sersic light in a mixture) draws galaxy 0,
    which the caller discards.
    """
    index = galaxy.reshape(-1).long().clamp(min=0)
    r_half = galaxies.r_half[index].to(sersic["R_sersic"].dtype).view(-1, 1, 1)
    scale = sersic["R_sersic"] / r_half  # arcsec per stamp pixel
    flux = sersic_total_flux(sersic["amp"], sersic["R_sersic"], sersic["n_sersic"])
    return interpolated_profile(
        x,
        y,
        galaxies.images[index],
        flux / (scale * scale),  # stamps sum to 1: total flux = amp * scale^2
        sersic["center_x"],
        sersic["center_y"],
        phi_G,
        scale,
        flip,
    )


def lens_image(
    flux: Tensor,
    pixel_area: float,
    supersampling: int = 1,
    psf_kernel_1d: Tensor | None = None,
    psf_kernel: Tensor | None = None,
    psf_kernel_fft: Tensor | None = None,
) -> Tensor:
    """Noiseless image [counts/s per pixel], shape ``(B, H, W)``, of a surface brightness.

    ``flux`` [counts/s/arcsec^2] is evaluated on the (super-sampled) grid of
    :func:`~lenscnn.sim.func.grid.pixel_grid`; each pixel is the mean surface brightness over its
    sub-pixels times ``pixel_area`` [arcsec^2], as lenstronomy's ``ImageModel``. The PSF is either
    a separable kernel (``psf_kernel_1d``, e.g. a Gaussian) or a 2-D ``psf_kernel`` applied by FFT
    (with its precomputed transform ``psf_kernel_fft``); with neither, no PSF is applied.
    """
    image = downsample(flux, supersampling) * pixel_area
    if psf_kernel_1d is not None:
        return convolve_separable(image, psf_kernel_1d)
    if psf_kernel is not None:
        return convolve_fft(image, psf_kernel, psf_kernel_fft)
    return image
