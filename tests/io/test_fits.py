"""The FITS file of ``lenscnn-simulate``: its WCS is what its description says, offsets from the image
centre in arcsec, as astropy reads it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS

from lenscnn.io.cutouts import pixel_scale_from_header
from lenscnn.io.fits import read_lens_dataset_fits, write_lens_dataset_fits


def test_lens_dataset_wcs_is_arcsec_offsets_from_the_image_centre(tmp_path):
    path = tmp_path / "lenses.fits"
    height, width, scale = 10, 8, 0.05
    write_lens_dataset_fits(path, np.zeros((2, 1, height, width)), {"theta_E": np.ones(2)}, scale, "a: 1")
    header = fits.getheader(path)
    assert [header["CUNIT1"], header["CUNIT2"]] == ["arcsec", "arcsec"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a header astropy has to fix or guess about fails here
        wcs = WCS(header, naxis=2)
    assert not wcs.has_celestial  # a linear offset, not a position on the sky
    assert wcs.world_axis_units == ["arcsec", "arcsec"]
    assert wcs.pixel_to_world_values((width - 1) / 2, (height - 1) / 2) == pytest.approx((0.0, 0.0))  # the centre
    x, y = wcs.pixel_to_world_values(0.0, 0.0)  # the centre of the first pixel
    assert (x * u.Unit(wcs.wcs.cunit[0])).to_value(u.arcsec) == pytest.approx(-(width - 1) / 2 * scale)
    assert (y * u.Unit(wcs.wcs.cunit[1])).to_value(u.arcsec) == pytest.approx(-(height - 1) / 2 * scale)
    assert pixel_scale_from_header(header, str(path)) == (pytest.approx(scale), None)  # read back as arcsec/pixel
    assert read_lens_dataset_fits(path)[2]["pixel_scale"] == pytest.approx(scale)
