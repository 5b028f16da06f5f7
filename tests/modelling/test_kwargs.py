"""lenstronomy keyword arguments from predictions: for every lens model (SIE, EPL, multipoles, several lens
lights) a JSON round trip through lenstronomy alone reproduces lenscnn's render; the constraints tie what the
spec ties; the source seed lands on the true source."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lenscnn.errors import UserError
from lenscnn.modelling.kwargs import (
    ADDED_LIGHTS,
    KWARGS,
    fitted_model,
    kwargs_parameters,
    lens_model_kwargs,
    observation_kwargs,
    parameter_moments,
    seed_source,
    setup_lens_model,
    sky_level,
)
from lenscnn.sim import Instrument, Simulator
from lenscnn.sim.prior_config import lens_model_of
from tests.helpers import load_conf
from tests.modelling.priors import multipole_prior, shipped_prior

PREDICTED = {"theta_E": 1.13, "e1": 0.12, "e2": -0.07, "center_x": 0.06, "center_y": -0.04, "gamma1": 0.03}
PREDICTED["gamma2"] = -0.02


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
    """lenscnn's noiseless render of the parameters the setup's kwargs hold (named through its spec)."""
    params = {k: v for role in KWARGS for k, v in kwargs_parameters(setup_lens_model(setup), setup, role).items()}
    simulator = Simulator.from_config({"instrument": instrument, "prior": prior, "dtype": "float64"})
    batch = {k: torch.tensor([v], dtype=torch.float64) for k, v in params.items()}
    return simulator.render(batch, noise=False)[0, 0].numpy()


@pytest.mark.parametrize(
    ("instrument", "prior", "lens_model_list", "lens_lights"),
    [
        ("quickstart", shipped_prior("realistic_sersic"), ["SIE", "SHEAR"], 1),
        ("lsst", shipped_prior("quickstart"), ["SIE"], 0),
        ("quickstart", shipped_prior("epl"), ["EPL", "SHEAR"], 1),
        ("quickstart", multipole_prior(), ["SIE", "SHEAR", "MULTIPOLE"], 2),
    ],
    ids=["sie-shear-light", "sie", "epl", "multipole-two-lights"],
)
def test_json_round_trip_reproduces_the_lenscnn_render(instrument, prior, lens_model_list, lens_lights):
    instrument_cfg = load_conf("instrument", instrument)
    predicted = {**PREDICTED, "gamma": 2.15} if lens_model_list[0] == "EPL" else dict(PREDICTED)
    sigmas = {n: 0.02 for n in predicted}
    model = lens_model_of(prior)
    setup = lens_model_kwargs(
        predicted, sigmas, observation_kwargs(Instrument.from_config(instrument_cfg)), parameter_moments(prior), model
    )
    setup = json.loads(json.dumps(setup))  # what predict writes and a user reads back
    assert setup["kwargs_model"] == model.kwargs_model()
    assert setup["kwargs_model"]["lens_model_list"] == lens_model_list
    assert len(setup["kwargs_lens_light"]) == lens_lights
    assert setup["kwargs_lens_sigma"][0]["theta_E"] == pytest.approx(0.02)
    if "SHEAR" in lens_model_list:
        assert setup["kwargs_lens_fixed"][1] == {"ra_0": 0.0, "dec_0": 0.0}
    else:  # the shear the prior lacks is neither predicted into the model nor started
        assert setup["lenscnn"]["network"] == ["theta_E", "e1", "e2", "center_x", "center_y"]
    reference = lenstronomy_render(setup)
    ours = lenscnn_render(setup, instrument_cfg, prior)
    assert np.abs(ours - reference).max() < 1e-3 * reference.max()


def test_epl_starts_at_the_predicted_slope_or_the_prior_mean():
    prior = shipped_prior("epl")
    observation = observation_kwargs(Instrument.from_config(load_conf("instrument", "quickstart")))
    moments, model = parameter_moments(prior), lens_model_of(prior)
    predicted = lens_model_kwargs({**PREDICTED, "gamma": 2.15}, {"gamma": 0.04}, observation, moments, model)
    assert predicted["kwargs_lens"][0]["gamma"] == 2.15 and predicted["kwargs_lens_sigma"][0]["gamma"] == 0.04
    assert "gamma" in predicted["lenscnn"]["network"]
    assert (predicted["kwargs_lens_lower"][0]["gamma"], predicted["kwargs_lens_upper"][0]["gamma"]) == (1.2, 2.8)
    unpredicted = lens_model_kwargs(PREDICTED, None, observation, moments, model)
    assert unpredicted["kwargs_lens"][0]["gamma"] == pytest.approx(2.0, abs=0.01)  # prior: 2.0 +- 0.1
    assert unpredicted["kwargs_lens_sigma"][0]["gamma"] == pytest.approx(0.1, rel=0.1)
    assert unpredicted["lenscnn"]["network"] == []  # no sigmas: no network posterior
    assert unpredicted["kwargs_lens_sigma"][0]["theta_E"] == pytest.approx(0.1 * 1.13 + 0.01)


def test_constraints_make_lenstronomy_sample_one_lens_centre():
    """With two lens lights and a multipole on the lens centre, lenstronomy samples the centre once (on the
    first lens light, since it sets a lens from a light but never a light from a lens): moving it moves the
    lens, both lights and the multipole; the multipole's order and r_E stay fixed."""
    from lenstronomy.Sampling.parameters import Param

    prior = multipole_prior()
    observation = observation_kwargs(Instrument.from_config(load_conf("instrument", "quickstart")))
    setup = lens_model_kwargs(PREDICTED, None, observation, parameter_moments(prior), lens_model_of(prior))
    assert setup["kwargs_constraints"] == {
        "joint_lens_with_light": [[0, 0, ["center_x", "center_y"]], [0, 2, ["center_x", "center_y"]]],
        "joint_lens_light_with_lens_light": [[0, 1, ["center_x", "center_y"]]],
    }
    assert setup["kwargs_lens_fixed"][2] == {"m": 4, "r_E": PREDICTED["theta_E"]}
    assert setup["kwargs_lens_light_fixed"][1] == {"n_sersic": 1.0}  # the prior fixes it
    param = Param(
        setup["kwargs_model"],
        kwargs_fixed_lens=setup["kwargs_lens_fixed"],
        kwargs_fixed_source=setup["kwargs_source_fixed"],
        kwargs_fixed_lens_light=setup["kwargs_lens_light_fixed"],
        **setup["kwargs_constraints"],
    )
    moved = [dict(light) for light in setup["kwargs_lens_light"]]
    moved[0] |= {"center_x": 0.3, "center_y": -0.2}
    args = param.kwargs2args(setup["kwargs_lens"], setup["kwargs_source"], moved)
    kwargs = param.args2kwargs(args)
    for key, i in (("kwargs_lens", 0), ("kwargs_lens", 2), ("kwargs_lens_light", 0), ("kwargs_lens_light", 1)):
        assert (kwargs[key][i]["center_x"], kwargs[key][i]["center_y"]) == (0.3, -0.2), (key, i)
    assert kwargs["kwargs_lens"][2]["m"] == 4 and kwargs["kwargs_lens"][2]["r_E"] == PREDICTED["theta_E"]
    lens = kwargs_parameters(setup_lens_model(setup), kwargs, "lens")
    assert (lens["center_x"], lens["multipole_4_a_m"]) == (0.3, setup["kwargs_lens"][2]["a_m"])


