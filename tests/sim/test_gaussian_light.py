"""lenstronomy's GAUSSIAN light profile (field stars): the kernel is lenstronomy's surface brightness, a prior
section with it renders what lenstronomy's ImageModel renders, and the lenstronomy JSON writer fits it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lenscnn.modelling.kwargs import lens_model_kwargs, observation_kwargs, parameter_moments
from lenscnn.sim import Instrument, func
from lenscnn.sim.func.light import gaussian_profile
from lenscnn.sim.prior_config import lens_model_of
from lenscnn.sim.profiles import get_profile
from tests.helpers import load_conf, make_simulator
from tests.modelling.priors import shipped_prior
from tests.modelling.test_kwargs import lenscnn_render
from tests.modelling.test_kwargs import lenstronomy_render as lenstronomy_render_setup
from tests.sim.test_lens_model import PIXEL_SCALE, SIZE, lenstronomy_render


def _u(low: float, high: float) -> dict:
    return {"dist": "uniform", "low": low, "high": high}


def star_prior() -> dict:
    """The realistic Sersic lenses with a field star anywhere in a 48 x 0.08" field."""
    return {
        **shipped_prior("realistic_sersic"),
        "star": {
            "profile": "GAUSSIAN",
            "amp": {"dist": "log_uniform", "low": 2.0, "high": 200.0},
            "sigma": _u(0.02, 0.04),
            "center_x": _u(-1.5, 1.5),
            "center_y": _u(-1.5, 1.5),
        },
    }


def test_gaussian_is_registered_as_lenstronomys_light_profile():
    profile = get_profile("GAUSSIAN")
    assert profile.kind == "light" and profile.kernel is gaussian_profile
    assert profile.keyword_names == ("amp", "sigma", "center_x", "center_y")
    assert profile.keyword("sigma").open_low and profile.keyword("amp").low == 0.0
    assert profile.keyword("center_x").tie == "center_x"  # like SERSIC_ELLIPSE: on the lens unless given


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_gaussian_profile_matches_lenstronomy_surface_brightness(dtype):
    """500 random (amp, sigma 0.01-1", centre) on a 61 x 61 grid over +-3": relative error of the surface
    brightness against lenstronomy's LightModel(['GAUSSIAN']) (float32: given the same rounded inputs)."""
    from lenstronomy.LightModel.light_model import LightModel

    light = LightModel(["GAUSSIAN"])
    rng = np.random.default_rng(0)
    x, y = (torch.tensor(v, dtype=dtype) for v in np.meshgrid(*(2 * [np.linspace(-3.0, 3.0, 61)])))
    xs, ys = x.double().numpy().ravel(), y.double().numpy().ravel()
    worst_core = worst_peak = 0.0
    for _ in range(500):
        values = {
            "amp": rng.uniform(1.0, 300.0),
            "sigma": rng.uniform(0.01, 1.0),
            "center_x": rng.uniform(-2.0, 2.0),
            "center_y": rng.uniform(-2.0, 2.0),
        }
        kwargs = {k: torch.tensor(v, dtype=dtype) for k, v in values.items()}
        ours = gaussian_profile(x, y, **kwargs).double().numpy()
        reference = light.surface_brightness(xs, ys, [{k: float(v) for k, v in kwargs.items()}]).reshape(x.shape)
        radius = np.hypot(xs - values["center_x"], ys - values["center_y"]).reshape(x.shape) / values["sigma"]
        error = np.abs(ours - reference)
        core = radius < 3.0
        if core.any():
            worst_core = max(worst_core, float((error[core] / reference[core]).max()))
        worst_peak = max(worst_peak, float(error.max() / reference.max()))
        if dtype == torch.float64:  # everywhere the reference is a normal number
            shown = reference > 1e-290
            assert (error[shown] <= 1e-12 * reference[shown]).all()
    print(f"GAUSSIAN {dtype}: relative error {worst_core:.1e} within 3 sigma, {worst_peak:.1e} of the peak")
    assert worst_core <= (1e-13 if dtype == torch.float64 else 2e-6)
    assert worst_peak <= (1e-13 if dtype == torch.float64 else 1e-6)


