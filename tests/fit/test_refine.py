"""One lenstronomy fit started from a (deliberately off) estimate recovers a lens rendered by
lenstronomy; MCMC gives uncertainties; a bad setup raises (the app reports it in the row)."""

from __future__ import annotations

import numpy as np
import pytest

from lenscnn.errors import UserError
from lenscnn.fit.kwargs import (
    lens_model_kwargs,
    observation_kwargs,
    parameter_moments,
    prior_lens_model,
    seed_source,
)
from lenscnn.fit.refine import Budget, reduced_chi2, refine
from lenscnn.sim import Instrument
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
        prior_lens_model(prior),
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
