"""Reading and shaping prediction inputs: pixel scale from WCS, resampling, cropping, refusals (the
preparation as the apps run it, with the sky and cosmic-ray steps off where only the geometry matters)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from lenscnn.errors import UserError
from lenscnn.io.cutouts import Cutout, find_inputs, pixel_scale_from_header, read_cutouts
from lenscnn.preparation.pipeline import Preparation, prepare
from tests.helpers import celestial_header


def test_pixel_scale_from_celestial_wcs_cd_matrix_and_pixscale():
    scale, wcs = pixel_scale_from_header(celestial_header(0.08, 64), "x")
    assert scale == pytest.approx(0.08, rel=1e-9) and wcs is not None and wcs.has_celestial
    header = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CD1_1": -0.1 / 3600, "CD2_2": 0.1 / 3600})
    header.update({"CD1_2": 0.0, "CD2_1": 0.0, "CRVAL1": 10.0, "CRVAL2": 0.0})
    assert pixel_scale_from_header(header, "x")[0] == pytest.approx(0.1, rel=1e-9)
    assert pixel_scale_from_header(fits.Header({"PIXSCALE": 0.05}), "x") == (0.05, None)
    assert pixel_scale_from_header(fits.Header(), "x") == (None, None)
    with pytest.raises(UserError, match="not square"):
        pixel_scale_from_header(celestial_header(0.08, 64, ratio=1.5), "x")
    for bad in (0.0, -0.05, "fine"):
        with pytest.raises(UserError, match="is not a positive number of arcsec/pixel"):
            pixel_scale_from_header(fits.Header({"PIXSCALE": bad}), "x")


AS_IS = Preparation(sky="none", cosmic_rays=False)


def test_centre_crop_and_pixel_mapping():
    image = np.arange(70 * 80, dtype=float).reshape(70, 80)
    prepared = prepare(Cutout("x", image, 0.08, None), AS_IS, (64, 64), 0.08)
    assert prepared.image.shape == (1, 64, 64)
    assert prepared.offset == (8.0, 3.0)
    np.testing.assert_array_equal(prepared.image[0].numpy(), image[3:67, 8:72])
    col, row = prepared.to_input_pixels(np.array(0.0), np.array(0.0))
    assert (col, row) == (8.0, 3.0)


def test_resampling_keeps_surface_brightness_and_maps_pixels():
    flat = np.full((128, 128), 2.0)  # counts/s per 0.04" pixel
    with pytest.raises(UserError, match="resample=true"):
        prepare(Cutout("x", flat, 0.04, None), Preparation(resample=False), (64, 64), 0.08)
    prepared = prepare(Cutout("x", flat, 0.04, None), AS_IS, (64, 64), 0.08)
    assert prepared.image.shape == (1, 64, 64)
    np.testing.assert_allclose(prepared.image.numpy(), 8.0, rtol=1e-6)  # 4x the pixel area
    # the model's central pixel corner (31.5, 31.5) is the input's centre (63.5, 63.5)
    col, row = prepared.to_input_pixels(np.array(31.5), np.array(31.5))
    assert (float(col), float(row)) == pytest.approx((63.5, 63.5))


def test_refusals_small_and_nan():
    with pytest.raises(UserError, match="smaller than the model"):
        prepare(Cutout("x", np.zeros((40, 70)), 0.08, None), AS_IS, (64, 64), 0.08)
    nan = np.random.default_rng(3).normal(0.0, 0.01, (64, 64))  # sky noise (exact zeros would be masked)
    nan[3, 4] = np.nan
    filled = prepare(Cutout("x", nan, 0.08, None), Preparation(sky="none", fill_nan=0.5), (64, 64), 0.08)
    assert float(filled.image[0, 3, 4]) == 0.5 and filled.mask[3, 4] and filled.mask.sum() == 1
    with pytest.raises(UserError, match="every pixel"):
        prepare(Cutout("x", np.full((64, 64), np.nan), 0.08, None), AS_IS, (64, 64), 0.08)


def test_find_and_read_inputs(tmp_path):
    for k in range(3):
        fits.PrimaryHDU(np.zeros((64, 64)), header=celestial_header(0.08, 64)).writeto(tmp_path / f"l{k}.fits")
    fits.PrimaryHDU(np.zeros((2, 64, 64))).writeto(tmp_path / "cube.fits")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in find_inputs(str(tmp_path))] == ["cube.fits", "l0.fits", "l1.fits", "l2.fits"]
    assert [p.name for p in find_inputs(str(tmp_path / "l*.fits"))] == ["l0.fits", "l1.fits", "l2.fits"]
    cube = list(read_cutouts(tmp_path / "cube.fits"))
    assert [c.label.rsplit("/", 1)[-1] for c in cube] == ["cube.fits[0]", "cube.fits[1]"]
    with pytest.raises(UserError, match="no such file"):
        find_inputs(str(tmp_path / "missing.fits"))
    with pytest.raises(UserError, match="matches no files"):
        find_inputs(str(tmp_path / "*.fz"))
    with pytest.raises(UserError, match="not a readable FITS"):
        list(read_cutouts(tmp_path / "notes.txt"))
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "D", array=[1.0])])]).writeto(
        tmp_path / "table.fits"
    )
    with pytest.raises(UserError, match="holds no image"):
        list(read_cutouts(tmp_path / "table.fits", hdu=1))
