"""The fit's PSF kernel cut to its core: most of its flux kept, the image lenstronomy convolves with it nearly
unchanged, and the fit's border then that of the kernel it uses."""

from __future__ import annotations

import numpy as np
import pytest

from lenscnn.modelling.pixels import EDGE_TAIL, psf_core, tail_radius


def moffat(size: int, fwhm: float, beta: float = 2.5) -> np.ndarray:
    """A Moffat kernel of ``size`` pixels square (odd), ``fwhm`` pixels: the wide wings of a space PSF."""
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    y, x = np.mgrid[:size, :size] - size // 2
    kernel = (1 + (x**2 + y**2) / alpha**2) ** -beta
    return kernel / kernel.sum()


def test_the_core_keeps_the_flux_within_its_tail_radius():
    kernel = moffat(45, 2.5)
    core = psf_core(kernel)
    radius = tail_radius(kernel) + 1
    assert core.shape == (2 * radius + 1,) * 2 and core.shape[0] < 45
    assert core.sum() == pytest.approx(1.0)
    centre = 22
    kept = kernel[centre - radius : centre + radius + 1, centre - radius : centre + radius + 1].sum()
    assert kept > 1 - 4 * EDGE_TAIL  # at most the tail beyond it along either side of either axis
    assert core == pytest.approx(
        kernel[centre - radius : centre + radius + 1, centre - radius : centre + radius + 1] / kept
    )
    assert psf_core(moffat(9, 2.5)) is not None and psf_core(moffat(9, 2.5)).shape == (9, 9)  # already small: kept


def test_an_image_convolved_with_the_core_is_the_image_convolved_with_the_whole_kernel():
    """lenstronomy convolves a Sersic galaxy (a lens galaxy's core and envelope) with both kernels: they differ
    by less than 1.2% where the light is above a tenth of its peak and by less than 3% anywhere (the core,
    normalised, puts the wings' ~1% of flux nearer the centre)."""
    from lenstronomy.ImSim.Numerics.convolution import PixelKernelConvolution
    from lenstronomy.LightModel.light_model import LightModel

    y, x = (np.mgrid[:80, :80] - 39.5) * 0.08
    galaxy = (
        LightModel(["SERSIC_ELLIPSE"])
        .surface_brightness(
            x.ravel(),
            y.ravel(),
            [{"amp": 10.0, "R_sersic": 0.6, "n_sersic": 4.0, "e1": 0.1, "e2": 0.0, "center_x": 0.0, "center_y": 0.0}],
        )
        .reshape(80, 80)
    )
    kernel = moffat(45, 2.5)
    whole = PixelKernelConvolution(kernel).convolution2d(galaxy)
    core = PixelKernelConvolution(psf_core(kernel)).convolution2d(galaxy)
    difference = np.abs(core / whole - 1)
    assert difference[whole > 0.1 * whole.max()].max() < 0.012 and difference.max() < 0.03
