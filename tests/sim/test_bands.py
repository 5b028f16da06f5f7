"""Bands: a multi-band instrument renders each light component in every band with its colour, each band
with its own PSF and noise, checked band by band against lenstronomy; its first band is the single-band
render of the same lenses; and a single-band instrument renders as it always has."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lenscnn.errors import UserError
from lenscnn.sim import Simulator, func
from lenscnn.sim.colours import colour_name
from tests.helpers import lens_prior, lenstronomy_image, load_conf

SIZE, SCALE = 40, 0.08
BANDS = [
    {
        "name": "r",
        "psf": {"type": "gaussian", "fwhm": 0.16},
        "noise": {"background_rms": 0.01, "exposure_time": 1000.0},
        "zero_point": 0.0,
    },
    {
        "name": "i",
        "psf": {"type": "gaussian", "fwhm": 0.24},
        "noise": {"background_rms": 0.02, "exposure_time": 800.0},
        "zero_point": 0.3,
    },
    {
        "name": "z",
        "psf": {"type": "none"},
        "noise": {"background_rms": 0.03, "exposure_time": 600.0},
        "zero_point": -0.2,
    },
]
COLOURS = {
    "source": {"i": {"dist": "uniform", "low": -0.5, "high": 0.0}, "z": {"dist": "uniform", "low": -0.8, "high": 0.2}},
    "lens_light": {
        "i": {"dist": "uniform", "low": -1.5, "high": -1.0},
        "z": {"dist": "uniform", "low": -2.0, "high": -1.2},
    },
}


def instrument(bands: list[dict]) -> dict:
    return {"name": "three", "image_size": SIZE, "pixel_scale": SCALE, "bands": bands}


def simulator(bands: list[dict] = BANDS, colours: dict | None = COLOURS, **config) -> Simulator:
    return Simulator.from_config(
        {"instrument": instrument(bands), "prior": lens_prior(), "colours": colours, "dtype": "float64", **config}
    )


def kernel_of(psf: dict) -> np.ndarray | None:
    if psf["type"] == "none":
        return None
    k1 = func.gaussian_kernel_1d(psf["fwhm"], SCALE, dtype=torch.float64).numpy()
    return np.outer(k1, k1)


def test_each_band_is_lenstronomys_image_of_the_lights_in_their_colours(lens_params, batch):
    """Band b of a lens is lenstronomy's image of the same lens with each light's amplitude times
    10**(-0.4 (colour - (zero point_b - zero point_r))), convolved with band b's PSF: to 1e-9 of the peak."""
    sim = simulator()
    rng = np.random.default_rng(4)
    lenses = [lens_params(rng) for _ in range(3)]
    params = batch(lenses)
    params.update(sim.colours.sample(3, torch.Generator().manual_seed(1), dtype=torch.float64))
    images = sim.render(params, noise=False)
    assert images.shape == (3, 3, SIZE, SIZE)
    for k, lens in enumerate(lenses):
        for b, band in enumerate(BANDS):
            offset = band.get("zero_point", 0.0)
            scaled = dict(lens)
            for component in ("source", "lens_light"):
                colour = 0.0 if b == 0 else float(params[colour_name(component, band["name"])][k])
                scaled[f"{component}_amp"] = lens[f"{component}_amp"] * 10 ** (-0.4 * (colour - offset))
            reference = lenstronomy_image(scaled, SIZE, SCALE, 1, kernel_of(band["psf"]))
            difference = np.abs(images[k, b].numpy() - reference).max()
            assert difference <= 1e-9 * reference.max(), (k, band["name"], difference / reference.max())


def test_the_first_band_is_the_single_band_image_of_the_same_lenses():
    """The same lens stream seen in three bands or in the first alone: the same lenses (colours come from
    a stream of their own) and the same first-band image, noise included, bit for bit."""
    three, one = simulator(), simulator(bands=BANDS[:1])
    images, params = three.sample(8, three.make_generator(3))
    alone, params_alone = one.sample(8, one.make_generator(3))
    assert images.shape == (8, 3, SIZE, SIZE) and alone.shape == (8, 1, SIZE, SIZE)
    assert torch.equal(images[:, :1], alone)
    assert all(torch.equal(params[name], params_alone[name]) for name in params_alone)
    assert {colour_name(c, b) for c in COLOURS for b in ("i", "z")} <= set(params)
    # each band has its own noise: the other bands' residuals are not the first band's
    noiseless = three.render(params, noise=False)
    residual = (images - noiseless).flatten(2)
    assert abs(float(torch.corrcoef(torch.stack([residual[0, 0], residual[0, 1]]))[0, 1])) < 0.1


