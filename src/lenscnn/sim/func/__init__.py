"""Pure, batched, differentiable tensor functions of the lens simulator.

Angles in arcsec, surface brightness in counts/s/arcsec^2, images in counts/s per pixel.
Conventions are lenstronomy's (see ``docs/architecture.md``).
"""

from lenscnn.sim.func.cosmology import sis_einstein_radius
from lenscnn.sim.func.ellipticity import ellipticity_to_phi_q, phi_q_to_ellipticity, shear_polar_to_cartesian
from lenscnn.sim.func.epl import EPL_TERMS, epl_deflection, epl_terms
from lenscnn.sim.func.grid import downsample, pixel_grid
from lenscnn.sim.func.image import GalaxyStamps, galaxy_light, lens_image
from lenscnn.sim.func.lens import shear_deflection, sie_deflection
from lenscnn.sim.func.light import (
    elliptical_radius,
    interpolated_profile,
    sersic_b_n,
    sersic_profile,
    sersic_total_flux,
)
from lenscnn.sim.func.multipole import multipole_deflection
from lenscnn.sim.func.noise import add_noise, apply_gaussian_noise, counter_normal, draw_seeds, noise_sigma, splitmix64
from lenscnn.sim.func.psf import convolve_fft, convolve_separable, gaussian_kernel_1d, kernel_transform

__all__ = [
    "GalaxyStamps",
    "galaxy_light",
    "interpolated_profile",
    "sersic_total_flux",
    "add_noise",
    "apply_gaussian_noise",
    "convolve_fft",
    "counter_normal",
    "draw_seeds",
    "convolve_separable",
    "downsample",
    "elliptical_radius",
    "ellipticity_to_phi_q",
    "EPL_TERMS",
    "epl_deflection",
    "epl_terms",
    "gaussian_kernel_1d",
    "kernel_transform",
    "lens_image",
    "multipole_deflection",
    "noise_sigma",
    "phi_q_to_ellipticity",
    "pixel_grid",
    "sersic_b_n",
    "sersic_profile",
    "shear_deflection",
    "shear_polar_to_cartesian",
    "sie_deflection",
    "splitmix64",
    "sis_einstein_radius",
]
