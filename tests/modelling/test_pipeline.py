"""refine_images gives one FitOutcome per image in the images' order: an image that could not be read or has
no prediction fails without a fit, a fit that raises fails alone; each is one warning; a successful fit
carries the network's values, the fit and its figure's arrays to on_fitted; image k is seeded with seed + k.
lenstronomy is replaced by a stand-in here (the real fits: tests/modelling/test_fitting.py and
tests/cli/test_refine.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import lenscnn.modelling.fitting as fitting
from lenscnn.modelling.fitting import Budget, Convergence, FitOutcome, FitResult
from lenscnn.modelling.inputs import image_key
from lenscnn.modelling.kwargs import fitted_model, observation_kwargs, parameter_moments
from lenscnn.modelling.pipeline import fitted_names, refine_images
from lenscnn.sim import Instrument
from lenscnn.sim.prior import lens_model_of
from tests.helpers import load_conf
from tests.modelling.priors import shipped_prior

NETWORK = {"theta_E": 1.2, "e1": 0.05, "e2": -0.04, "center_x": 0.01, "center_y": -0.02}


def test_every_image_gets_its_outcome_in_order(tmp_path, monkeypatch, caplog):
    instrument = Instrument.from_config({**load_conf("instrument", "quickstart"), "image_size": 16})
    prior = shipped_prior("quickstart")
    model = fitted_model(lens_model_of(prior), shear=True, lens_light=False)
    labels = [str(tmp_path / f"{name}.fits") for name in ("a", "b_unreadable", "c_unpredicted", "d_raising")]
    items = [
        {"image": labels[0], "data": np.full((16, 16), 1.0), "noise": None, "mask": None},
        {"image": labels[1], "error": "no pixel scale"},
        {"image": labels[2], "data": np.full((16, 16), 3.0)},
        {"image": labels[3], "data": np.full((16, 16), 4.0)},
    ]
    values = NETWORK | {f"{n}_sigma": 0.02 for n in NETWORK}
    predictions = {image_key(label): values for label in (labels[0], labels[1], labels[3])}
    seeds = []

    def stand_in(image, setup, budget, noise_map=None, network_prior=False, seed=0, mask=None, convergence=None):
        seeds.append(seed)
        if image[0, 0] == 4.0:
            raise RuntimeError("lenstronomy says no")
        lens = {n: 0.5 for n in fitted_names(model)}
        return FitResult(lens, {}, 1.25, 0.5, image + 1, image - 1, starts_agreeing=2, theta_change=0.001)

    monkeypatch.setattr(fitting, "fit_lens_model", stand_in)
    figures = []
    logger = logging.getLogger("refine-app")
    with caplog.at_level(logging.WARNING, logger="refine-app"):
        outcomes = refine_images(
            items,
            predictions,
            observation_kwargs(instrument),
            parameter_moments(prior),
            model,
            instrument,
            Budget(),
            Convergence(),
            predictions_source="predictions.csv",
            seed_source=False,
            seed=10,
            on_fitted=lambda outcome, data: figures.append((outcome, data)),
            logger=logger,
        )
    assert [o.image for o in outcomes] == labels and [o.ok for o in outcomes] == [True, False, False, False]
    fitted, unreadable, unpredicted, raising = outcomes
    assert fitted == FitOutcome(
        labels[0],
        "ok",
        network=NETWORK,
        network_sigma={n: 0.02 for n in NETWORK},  # gamma1, gamma2: fitted, not predicted
        fitted={n: 0.5 for n in ("theta_E", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2")},
        reduced_chi2=1.25,
        seconds=0.5,
        starts_agreeing=2,
        chi2_change=0.0,
        theta_E_change=0.001,
    )
    assert (fitted.model == 2.0).all() and (fitted.residual == 0.0).all()
    assert unreadable == FitOutcome(labels[1], "failed: no pixel scale")
    assert unpredicted == FitOutcome(labels[2], "failed: no predictions for this image in predictions.csv")
    assert raising.status == "failed: RuntimeError: lenstronomy says no" and raising.network == NETWORK
    assert seeds == [10, 13]
    assert len(figures) == 1 and figures[0][0] is fitted and figures[0][1] is items[0]["data"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{labels[1]}: no pixel scale",
        f"{labels[2]}: no predictions for this image in predictions.csv",
        f"{labels[3]}: failed: RuntimeError: lenstronomy says no",
    ]


@pytest.mark.parametrize("shear", [True, False])
def test_fitted_names_are_the_mass_parameters(shear):
    model = fitted_model(lens_model_of(shipped_prior("quickstart")), shear=shear, lens_light=2)
    assert fitted_names(model) == ["theta_E", "e1", "e2", "center_x", "center_y"] + ["gamma1", "gamma2"] * shear
