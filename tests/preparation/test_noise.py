"""Noise maps beside an image: found by name, converted by kind, refused when malformed; without one and
without EXPTIME, the shot noise's exposure time estimated from the image (exposure_time=estimate)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from lenscnn.errors import UserError
from lenscnn.io.cutouts import Cutout
from lenscnn.preparation.noise import read_variance, shot_noise_exposure, variance_map
from lenscnn.preparation.pipeline import Preparation, prepare


def test_kinds_give_the_same_variance_and_no_data_is_infinite():
    sigma = np.full((4, 4), 0.02)
    sigma[0, 0] = np.inf
    ivm = np.where(np.isfinite(sigma), 1 / sigma**2, 0.0)
    for values, kind in ((ivm, "inverse_variance"), (sigma, "rms"), (sigma**2, "variance")):
        variance = variance_map(values, kind, (4, 4), "test")
        assert variance[0, 0] == np.inf
        np.testing.assert_allclose(variance[1:, 1:], 4e-4)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.ones((3, 4)), "shape"),
        (-np.ones((4, 4)), "negative"),
        (np.zeros((4, 4)), "no pixel with data"),
    ],
)
def test_malformed_maps_are_refused(values, message):
    with pytest.raises(UserError, match=message):
        variance_map(values, "inverse_variance", (4, 4), "test")


def write(path, *hdus):
    fits.HDUList([fits.PrimaryHDU(), *hdus]).writeto(path)


def test_auto_finds_a_weight_hdu_by_name_and_a_named_hdu_needs_a_kind(tmp_path):
    image = fits.ImageHDU(np.zeros((8, 8), dtype=np.float32), name="SCI")
    path = tmp_path / "lens.fits"
    write(path, image, fits.ImageHDU(np.full((8, 8), 2500.0, dtype=np.float32), name="WHT"))
    (variance,) = read_variance(path, "auto", "auto", [(8, 8)])
    np.testing.assert_allclose(variance, 4e-4)
    bare = tmp_path / "bare.fits"
    write(bare, image)
    assert read_variance(bare, "auto", "auto", [(8, 8)]) is None  # nothing to find: estimated instead
    odd = tmp_path / "odd.fits"
    write(odd, image, fits.ImageHDU(np.ones((8, 8), dtype=np.float32), name="EXTRA"))
    with pytest.raises(UserError, match="noise_kind"):
        read_variance(odd, "EXTRA", "auto", [(8, 8)])
    (variance,) = read_variance(odd, "EXTRA", "rms", [(8, 8)])
    np.testing.assert_allclose(variance, 1.0)
    with pytest.raises(UserError, match="shape"):
        read_variance(path, "auto", "auto", [(6, 6)])


def elliptical(exposure_time: float, correlation: float, seed: int = 1) -> tuple[np.ndarray, float]:
    """A de Vaucouleurs elliptical (R_e 1", 0.05"/px, peak ~13 counts/s) with background rms 0.012 and shot noise
    of ``exposure_time``, both correlated between neighbours by ``correlation`` (drizzle-like): ``(image, rms)``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:198, :198] - 98.5
    galaxy = ndimage.gaussian_filter(0.3 * np.exp(-7.67 * ((np.hypot(x, 1.3 * y) * 0.05) ** 0.25 - 1)), 1.5)
    kernel = np.array([[0, correlation / 4, 0], [correlation / 4, 1, correlation / 4], [0, correlation / 4, 0]])

    def noise() -> np.ndarray:
        field = ndimage.convolve(rng.standard_normal(galaxy.shape), kernel)
        return field / field.std()

    rms = 0.012
    return galaxy + rms * noise() + np.sqrt(galaxy / exposure_time) * noise(), rms


@pytest.mark.parametrize("exposure_time", [300.0, 1000.0, 3000.0])
@pytest.mark.parametrize("correlation", [0.0, 0.5])
def test_the_shot_noise_of_an_elliptical_gives_its_exposure_time(exposure_time, correlation):
    """Without EXPTIME, the exposure time behind the noise is found from the image within a factor 2 (the second
    differences of its bright, smooth pixels against their flux; mostly within 30%, the worst where the shot
    noise is weakest against the background, 3000 s)."""
    image, rms = elliptical(exposure_time, correlation)
    estimate = shot_noise_exposure(image, np.ones(image.shape, dtype=bool), rms)
    assert 0.5 * exposure_time < estimate < 2.0 * exposure_time


def test_no_shot_noise_is_found_in_pure_background():
    rng = np.random.default_rng(2)
    image = rng.normal(0.0, 0.01, (128, 128))
    assert shot_noise_exposure(image, np.ones(image.shape, dtype=bool), 0.01) is None


def test_preparation_estimates_the_exposure_time_only_when_the_header_lacks_it():
    image, _ = elliptical(500.0, 0.0)
    settings = Preparation(exposure_time="estimate", cosmic_rays=False)
    for header, estimated in ((fits.Header(), True), (fits.Header({"EXPTIME": 800.0}), False)):
        cutout = Cutout("x.fits", image, 0.05, None, header)
        record = prepare(cutout, settings, (64, 64), 0.05).record
        assert record["exposure_time_estimated"] is estimated
        expected = (0.5 * 500, 2.0 * 500) if estimated else (800.0, 800.0)
        assert expected[0] <= record["exposure_time"] <= expected[1]
    record = prepare(Cutout("x.fits", image, 0.05, None, fits.Header()), Preparation(), (64, 64), 0.05).record
    assert record["exposure_time"] is None and not record["exposure_time_estimated"]  # predict's default
    with pytest.raises(UserError, match="exposure_time='soon': give seconds"):
        Preparation(exposure_time="soon")
