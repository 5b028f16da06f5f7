"""lenstronomy keyword arguments from predictions: a JSON round trip through lenstronomy alone
reproduces lenscnn's render; the source seed lands on the true source."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lenscnn.fit.kwargs import lens_model_kwargs, light_moments, observation_kwargs, seed_source
from lenscnn.sim import Instrument, Simulator
from tests.helpers import load_conf

SERSIC_KEYS = ("amp", "R_sersic", "n_sersic", "e1", "e2")


def lenstronomy_render(setup: dict) -> np.ndarray:
    """What a lenstronomy user does with the JSON: no lenscnn import."""
    from lenstronomy.Data.pixel_grid import PixelGrid
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    grid = {**setup["kwargs_pixel_grid"]}
    grid["transform_pix2angle"] = np.array(grid["transform_pix2angle"])
    psf = {**setup["kwargs_psf"]}
    if "kernel_point_source" in psf:
        psf["kernel_point_source"] = np.array(psf["kernel_point_source"])
    model = setup["kwargs_model"]
    return ImageModel(
        PixelGrid(**grid),
        PSF(**psf),
        LensModel(model["lens_model_list"]),
        LightModel(model["source_light_model_list"]),
        LightModel(model["lens_light_model_list"]),
        kwargs_numerics=setup["kwargs_numerics"],
    ).image(setup["kwargs_lens"], setup["kwargs_source"], setup["kwargs_lens_light"])


def lenscnn_render(setup: dict, instrument: dict, prior: dict) -> np.ndarray:
    params = {**setup["kwargs_lens"][0]}
    if len(setup["kwargs_lens"]) > 1:
        params |= {k: setup["kwargs_lens"][1][k] for k in ("gamma1", "gamma2")}
    params |= {f"source_{k}": v for k, v in setup["kwargs_source"][0].items()}
    for light in setup["kwargs_lens_light"]:
        params |= {f"lens_light_{k}": light[k] for k in SERSIC_KEYS}
    simulator = Simulator.from_config({"instrument": instrument, "prior": prior, "dtype": "float64"})
    batch = {k: torch.tensor([v], dtype=torch.float64) for k, v in params.items()}
    return simulator.render(batch, noise=False)[0, 0].numpy()


@pytest.mark.parametrize(("instrument", "prior"), [("quickstart", "realistic_sersic"), ("lsst", "quickstart")])
def test_json_round_trip_reproduces_the_lenscnn_render(instrument, prior):
    instrument_cfg = load_conf("instrument", instrument)
    prior_cfg = load_conf("prior", prior)
    if "defaults" in prior_cfg:  # realistic_sersic extends realistic
        prior_cfg = {k: v for k, v in load_conf("prior", "realistic").items()}
    predicted = {"theta_E": 1.13, "e1": 0.12, "e2": -0.07, "center_x": 0.06, "center_y": -0.04, "gamma1": 0.03}
    predicted["gamma2"] = -0.02
    sigmas = {n: 0.02 for n in predicted}
    light = light_moments(prior_cfg)
    with_light = "lens_light" in prior_cfg
    setup = lens_model_kwargs(
        predicted, sigmas, observation_kwargs(Instrument.from_config(instrument_cfg)), light, lens_light=with_light
    )
    setup = json.loads(json.dumps(setup))  # what predict writes and a user reads back
    assert setup["kwargs_model"]["lens_model_list"] == ["SIE", "SHEAR"]
    assert bool(setup["kwargs_lens_light"]) == with_light
    assert setup["kwargs_lens_sigma"][0]["theta_E"] == pytest.approx(0.02)
    reference = lenstronomy_render(setup)
    ours = lenscnn_render(setup, instrument_cfg, load_conf("prior", "quickstart"))
    assert np.abs(ours - reference).max() < 1e-3 * reference.max()


def test_source_seed_lands_near_the_true_source():
    instrument_cfg = {**load_conf("instrument", "quickstart"), "noise": {"background_rms": 0.0}}
    prior = load_conf("prior", "quickstart")
    light = light_moments(prior)
    lens = {"theta_E": 1.2, "e1": 0.1, "e2": 0.05, "center_x": 0.03, "center_y": -0.05}
    setup = lens_model_kwargs(
        lens, None, observation_kwargs(Instrument.from_config(instrument_cfg)), light, shear=False
    )
    true_source = {
        "amp": 100.0,
        "R_sersic": 0.15,
        "n_sersic": 1.0,
        "e1": 0.0,
        "e2": 0.0,
        "center_x": 0.12,
        "center_y": 0.08,
    }
    truth = {**setup, "kwargs_source": [true_source]}
    image = lenscnn_render(truth, instrument_cfg, prior)
    seeded = seed_source(setup, image, noise_rms=0.01, pixel_scale=instrument_cfg["pixel_scale"])
    start = seeded["kwargs_source"][0]
    miss = np.hypot(start["center_x"] - 0.12, start["center_y"] - 0.08)
    prior_miss = np.hypot(setup["kwargs_source"][0]["center_x"] - 0.12, setup["kwargs_source"][0]["center_y"] - 0.08)
    assert miss < 0.5 * true_source["R_sersic"] and miss < 0.5 * prior_miss, (miss, prior_miss)
    assert 0.05 < start["R_sersic"] < 0.4
    assert seed_source(setup, np.zeros_like(image), 0.01, 0.08) == setup  # nothing to seed from