def test_an_instrument_of_one_listed_band_renders_as_the_instrument_without_bands():
    listed = Simulator.from_config(
        {
            "instrument": {"name": "q", "image_size": SIZE, "pixel_scale": SCALE, "bands": BANDS[:1]},
            "prior": lens_prior(),
        }
    )
    plain = Simulator.from_config(
        {
            "instrument": {
                "name": "q",
                "image_size": SIZE,
                "pixel_scale": SCALE,
                **{k: BANDS[0][k] for k in ("psf", "noise")},
            },
            "prior": lens_prior(),
        }
    )
    assert torch.equal(listed.sample(6, listed.make_generator(1))[0], plain.sample(6, plain.make_generator(1))[0])


def test_colours_are_drawn_as_configured_and_tied_components_share_them():
    sim = simulator()
    draws = sim.colours.sample(4000, torch.Generator().manual_seed(0))
    lens_i = draws[colour_name("lens_light", "i")]
    assert float(lens_i.min()) >= -1.5 and float(lens_i.max()) <= -1.0 and abs(float(lens_i.mean()) + 1.25) < 0.02
    tied = Simulator.from_config(
        {
            "instrument": instrument(BANDS),
            "prior": lens_prior(),
            "colours": {"source": COLOURS["source"], "lens_light": "source"},
        }
    )
    assert tied.colours.names == [colour_name("source", b) for b in ("i", "z")]
    params = tied.colours.sample(5, torch.Generator().manual_seed(0), dtype=torch.float64)
    like = torch.zeros(5, 1, 1, dtype=torch.float64)
    assert torch.equal(tied.colours.weights("lens_light", params, like), tied.colours.weights("source", params, like))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colours": {"sorce": COLOURS["source"]}}, "colours.sorce: not a light component of the prior"),
        (
            {"colours": {"source": {"i": COLOURS["source"]["i"]}}},
            "colours.source: give its colour m(band) - m(r) in each of ['i', 'z']",
        ),
        ({"colours": {"source": "lens_light"}}, "colours.source: 'lens_light' is no component with colours drawn"),
        (
            {"observation": load_conf("observation", "noise_x3")},
            "observation: per-image nuisances are built for one band",
        ),
        ({"bands": [BANDS[0], BANDS[0]]}, "instrument.bands: band names must differ"),
        (
            {"bands": [{**BANDS[0], "name": "r-band"}]},
            "instrument.bands[0]: each band needs a name that is an identifier",
        ),
        ({"bands": []}, "instrument.bands must be a non-empty list"),
        ({"bands": [{k: v for k, v in BANDS[0].items() if k != "zero_point"}, BANDS[1]]}, "instrument.bands: give"),
        (
            {"bands": [{**BANDS[0], "noise": {"background_rms": -1}}]},
            "instrument.bands[0].noise.background_rms must be >= 0",
        ),
    ],
)
def test_bad_bands_and_colours_are_refused_in_one_line(change, message):
    bands = change.pop("bands", BANDS)
    config = {"colours": COLOURS, **change}
    with pytest.raises(UserError) as error:
        Simulator.from_config({"instrument": instrument(bands), "prior": lens_prior(), **config})
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_bands_and_a_top_level_psf_are_refused_together():
    with pytest.raises(UserError, match="with bands, give each band its psf and noise"):
        Simulator.from_config({"instrument": {**instrument(BANDS), "psf": {"type": "none"}}, "prior": lens_prior()})


@pytest.mark.parametrize("name", ["euclid", "lsst_gri"])
def test_the_shipped_multi_band_instruments_render_their_bands(name):
    """instrument=euclid (VIS, Y, J, H) and lsst_gri (i, r, g): one channel per band, each with the flux the
    colours give it: the near-infrared (or bluer) bands of a lens with lens light differ from the first."""
    config = load_conf("instrument", name)
    sim = Simulator.from_config({"instrument": config, "prior": lens_prior(), "colours": {}})
    images, _ = sim.sample(4, sim.make_generator(0), noise=False)
    bands = [b["name"] for b in config["bands"]]
    assert images.shape == (4, len(bands), *sim.instrument.image_size)
    assert sim.instrument.band_names == tuple(bands)
    zero_points = [b["zero_point"] for b in config["bands"]]
    for k in range(1, len(bands)):  # flat in AB: counts scale with the zero points alone
        ratio = float(images[:, k].sum() / images[:, 0].sum())
        assert ratio == pytest.approx(10 ** (0.4 * (zero_points[k] - zero_points[0])), rel=1e-3)
    assert math.isfinite(float(images.sum()))
