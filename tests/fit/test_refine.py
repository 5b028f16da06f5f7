"""One lenstronomy fit started from a (deliberately off) estimate recovers a lens rendered by
lenstronomy, an EPL's slope included; MCMC gives uncertainties, of every component of the spec; a bad
budget is a user error."""

from __future__ import annotations

import numpy as np
import pytest

from lenscnn.errors import UserError
from lenscnn.fit.kwargs import (
    lens_model_kwargs,
    observation_kwargs,
    parameter_moments,
    seed_source,
)
from lenscnn.fit.refine import Budget, lenstronomy_image, reduced_chi2, refine
from lenscnn.sim import Instrument
from lenscnn.sim.prior import lens_model_of
from tests.fit.priors import multipole_prior, shipped_prior
from tests.helpers import load_conf, render_lenstronomy_lens

TRUTH = {"theta_E": 1.05, "e1": 0.08, "e2": -0.06, "center_x": 0.04, "center_y": -0.03}
SOURCE = {"amp": 120.0, "R_sersic": 0.2, "n_sersic": 1.5, "e1": 0.05, "e2": 0.1, "center_x": 0.1, "center_y": 0.05}


@pytest.fixture(scope="module")
def lens():
    instrument = Instrument.from_config(load_conf("instrument", "quickstart"))
    image = render_lenstronomy_lens(TRUTH, SOURCE, instrument, np.random.default_rng(3))
    estimate = {k: v + d for (k, v), d in zip(TRUTH.items(), (0.03, -0.03, 0.03, 0.03, -0.03), strict=True)}
    prior = load_conf("prior", "quickstart")
    setup = lens_model_kwargs(
        estimate,
        {k: 0.03 for k in TRUTH},
        observation_kwargs(instrument),
        parameter_moments(prior),
        lens_model_of(prior),
    )
    return image, seed_source(setup, image, instrument.background_rms, instrument.pixel_scale)


def test_pso_recovers_the_lens_from_an_estimate(lens):
    image, setup = lens
    result = refine(image, setup, Budget(n_particles=30, n_iterations=60), seed=1)
    assert abs(result.lens["theta_E"] - TRUTH["theta_E"]) < 0.01
    assert abs(result.lens["center_x"] - TRUTH["center_x"]) < 0.01
    truth_chi2, _, _ = reduced_chi2(setup, image, None, {"kwargs_lens": [TRUTH], "kwargs_source": [SOURCE]})
    assert 0.85 < truth_chi2 < 1.15  # lenstronomy's noise model on lenstronomy's image
    assert result.reduced_chi2 < 1.3 * truth_chi2  # near the truth within this small budget
    assert result.model.shape == image.shape and np.isfinite(result.normalized_residual).all()
    assert len(result.pso_chi2) == 60 and result.pso_chi2[-1] <= result.pso_chi2[0]
    assert result.sigma == {}  # no MCMC, no uncertainties


def test_mcmc_gives_uncertainties(lens):
    image, setup = lens
    budget = Budget(n_particles=20, n_iterations=30, mcmc_burn=10, mcmc_run=20, walker_ratio=2)
    result = refine(image, setup, budget, seed=2)
    assert set(result.sigma) == set(TRUTH)
    assert all(0 < s < 0.1 for s in result.sigma.values()), result.sigma


def test_bad_budget_is_a_user_error():
    with pytest.raises(UserError, match="fit.n_particles must be a positive integer"):
        Budget(n_particles=0)
    with pytest.raises(UserError, match="fit.mcmc_run"):
        Budget(mcmc_run=-1)


EPL_TRUTH = {"theta_E": 1.1, "gamma": 2.18, "e1": 0.07, "e2": -0.05, "center_x": 0.03, "center_y": -0.02}
EXTENDED_SOURCE = {**SOURCE, "R_sersic": 0.35, "n_sersic": 1.0, "center_x": 0.09, "center_y": 0.04}


def test_pso_fits_an_epl_slope():
    """An EPL lens (the spec of prior=epl without shear and lens light) rendered noise-free by lenstronomy on
    a 48 x 48 grid, started 0.08 off in gamma and 0.03 arcsec off in theta_E: the fit moves gamma, recovers
    both (seeds 0-4 of this budget: gamma within 0.007, theta_E within 2e-4) and reports gamma."""
    instrument = Instrument.from_config({**load_conf("instrument", "quickstart"), "image_size": 48})
    prior = {k: v for k, v in shipped_prior("epl").items() if k in ("lens", "source")}
    model, moments, observation = lens_model_of(prior), parameter_moments(prior), observation_kwargs(instrument)
    truth = lens_model_kwargs(EPL_TRUTH, None, observation, moments, model)
    image = lenstronomy_image(truth, {"kwargs_lens": [EPL_TRUTH], "kwargs_source": [EXTENDED_SOURCE]})
    offset = {"theta_E": 0.03, "gamma": -0.08, "e1": 0.02, "e2": -0.02, "center_x": 0.02, "center_y": -0.02}
    estimate = {k: v + offset[k] for k, v in EPL_TRUTH.items()}
    sigmas = {k: max(abs(d), 0.03) for k, d in offset.items()}
    setup = lens_model_kwargs(estimate, sigmas, observation, moments, model)
    assert setup["kwargs_model"]["lens_model_list"] == ["EPL"] and setup["kwargs_lens"][0]["gamma"] == pytest.approx(
        2.1
    )
    setup = seed_source(setup, image, instrument.background_rms, instrument.pixel_scale)
    result = refine(image, setup, Budget(n_particles=40, n_iterations=150), seed=1)
    assert set(result.lens) == set(EPL_TRUTH)
    assert abs(result.lens["gamma"] - EPL_TRUTH["gamma"]) < 0.02, result.lens
    assert abs(result.lens["theta_E"] - EPL_TRUTH["theta_E"]) < 0.002, result.lens


def test_refine_fits_the_whole_spec():
    """Shear, an m = 4 multipole and two lens lights, all on one lens centre: the fit reports every mass
    parameter by name, and the MCMC sigma of the centre that lenstronomy samples on the first lens light."""
    instrument = Instrument.from_config({**load_conf("instrument", "quickstart"), "image_size": 32})
    prior = multipole_prior()
    start = {**TRUTH, "gamma1": 0.02, "gamma2": -0.01}
    setup = lens_model_kwargs(
        start,
        {k: 0.02 for k in start},
        observation_kwargs(instrument),
        parameter_moments(prior),
        lens_model_of(prior),
    )
    image = lenstronomy_image(setup, setup)
    budget = Budget(n_particles=10, n_iterations=3, mcmc_burn=2, mcmc_run=3, walker_ratio=2)
    result = refine(image, setup, budget, network_prior=True, seed=3)
    names = {*start, "multipole_4_a_m", "multipole_4_phi_m"}
    assert set(result.lens) == set(result.sigma) == names
    assert all(s > 0 for s in result.sigma.values()), result.sigma
    assert np.isfinite(result.reduced_chi2)