@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-8), ("float32", 1e-5)])
def test_star_section_renders_what_lenstronomy_renders(dtype, tolerance):
    """A prior section ``star: {profile: GAUSSIAN, ...}`` is unlensed light (lenstronomy's
    lens_light_model_list), and the Simulator's noiseless images of 8 draws equal lenstronomy's ImageModel
    images of the same kwargs, PSF and supersampling (to ``tolerance`` of the peak)."""
    instrument = {"image_size": SIZE, "pixel_scale": PIXEL_SCALE, "supersampling": 2}
    instrument["psf"] = {"type": "gaussian", "fwhm": 0.16}
    sim = make_simulator(instrument, star_prior(), dtype=dtype)
    model = sim.lens_model
    assert model.kwargs_model() == {
        "lens_model_list": ["SIE", "SHEAR"],
        "source_light_model_list": ["SERSIC_ELLIPSE"],
        "lens_light_model_list": ["SERSIC_ELLIPSE", "GAUSSIAN"],
    }
    star = model.component("star")
    assert star.role == "lens_light" and dict(star.parameters) == {
        k: f"star_{k}" for k in ("amp", "sigma", "center_x", "center_y")
    }
    images, params = sim.sample(8, torch.Generator().manual_seed(1), noise=False)
    assert {"star_amp", "star_sigma", "star_center_x", "star_center_y"} <= set(params)
    k1 = func.gaussian_kernel_1d(0.16, PIXEL_SCALE, dtype=torch.float64).numpy()
    for i in range(8):
        p = {k: float(v[i]) for k, v in params.items()}
        reference = lenstronomy_render(model, p, np.outer(k1, k1))
        assert np.abs(images[i, 0].double().numpy() - reference).max() <= tolerance * reference.max(), i


def test_star_image_sums_to_its_flux_when_sampled_finely_enough():
    """The profile is point-sampled, as lenstronomy samples it: a star of sigma >= half a sub-pixel images
    with its total flux ``amp`` wherever it falls in a pixel; a narrower one does not."""
    prior = {
        **load_conf("prior", "quickstart"),
        "star": {"profile": "GAUSSIAN", "amp": 100.0, "sigma": 0.04, "center_x": _u(-1, 1), "center_y": _u(-1, 1)},
    }
    instrument = {"image_size": 48, "pixel_scale": 0.08, "psf": {"type": "gaussian", "fwhm": 0.16}}
    for supersampling, sigma, spread in ((1, 0.04, 0.05), (2, 0.02, 0.05), (1, 0.02, None)):
        prior["star"]["sigma"] = sigma
        sim = make_simulator({**instrument, "supersampling": supersampling}, prior, dtype="float64")
        _, params = sim.sample(64, torch.Generator().manual_seed(2), noise=False)
        params["source_amp"] = torch.zeros_like(params["source_amp"])  # the star alone
        flux = sim.render(params, noise=False).sum((-3, -2, -1)) / 100.0
        if spread is None:
            assert flux.min() < 0.5 and flux.max() > 1.5, (supersampling, sigma)
        else:
            assert (flux - 1).abs().max() < spread, (supersampling, sigma)


def test_lenstronomy_json_of_a_prior_with_a_star_reproduces_the_lenscnn_render():
    """The fit's lenstronomy setup for prior=survey (bulge, envelope, two neighbours and a GAUSSIAN star):
    kwargs_model lists the GAUSSIAN, its bounds keep sigma positive, and lenstronomy alone renders from the
    JSON what lenscnn renders."""
    prior = shipped_prior("survey")
    instrument_cfg = load_conf("instrument", "quickstart")
    predicted = {"theta_E": 1.13, "e1": 0.12, "e2": -0.07, "center_x": 0.06, "center_y": -0.04}
    model = lens_model_of(prior)
    setup = lens_model_kwargs(
        predicted,
        {n: 0.02 for n in predicted},
        observation_kwargs(Instrument.from_config(instrument_cfg)),
        parameter_moments(prior),
        model,
    )
    setup = json.loads(json.dumps(setup))
    assert setup["kwargs_model"]["lens_light_model_list"] == 4 * ["SERSIC_ELLIPSE"] + ["GAUSSIAN"]
    star, lower, upper = (setup[f"kwargs_lens_light{part}"][-1] for part in ("", "_lower", "_upper"))
    assert set(star) == {"amp", "sigma", "center_x", "center_y"}
    assert star["sigma"] == pytest.approx(0.05, abs=0.002)  # the prior's mean
    assert lower["sigma"] > 0 and upper["sigma"] >= 0.04 and lower["amp"] == 0.0
    # only the envelope follows the bulge (on the lens centre); the neighbours and the star keep their own centres
    assert setup["kwargs_constraints"]["joint_lens_light_with_lens_light"] == [[0, 1, ["center_x", "center_y"]]]
    reference = lenstronomy_render_setup(setup)
    ours = lenscnn_render(setup, instrument_cfg, prior)
    assert np.abs(ours - reference).max() < 1e-3 * reference.max()
