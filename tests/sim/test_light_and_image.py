"""Sersic light and rendered images against lenstronomy's ``LightModel`` and ``ImageModel``."""

import numpy as np
import pytest
import torch
from astropy.io import fits
from lenstronomy.LightModel.light_model import LightModel
from lenstronomy.Util.param_util import phi_q2_ellipticity
from scipy.stats import norm

from lenscnn.sim import func
from tests.helpers import lens_prior

PIXEL_SCALE = 0.08
SIZE = 48


def _sersic_sets(n: int = 20, seed: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed)
    sets = []
    for i in range(n):
        q = [1.0, 0.2][i] if i < 2 else rng.uniform(0.2, 1.0)
        e1, e2 = phi_q2_ellipticity(rng.uniform(0, np.pi), q)
        sets.append(
            {
                "amp": rng.uniform(0.1, 500.0),
                "R_sersic": float(np.exp(rng.uniform(np.log(0.005), np.log(2.0)))),
                "n_sersic": rng.uniform(0.3, 8.0),
                "e1": float(e1),
                "e2": float(e2),
                "center_x": rng.uniform(-0.5, 0.5),
                "center_y": rng.uniform(-0.5, 0.5),
            }
        )
    return sets


SERSIC_SETS = _sersic_sets()


@pytest.mark.parametrize("p", SERSIC_SETS, ids=[f"set{i}" for i in range(len(SERSIC_SETS))])
def test_sersic_profile_matches_lenstronomy(p, rng):
    """Random positions, plus the centre (inside lenstronomy's 1e-4 arcsec smoothing) and beyond 1000 R_sersic."""
    x, y = rng.uniform(-4.0, 4.0, (2, 500))
    x = np.concatenate([x, p["center_x"] + np.array([0.0, 3e-5, 0.0, 1001.0 * p["R_sersic"] * 2])])
    y = np.concatenate([y, p["center_y"] + np.array([0.0, 0.0, -2e-3, 0.0])])
    reference = LightModel(["SERSIC_ELLIPSE"]).surface_brightness(x, y, [p])
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in p.items()}
    ours = func.sersic_profile(torch.tensor(x), torch.tensor(y), *t.values()).numpy()
    assert reference[-1] == 0.0 and ours[-1] == 0.0  # outside lenstronomy's max_R_frac = 1000
    np.testing.assert_allclose(ours, reference, rtol=1e-10, atol=1e-300)


def test_sersic_profile_broadcasts_over_a_batch(rng):
    """``(B, 1, 1)`` parameters on an ``(H, W)`` grid, as the Simulator calls it: each image is its lens's profile."""
    sets = SERSIC_SETS[:4]
    x, y = func.pixel_grid(20, 24, 0.1, dtype=torch.float64)
    params = [torch.tensor([p[k] for p in sets], dtype=torch.float64)[:, None, None] for k in sets[0]]
    ours = func.sersic_profile(x, y, *params).numpy()
    assert ours.shape == (4, 20, 24)
    for k, p in enumerate(sets):
        reference = LightModel(["SERSIC_ELLIPSE"]).surface_brightness(x.numpy().ravel(), y.numpy().ravel(), [p])
        np.testing.assert_allclose(ours[k].ravel(), reference, rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("fwhm,pixel_scale", [(0.16, 0.08), (0.1, 0.04), (0.7, 0.2)])
def test_gaussian_kernel_is_the_pixel_integrated_gaussian_of_that_fwhm(fwhm, pixel_scale):
    kernel = func.gaussian_kernel_1d(fwhm, pixel_scale, dtype=torch.float64).numpy()
    size = kernel.size
    assert size % 2 == 1 and kernel.sum() == pytest.approx(1.0, abs=1e-12)
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2))) / pixel_scale  # pixels
    assert size // 2 >= 5 * sigma  # truncated at >= 5 sigma
    edges = np.arange(size + 1) - size / 2
    expected = np.diff(norm.cdf(edges / sigma))
    np.testing.assert_allclose(kernel, expected / expected.sum(), rtol=1e-10, atol=1e-15)
    offsets = np.arange(size) - size // 2
    assert np.sum(kernel * offsets) == pytest.approx(0.0, abs=1e-12)  # centred
    assert np.sum(kernel * offsets**2) == pytest.approx(sigma**2 + 1 / 12, rel=1e-3)  # width, incl. the pixel