def test_fitted_model_switches_the_shear_and_the_lens_lights():
    realistic = lens_model_of(shipped_prior("realistic_sersic"))
    bare = fitted_model(realistic, shear=False, lens_light=False)
    assert bare.kwargs_model()["lens_model_list"] == ["SIE"] and not bare.of_role("lens_light")
    added = fitted_model(lens_model_of(shipped_prior("quickstart")), shear=True, lens_light=True)
    assert added.kwargs_model()["lens_model_list"] == ["SIE", "SHEAR"]
    assert added.component("shear").own == {"gamma1": "gamma1", "gamma2": "gamma2"}
    assert fitted_model(realistic, shear=True, lens_light=True) == realistic
    assert fitted_model(realistic, shear=True, lens_light=1) == realistic


def test_fitted_model_fits_a_bulge_and_an_envelope_and_no_neighbours():
    """lens_light=2: the survey prior's bulge and envelope as they are, its neighbours and star dropped (no
    prior-mean start can find a galaxy at a random position); the realistic prior's one light completed with a
    concentric envelope that starts from ADDED_LIGHTS and samples its centre with the lens's."""
    survey = lens_model_of(shipped_prior("survey"))
    assert {"neighbour", "neighbour_2", "star"} <= {c.name for c in survey.components}
    fitted = fitted_model(survey, shear=True, lens_light=2)
    assert [c.name for c in fitted.of_role("lens_light")] == ["lens_light", "lens_light_2"]
    assert [c.name for c in fitted_model(survey, shear=True, lens_light=True).of_role("lens_light")] == [
        "lens_light",
        "lens_light_2",
    ]
    assert [c.name for c in fitted_model(survey, shear=True, lens_light=1).of_role("lens_light")] == ["lens_light"]
    assert not fitted_model(survey, shear=True, lens_light=0).of_role("lens_light")
    prior = shipped_prior("realistic")
    two = fitted_model(lens_model_of(prior), shear=True, lens_light=2)
    envelope = two.component("lens_light_2")
    assert envelope.profile == "SERSIC_ELLIPSE" and envelope.tied == {"center_x": "center_x", "center_y": "center_y"}
    observation = observation_kwargs(Instrument.from_config(load_conf("instrument", "quickstart")))
    setup = lens_model_kwargs(PREDICTED, None, observation, parameter_moments(prior), two)
    assert setup["kwargs_lens_light"][1]["R_sersic"] == ADDED_LIGHTS[1]["R_sersic"][0]
    assert setup["kwargs_lens_light_sigma"][1]["n_sersic"] == ADDED_LIGHTS[1]["n_sersic"][1]
    assert setup["kwargs_constraints"]["joint_lens_light_with_lens_light"] == [[0, 1, ["center_x", "center_y"]]]
    bare = fitted_model(lens_model_of(shipped_prior("quickstart")), shear=False, lens_light=2)
    bulge = lens_model_kwargs(PREDICTED, None, observation, parameter_moments(shipped_prior("quickstart")), bare)
    assert [light["R_sersic"] for light in bulge["kwargs_lens_light"]] == [0.8, 2.0]  # a bulge, then an envelope
    for bad in (-1, 1.5, "two"):
        with pytest.raises(UserError, match="lens_light must be true, false or a number of components >= 0"):
            fitted_model(survey, shear=True, lens_light=bad)


