"""The noiseless lens image: lens equation, light profiles, pixel integration and PSF.

Pure function of a parameter mapping (names of :mod:`lenscnn.params`, each value of shape ``(B, 1, 1)``)
and a pixel grid, so it can be compiled and fused as one kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor

from lenscnn.sim.func.grid import downsample
from lenscnn.sim.func.lens import shear_deflection, sie_deflection
from lenscnn.sim.func.light import interpolated_profile, sersic_profile, sersic_total_flux
from lenscnn.sim.func.psf import convolve_fft, convolve_separable


class GalaxyStamps(NamedTuple):
    """A library of pixelated galaxies on the simulator's device.

    ``images``: ``(N, S, S)``, each stamp non-negative and summing to 1, its flux centroid at
    the stamp centre; ``r_half``: ``(N,)`` half-light radii [stamp pixels].
    """

    images: Tensor
    r_half: Tensor


def galaxy_source(x: Tensor, y: Tensor, params: Mapping[str, Tensor], galaxies: GalaxyStamps) -> Tensor:
    """Surface brightness [counts/s/arcsec^2] of real-galaxy sources at source-plane ``(x, y)``.

    Galaxy ``source_galaxy`` of the library is scaled to the half-light radius
    ``source_R_sersic`` [arcsec] and to the total flux of the Sersic profile of
    ``source_amp, source_R_sersic, source_n_sersic``, centred on ``source_center_x/y``,
    rotated by ``source_phi_G`` [rad] and mirrored when ``source_flip`` is 1. A negative
    index (a Sersic source in a mixture) draws galaxy 0, which the caller discards.
    """
    p = params
    index = p["source_galaxy"].reshape(-1).long().clamp(min=0)
    r_half = galaxies.r_half[index].to(p["source_R_sersic"].dtype).view(-1, 1, 1)
    scale = p["source_R_sersic"] / r_half  # arcsec per stamp pixel
    flux = sersic_total_flux(p["source_amp"], p["source_R_sersic"], p["source_n_sersic"])
    return interpolated_profile(
        x,
        y,
        galaxies.images[index],
        flux / (scale * scale),  # stamps sum to 1: total flux = amp * scale^2
        p["source_center_x"],
        p["source_center_y"],
        p["source_phi_G"],
        scale,
        p["source_flip"],
    )


def sersic_source(x: Tensor, y: Tensor, params: Mapping[str, Tensor]) -> Tensor:
    """Surface brightness [counts/s/arcsec^2] of elliptical Sersic sources (``source_*``)."""
    p = params
    return sersic_profile(
        x,
        y,
        p["source_amp"],
        p["source_R_sersic"],
        p["source_n_sersic"],
        p["source_e1"],
        p["source_e2"],
        p["source_center_x"],
        p["source_center_y"],
    )


def surface_brightness(
    x: Tensor,
    y: Tensor,
    params: Mapping[str, Tensor],
    galaxies: GalaxyStamps | None = None,
    galaxy_fraction: float = 0.0,
) -> Tensor:
    """Lensed source plus lens light [counts/s/arcsec^2] at image-plane positions ``(x, y)``.

    Lens: SIE (``theta_E e1 e2 center_x center_y``) plus external shear about the origin
    when ``gamma1, gamma2`` are given. Source: elliptical Sersic (``source_*``); with a
    galaxy library, a real galaxy (:func:`galaxy_source`) for every lens when
    ``galaxy_fraction`` is 1, else for the lenses whose ``source_galaxy`` index is not
    negative (a mixture). Lens light: elliptical Sersic centred on the lens when
    ``lens_light_amp`` is given.
    """
    p = params
    alpha_x, alpha_y = sie_deflection(x, y, p["theta_E"], p["e1"], p["e2"], p["center_x"], p["center_y"])
    if "gamma1" in p:
        shear_x, shear_y = shear_deflection(x, y, p["gamma1"], p["gamma2"])
        alpha_x, alpha_y = alpha_x + shear_x, alpha_y + shear_y
    beta_x, beta_y = x - alpha_x, y - alpha_y
    if galaxies is None or galaxy_fraction <= 0.0:
        flux = sersic_source(beta_x, beta_y, p)
    elif galaxy_fraction >= 1.0:
        flux = galaxy_source(beta_x, beta_y, p, galaxies)
    else:
        flux = torch.where(
            p["source_galaxy"] >= 0, galaxy_source(beta_x, beta_y, p, galaxies), sersic_source(beta_x, beta_y, p)
        )
    if "lens_light_amp" in p:
        flux = flux + sersic_profile(
            x,
            y,
            p["lens_light_amp"],
            p["lens_light_R_sersic"],
            p["lens_light_n_sersic"],
            p["lens_light_e1"],
            p["lens_light_e2"],
            p["center_x"],
            p["center_y"],
        )
    return flux


def lens_image(
    x: Tensor,
    y: Tensor,
    params: Mapping[str, Tensor],
    pixel_area: float,
    supersampling: int = 1,
    psf_kernel_1d: Tensor | None = None,
    psf_kernel: Tensor | None = None,
    psf_kernel_fft: Tensor | None = None,
    galaxies: GalaxyStamps | None = None,
    galaxy_fraction: float = 0.0,
) -> Tensor:
    """Noiseless image [counts/s per pixel], shape ``(B, H, W)``.

    ``x, y`` is the (super-sampled) grid of :func:`~lenscnn.sim.func.grid.pixel_grid`;
    each pixel is the mean surface brightness over its sub-pixels times ``pixel_area``
    [arcsec^2], as lenstronomy's ``ImageModel``. The PSF is either a separable kernel
    (``psf_kernel_1d``, e.g. a Gaussian) or a 2-D ``psf_kernel`` applied by FFT (with its
    precomputed transform ``psf_kernel_fft``); with neither, no PSF is applied. ``galaxies``
    and ``galaxy_fraction``: real-galaxy sources, as in :func:`surface_brightness`.
    """
    flux = surface_brightness(x, y, params, galaxies, galaxy_fraction)
    image = downsample(flux, supersampling) * pixel_area
    if psf_kernel_1d is not None:
        return convolve_separable(image, psf_kernel_1d)
    if psf_kernel is not None:
        return convolve_fft(image, psf_kernel, psf_kernel_fft)
    return image
