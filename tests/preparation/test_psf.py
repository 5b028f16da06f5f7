"""PSF files: their FWHM (a pixel scale needed), and their kernel on the model's pixels for refine."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from lenscnn.errors import UserError
from lenscnn.preparation.pipeline import Preparation
from lenscnn.preparation.psf import kernel_at_scale, psf_fwhm, read_psf

SIGMA = 0.1 / (2 * np.sqrt(2 * np.log(2)))  # FWHM 0.1" [arcsec]


def gaussian(size: int, scale: float) -> np.ndarray:
    """A round Gaussian of FWHM 0.1" centred on the array (even sizes: between pixels), pixel-sampled."""
    y, x = (np.mgrid[:size, :size] - (size - 1) / 2) * scale
    return np.exp(-(x**2 + y**2) / (2 * SIGMA**2))


def test_fwhm_of_an_even_sided_kernel_and_the_setting(tmp_path):
    path = tmp_path / "psf.fits"
    fits.PrimaryHDU(gaussian(74, 0.0125), header=fits.Header({"PIXSCALE": 0.0125})).writeto(path)  # TinyTim-like sides
    kernel, scale = read_psf(path)
    assert scale == 0.0125 and kernel.sum() == pytest.approx(1.0)
    assert psf_fwhm(kernel, scale) == pytest.approx(0.1, rel=0.05)
    assert Preparation(psf=str(path)).given_psf_fwhm == pytest.approx(0.1, rel=0.05)


def test_a_psf_file_without_a_pixel_scale_or_flux_is_refused(tmp_path):
    bare = tmp_path / "bare.fits"
    fits.PrimaryHDU(gaussian(25, 0.02)).writeto(bare)
    with pytest.raises(UserError, match="PIXSCALE"):
        Preparation(psf=str(bare))
    empty = tmp_path / "empty.fits"
    fits.PrimaryHDU(np.zeros((5, 5)), header=fits.Header({"PIXSCALE": 0.02})).writeto(empty)
    with pytest.raises(UserError, match="no positive flux"):
        read_psf(empty)


def test_kernel_resampled_to_the_model_pixels_is_odd_centred_and_keeps_its_width():
    fine = gaussian(75, 0.016)  # odd, centred on a pixel: 5 fine pixels per 0.08" model pixel
    kernel = kernel_at_scale(fine / fine.sum(), 0.016, 0.08)
    assert kernel.shape[0] % 2 == 1 and kernel.shape[0] == kernel.shape[1]
    assert kernel.sum() == pytest.approx(1.0)
    centre = kernel.shape[0] // 2
    assert np.unravel_index(np.argmax(kernel), kernel.shape) == (centre, centre)
    # the pixel-integrated Gaussian of sigma 0.0425": the central pixel's share of the flux
    from scipy.special import erf

    share = erf(0.04 / (np.sqrt(2) * SIGMA)) ** 2
    assert kernel[centre, centre] == pytest.approx(share, rel=0.01)
    assert kernel_at_scale(fine / fine.sum(), 0.016, 0.08, radius=2).shape == (5, 5)
