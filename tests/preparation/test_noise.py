"""Noise maps beside an image: found by name, converted by kind, refused when malformed."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from lenscnn.errors import UserError
from lenscnn.preparation.noise import read_variance, variance_map


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
