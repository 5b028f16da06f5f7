"""A FitSetup reads lens_model_kwargs' ``lenscnn`` record into attributes and writes it back unchanged; it
pickles (it goes to worker processes); it knows which parameters the fit samples, their network sigmas and which
it holds fixed; a drawn start's source is seeded again the way the setup's was."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from lenscnn.modelling.fit_setup import FitSetup, SourceSeed
from lenscnn.modelling.kwargs import lens_model_kwargs, observation_kwargs, parameter_moments, seed_source
from lenscnn.sim import Instrument
from lenscnn.sim.prior_config import lens_model_of
from tests.helpers import load_conf, render_lenstronomy_lens
from tests.modelling.priors import multipole_prior, shipped_prior

TRUTH = {"theta_E": 1.05, "e1": 0.08, "e2": -0.06, "center_x": 0.04, "center_y": -0.03}
SOURCE = {"amp": 120.0, "R_sersic": 0.2, "n_sersic": 1.5, "e1": 0.05, "e2": 0.1, "center_x": 0.1, "center_y": 0.05}


def seeded_kwargs() -> tuple[np.ndarray, dict]:
    """A noisy lenstronomy image of TRUTH/SOURCE on a 48 x 48 grid and the seeded quickstart setup of it."""
    instrument = Instrument.from_config({**load_conf("instrument", "quickstart"), "image_size": 48})
    prior = shipped_prior("quickstart")
    image = render_lenstronomy_lens(TRUTH, SOURCE, instrument, np.random.default_rng(3))
    kwargs = lens_model_kwargs(
        TRUTH, {k: 0.03 for k in TRUTH}, observation_kwargs(instrument), parameter_moments(prior), lens_model_of(prior)
    )
    return image, seed_source(kwargs, image, instrument.background_rms, instrument.pixel_scale)


def test_the_lenscnn_record_becomes_attributes_and_round_trips():
    _, kwargs = seeded_kwargs()
    setup = FitSetup.from_kwargs(kwargs)
    assert "lenscnn" not in setup.kwargs and isinstance(setup.kwargs["kwargs_psf"]["kernel_point_source"], np.ndarray)
    assert setup.network == ("theta_E", "e1", "e2", "center_x", "center_y") and setup.sky is False
    assert setup.source_seed == SourceSeed(noise_rms=0.01, pixel_scale=0.08)
    assert setup.lens_model.names[:5] == list(TRUTH)
    assert setup.as_kwargs()["lenscnn"] == kwargs["lenscnn"]


def test_a_setup_pickles():
    _, kwargs = seeded_kwargs()
    setup = FitSetup.from_kwargs(kwargs)
    back = pickle.loads(pickle.dumps(setup))
    assert back.lens_model == setup.lens_model and back.source_seed == setup.source_seed
    assert back.network == setup.network and back.kwargs["kwargs_lens"] == setup.kwargs["kwargs_lens"]
    np.testing.assert_array_equal(
        back.kwargs["kwargs_psf"]["kernel_point_source"], kwargs["kwargs_psf"]["kernel_point_source"]
    )


def test_sampled_network_sigma_and_fixed_names():
    """An EPL whose prior fixes its slope: gamma is held fixed (not sampled, no network sigma); theta_E is
    sampled from the network's mean with its sigma as step, within the fit's bounds; the multipole model's lens
    centre is sampled on the first lens light (lenstronomy sets a lens from a light)."""
    instrument = Instrument.from_config({**load_conf("instrument", "quickstart"), "image_size": 32})
    observation, sigmas = observation_kwargs(instrument), {k: 0.02 for k in TRUTH}
    prior = {k: v for k, v in shipped_prior("epl").items() if k in ("lens", "source")}
    prior["lens"] = {**prior["lens"], "gamma": 2.0}
    setup = FitSetup.from_kwargs(
        lens_model_kwargs(TRUTH, sigmas, observation, parameter_moments(prior), lens_model_of(prior))
    )
    assert setup.fixed_names("lens") == {"gamma"} and setup.sampled("gamma") is None
    assert setup.sampled("theta_E") == (TRUTH["theta_E"], 0.02, 0.05, 10.0)
    assert setup.network_sigma("theta_E") == 0.02 and setup.network_sigma("gamma") is None
    prior = multipole_prior()
    setup = FitSetup.from_kwargs(
        lens_model_kwargs(TRUTH, sigmas, observation, parameter_moments(prior), lens_model_of(prior))
    )
    assert setup.sampled("center_x")[:2] == (TRUTH["center_x"], 0.02) and "center_x" not in setup.fixed_names("lens")
    assert setup.network_sigma("multipole_4_a_m") is None


def test_free_keywords_leave_out_the_fixed_the_tied_and_the_amplitudes():
    """What a stage of the fit can hold fixed, per role, in lenstronomy's ``update_settings`` lists: an EPL with a
    fixed slope samples neither its slope nor its centre (set by the lens light's, which samples it); no role's
    linear amplitude is listed; a role without components gives an empty list."""
    instrument = Instrument.from_config({**load_conf("instrument", "quickstart"), "image_size": 32})
    prior = {k: v for k, v in shipped_prior("epl").items() if k in ("lens", "source", "lens_light")}
    prior["lens"] = {**prior["lens"], "gamma": 2.0}
    observation, sigmas = observation_kwargs(instrument), {k: 0.02 for k in TRUTH}
    setup = FitSetup.from_kwargs(
        lens_model_kwargs(TRUTH, sigmas, observation, parameter_moments(prior), lens_model_of(prior))
    )
    sersic = ["R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y"]
    assert setup.kwargs["kwargs_constraints"] == {"joint_lens_with_light": [[0, 0, ["center_x", "center_y"]]]}
    assert setup.free_keywords("lens") == [[0, ["theta_E", "e1", "e2"]]]
    assert setup.free_keywords("source") == [[0, sersic]]
    assert setup.free_keywords("lens_light") == [[0, sersic]]
    prior = {k: v for k, v in prior.items() if k != "lens_light"}
    bare = FitSetup.from_kwargs(
        lens_model_kwargs(TRUTH, None, observation, parameter_moments(prior), lens_model_of(prior))
    )
    assert bare.free_keywords("lens_light") == []


def test_a_drawn_start_seeds_its_source_again():
    image, kwargs = seeded_kwargs()
    setup = FitSetup.from_kwargs(kwargs)
    moved = FitSetup.from_kwargs(
        {**setup.as_kwargs(), "kwargs_source": [{**kwargs["kwargs_source"][0], "center_x": 0.9}]}
    )
    again = moved.reseeded_source(image, None)
    assert again.kwargs["kwargs_source"][0]["center_x"] == pytest.approx(kwargs["kwargs_source"][0]["center_x"])
    assert again.source_seed == setup.source_seed
    unseeded = FitSetup.from_kwargs({**kwargs, "lenscnn": {**kwargs["lenscnn"], "source_seed": None}})
    assert unseeded.source_seed is None and unseeded.reseeded_source(image, None) is unseeded