def _write_psf(path, hdu: int = 0) -> np.ndarray:
    """An asymmetric, non-square, unnormalised kernel (flips and transposes would show) in a FITS file."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:7, :11]
    kernel = np.exp(-((xx - 6.3) ** 2 / 5.0 + (yy - 2.6) ** 2 / 2.0)) + 0.2 * rng.uniform(size=(7, 11))
    hdus = [fits.PrimaryHDU(kernel)] if hdu == 0 else [fits.PrimaryHDU(), fits.ImageHDU(kernel, name="PSF")]
    fits.HDUList(hdus).writeto(path)
    return kernel / kernel.sum()


CASES = {
    # name: (supersampling, psf kind, lens light, shear)
    "sie-shear-source-gaussian-ss1": (1, "gaussian", False, True),
    "sie-source-no-shear-gaussian-ss1": (1, "gaussian", False, False),
    "lens-light-gaussian-ss1": (1, "gaussian", True, True),
    "lens-light-gaussian-ss2": (2, "gaussian", True, True),
    "lens-light-fits-psf-ss1": (1, "fits", True, True),
    "lens-light-fits-psf-ss2-hdu1": (2, "fits-hdu1", True, True),
    "lens-light-no-psf-ss3": (3, "none", True, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_noiseless_images_match_lenstronomy_image_model(
    case, tmp_path, rng, make_sim, lens_params, batch, reference_image
):
    supersampling, psf_kind, lens_light, shear = CASES[case]
    if psf_kind == "gaussian":
        psf = {"type": "gaussian", "fwhm": 0.16}
        k1 = func.gaussian_kernel_1d(0.16, PIXEL_SCALE, dtype=torch.float64).numpy()
        kernel = np.outer(k1, k1)
    elif psf_kind.startswith("fits"):
        hdu = 1 if psf_kind.endswith("hdu1") else 0
        kernel = _write_psf(tmp_path / "psf.fits", hdu)
        psf = {"type": "pixel", "path": str(tmp_path / "psf.fits"), "hdu": hdu}
    else:
        psf, kernel = {"type": "none"}, None
    instrument = {"image_size": SIZE, "pixel_scale": PIXEL_SCALE, "supersampling": supersampling, "psf": psf}
    sim = make_sim(instrument, lens_prior(shear, lens_light), dtype="float64")
    params = [lens_params(rng, shear=shear, lens_light=lens_light) for _ in range(3)]
    images = sim.render(batch(params), noise=False)
    assert images.shape == (3, 1, SIZE, SIZE) and images.dtype == torch.float64
    for p, image in zip(params, images[:, 0].numpy(), strict=True):
        reference = reference_image(p, SIZE, PIXEL_SCALE, supersampling, kernel)
        peak = reference.max()
        assert peak > 0.1 and reference.sum() > 10 * peak  # an extended, non-trivial image
        # The issue asks for 1e-4 (total flux) and 1e-3 of the peak (per pixel); in float64 both
        # codes agree to rounding (~1e-14), so a much tighter bound is asserted.
        assert image.sum() == pytest.approx(reference.sum(), rel=1e-9)
        assert np.max(np.abs(image - reference)) <= 1e-9 * peak


@pytest.mark.parametrize("instrument_name", ["quickstart", "lsst", "euclid_vis", "hst_ensai"])
def test_shipped_instruments_float32_match_lenstronomy(
    instrument_name, rng, conf, make_sim, lens_params, batch, reference_image
):
    """The shipped presets, at their own image size, in the default float32: within the issue's tolerances."""
    instrument = conf("instrument", instrument_name)
    sim = make_sim(instrument, lens_prior())
    assert sim.dtype == torch.float32
    size, scale, s = instrument["image_size"], instrument["pixel_scale"], instrument["supersampling"]
    k1 = func.gaussian_kernel_1d(instrument["psf"]["fwhm"], scale, dtype=torch.float64).numpy()
    params = [lens_params(rng) for _ in range(2)]
    images = sim.render(batch(params, torch.float32), noise=False)
    assert images.shape == (2, 1, size, size) and images.dtype == torch.float32
    for p, image in zip(params, images[:, 0].double().numpy(), strict=True):
        reference = reference_image(p, size, scale, s, np.outer(k1, k1))
        assert image.sum() == pytest.approx(reference.sum(), rel=1e-4)
        assert np.max(np.abs(image - reference)) <= 1e-3 * reference.max()