def test_sky_level_is_a_uniform_lens_light():
    """sky=True appends lenstronomy's UNIFORM to the lens lights (no parameter of the spec); its amp is a
    surface brightness, so a level of amp * pixel area counts/s per pixel."""
    from lenscnn.modelling.lenstronomy_adapter import lenstronomy_image

    prior = shipped_prior("realistic_sersic")
    observation = observation_kwargs(Instrument.from_config(load_conf("instrument", "quickstart")))
    setup = lens_model_kwargs(PREDICTED, None, observation, parameter_moments(prior), lens_model_of(prior), sky=True)
    assert setup["kwargs_model"]["lens_light_model_list"] == ["SERSIC_ELLIPSE", "UNIFORM"]
    assert setup["kwargs_lens_light"][1] == {"amp": 0.0} and setup["kwargs_lens_light_sigma"][1] == {}
    kwargs = {**setup, "kwargs_source": [{**setup["kwargs_source"][0], "amp": 0.0}]}
    kwargs["kwargs_lens_light"] = [{**setup["kwargs_lens_light"][0], "amp": 0.0}, {"amp": 5.0}]
    image = lenstronomy_image(setup, kwargs)
    assert sky_level(setup, kwargs) == pytest.approx(5.0 * 0.08**2)
    assert image[32, 32] == pytest.approx(sky_level(setup, kwargs))  # away from the zero-padded edge
    without = lens_model_kwargs(PREDICTED, None, observation, parameter_moments(prior), lens_model_of(prior))
    assert sky_level(without, kwargs) is None and without["lenscnn"]["sky"] is False


def test_source_seed_lands_near_the_true_source():
    instrument_cfg = {**load_conf("instrument", "quickstart"), "noise": {"background_rms": 0.0}}
    prior = shipped_prior("quickstart")
    lens = {"theta_E": 1.2, "e1": 0.1, "e2": 0.05, "center_x": 0.03, "center_y": -0.05}
    setup = lens_model_kwargs(
        lens,
        None,
        observation_kwargs(Instrument.from_config(instrument_cfg)),
        parameter_moments(prior),
        lens_model_of(prior),
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


def test_source_seed_ray_traces_through_every_lens_component():
    """The seed is the flux-weighted mean of the arc pixels mapped to the source plane by the whole lens
    model (here an EPL, a shear and a multipole): lenstronomy's ray shooting gives the same mean."""
    from lenstronomy.LensModel.lens_model import LensModel

    instrument_cfg = {**load_conf("instrument", "quickstart"), "noise": {"background_rms": 0.0}}
    prior = {k: v for k, v in shipped_prior("epl").items() if k in ("lens", "shear", "source")}
    prior["multipole_4"] = multipole_prior()["multipole_4"]
    lens = {**PREDICTED, "theta_E": 1.2, "gamma": 2.3}
    setup = lens_model_kwargs(
        lens,
        None,
        observation_kwargs(Instrument.from_config(instrument_cfg)),
        parameter_moments(prior),
        lens_model_of(prior),
    )
    assert setup["kwargs_model"]["lens_model_list"] == ["EPL", "SHEAR", "MULTIPOLE"]
    source = {"amp": 100.0, "R_sersic": 0.12, "n_sersic": 1.0, "e1": 0.0, "e2": 0.0, "center_x": 0.15, "center_y": 0.1}
    image = lenscnn_render({**setup, "kwargs_source": [source]}, instrument_cfg, prior)
    start = seed_source(setup, image, noise_rms=0.01, pixel_scale=0.08)["kwargs_source"][0]
    size = image.shape[0]
    y, x = (np.mgrid[:size, :size] - (size - 1) / 2) * 0.08  # rows are y, columns x
    radius = np.hypot(x - lens["center_x"], y - lens["center_y"]) / lens["theta_E"]
    weight = np.where((image > 0.03) & (radius > 0.5) & (radius < 1.5), image - 0.03, 0.0)
    beta_x, beta_y = LensModel(setup["kwargs_model"]["lens_model_list"]).ray_shooting(x, y, setup["kwargs_lens"])
    expected = (weight * beta_x).sum() / weight.sum(), (weight * beta_y).sum() / weight.sum()
    assert (start["center_x"], start["center_y"]) == pytest.approx(expected, abs=1e-9)
    assert np.hypot(start["center_x"] - 0.15, start["center_y"] - 0.1) < 0.5 * source["R_sersic"]
