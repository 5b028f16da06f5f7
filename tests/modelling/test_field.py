"""The fit's field: a square grid holding the lens region (1.5 theta_E + 0.3" around the predicted centre) and the
PSF's border, between the network's grid and the cutout, sharing the network grid's centre (or saying where it
lies); sources centred outside the region are masked (segmented after the lens galaxy's profile is
subtracted), the arcs and the lens galaxy are not; bad settings are one line."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from lenscnn.errors import UserError
from lenscnn.io.cutouts import Cutout
from lenscnn.modelling.field import FitField, centre_pixel, lens_region, neighbour_mask
from lenscnn.modelling.inputs import FieldPlan, image_key
from lenscnn.preparation.pipeline import Preparation, prepare
from lenscnn.sim import Instrument
from tests.helpers import load_conf


def test_the_field_holds_the_lens_region_and_the_psf_border():
    field = FitField()
    lens = {"theta_E": 1.5, "center_x": 0.1, "center_y": -0.2}
    # radius 1.5 * 1.5 + 0.3 = 2.55", + 0.2" off centre: 2 * ceil(2.75 / 0.08) + 1 + 2 * 11 = 93 -> even as 64: 94
    assert field.size(lens, 0.08, 11, (64, 64), (124, 124)) == (94, 94)
    assert field.size({"theta_E": 0.5}, 0.08, 2, (64, 64), (124, 124)) == (64, 64)  # never below the network's
    assert field.size(lens, 0.08, 11, (64, 64), (81, 90)) == (80, 80)  # never beyond the cutout, same parity
    assert FitField(reach=2.0, margin=0.0).radius(1.2) == pytest.approx(2.4)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"reach": -1}, "field.reach=-1: give a number > 0 or null"),
        ({"margin": "wide"}, "field.margin='wide'"),
        ({"npixels": 0}, "field.npixels=0: give an integer >= 1"),
        ({"neighbours": "yes"}, "field.neighbours='yes': give true or false"),
        ({"radius": 2}, "field: unknown keys \\['radius'\\]"),
    ],
)
def test_bad_field_settings_are_one_line(settings, message):
    with pytest.raises(UserError, match=message):
        FitField.from_config(settings)


def blob(shape, row, col, sigma, amplitude, axis_ratio=1.0):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return amplitude * np.exp(-0.5 * (((rows - row) / (sigma * axis_ratio)) ** 2 + ((cols - col) / sigma) ** 2))


def test_a_neighbour_is_masked_where_it_reaches_into_the_lens_region_and_the_arcs_are_not():
    """A lens galaxy, two arcs at theta_E = 1.2" and a neighbour 3" away whose light reaches the region."""
    shape, scale, rms = (96, 96), 0.08, 0.01
    centre = centre_pixel(shape, 0.0, 0.0, scale)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    radius, angle = np.hypot(rows - centre[0], cols - centre[1]) * scale, np.arctan2(rows - centre[0], cols - centre[1])
    arcs = 0.5 * np.exp(-0.5 * ((radius - 1.2) / 0.06) ** 2) * (np.cos(angle) ** 8)
    galaxy = blob(shape, *centre, 4.0, 1.0)
    neighbour = blob(shape, centre[0], centre[1] + 3.0 / scale, 5.0, 0.6)
    image = galaxy + arcs + neighbour + np.random.default_rng(3).normal(0.0, rms, shape)
    use = np.ones(shape, dtype=bool)
    region = 1.5 * 1.2 + 0.3
    mask, count = neighbour_mask(image, np.full(shape, rms), use, centre, region / scale, FitField())
    assert count >= 1  # (a noise peak far out may count too)
    assert mask[int(centre[0]), int(centre[1] + 3.0 / scale)]  # the neighbour's centre
    assert mask[int(centre[0]), int(centre[1] + 1.9 / scale)]  # where its light reaches into the region
    assert not (mask & (arcs > 5 * rms)).any() and not mask[int(centre[0]), int(centre[1])]
    assert lens_region(shape, centre, region / scale).sum() == pytest.approx(np.pi * (region / scale) ** 2, rel=0.02)


def test_the_plan_says_where_the_networks_grid_centre_lies_on_the_fit_grid():
    """A star at a known place of a 0.05"/px cutout is at x_net on the network's 64 px grid of 0.08" and at
    x_net + shift on the fit's larger grid (both prepared as refine prepares them)."""
    shape = (199, 199)  # odd: the 0.08" grids' centres differ from the cutout's by parts of a pixel
    image = blob(shape, 110.3, 83.6, 1.2, 5.0) + np.random.default_rng(1).normal(0.0, 0.01, shape)
    cutout = Cutout("/data/star.fits", image, 0.05, None, fits.Header())
    instrument = Instrument.from_config(load_conf("instrument", "quickstart"))
    settings = Preparation(cosmic_rays=False)
    plan = FieldPlan(FitField(), {image_key(cutout.label): {"theta_E": 2.0}}, instrument, settings, None)
    size = plan(cutout)
    assert size[0] > 64 and size[0] == size[1] and size[0] % 2 == 0

    def position(grid):
        prepared = prepare(cutout, settings, grid, 0.08).image[0].numpy()
        weights = np.clip(prepared, 0, None) * (prepared > 1.0)
        rows, cols = np.mgrid[: grid[0], : grid[1]]
        x = ((cols - (grid[1] - 1) / 2) * weights).sum() / weights.sum() * 0.08
        y = ((rows - (grid[0] - 1) / 2) * weights).sum() / weights.sum() * 0.08
        return x, y

    (x_net, y_net), (x_fit, y_fit) = position((64, 64)), position(size)
    shift = plan.shifts[cutout.label]
    assert x_fit == pytest.approx(x_net + shift[0], abs=0.004) and y_fit == pytest.approx(y_net + shift[1], abs=0.004)
