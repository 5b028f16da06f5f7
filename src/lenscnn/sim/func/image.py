"""The noiseless lens image: lens equation, light profiles, pixel integration and PSF.

Pure function of a parameter mapping (names of DESIGN.md, each value of shape ``(B, 1, 1)``)
and a pixel grid, so it can be compiled and fused as one kernel.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from lenscnn.sim.func.grid import downsample
from lenscnn.sim.func.lens import shear_deflection, sie_deflection
from lenscnn.sim.func.light import sersic_profile
from lenscnn.sim.func.psf import convolve_fft, convolve_separable


def surface_brightness(x: Tensor, y: Tensor, params: Mapping[str, Tensor]) -> Tensor:
    """Lensed source plus lens light [counts/s/arcsec^2] at image-plane positions ``(x, y)``.

    Lens: SIE (``theta_E e1 e2 center_x center_y``) plus external shear about the origin
    when ``gamma1, gamma2`` are given. Source: elliptical Sersic (``source_*``). Lens light:
    elliptical Sersic centred on the lens when ``lens_light_amp`` is given.
    """
    p = params
    alpha_x, alpha_y = sie_deflection(x, y, p["theta_E"], p["e1"], p["e2"], p["center_x"], p["center_y"])
    if "gamma1" in p:
        shear_x, shear_y = shear_deflection(x, y, p["gamma1"], p["gamma2"])
        alpha_x, alpha_y = alpha_x + shear_x, alpha_y + shear_y
    flux = sersic_profile(
        x - alpha_x,
        y - alpha_y,
        p["source_amp"],
        p["source_R_sersic"],
        p["source_n_sersic"],
        p["source_e1"],
        p["source_e2"],
        p["source_center_x"],
        p["source_center_y"],
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
) -> Tensor:
    """Noiseless image [counts/s per pixel], shape ``(B, H, W)``.

    ``x, y`` is the (super-sampled) grid of :func:`~lenscnn.sim.func.grid.pixel_grid`;
    each pixel is the mean surface brightness over its sub-pixels times ``pixel_area``
    [arcsec^2], as lenstronomy's ``ImageModel``. The PSF is either a separable kernel
    (``psf_kernel_1d``, e.g. a Gaussian) or a 2-D ``psf_kernel`` applied by FFT (with its
    precomputed transform ``psf_kernel_fft``); with neither, no PSF is applied.
    """
    image = downsample(surface_brightness(x, y, params), supersampling) * pixel_area
    if psf_kernel_1d is not None:
        return convolve_separable(image, psf_kernel_1d)
    if psf_kernel is not None:
        return convolve_fft(image, psf_kernel, psf_kernel_fft)
    return image
