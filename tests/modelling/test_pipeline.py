"""refine_images gives one FitOutcome per image in the images' order: an image that could not be read or has
no prediction fails without a fit, a fit that raises fails alone; each is one warning; a successful fit
carries the network's values, the fit and its figure's arrays to on_fitted; image k is seeded with seed + k.
lenstronomy is replaced by a stand-in here (the real fits: tests/modelling/test_fitting.py and
tests/cli/test_refine.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import lenscnn.modelling.workers as workers
from lenscnn.modelling.configuration import FitConfiguration
from lenscnn.modelling.inputs import FitImage, image_key
from lenscnn.modelling.kwargs import fitted_model, observation_kwargs, parameter_moments
from lenscnn.modelling.pipeline import fitted_names, refine_images
from lenscnn.modelling.records import FitOutcome, FitResult
from lenscnn.modelling.settings import RefineSettings
from lenscnn.sim import Instrument
from lenscnn.sim.prior_config import lens_model_of
from tests.helpers import load_conf
from tests.modelling.priors import shipped_prior

NETWORK = {"theta_E": 1.2, "e1": 0.05, "e2": -0.04, "center_x": 0.01, "center_y": -0.02}


def test_every_image_gets_its_outcome_in_order(tmp_path, monkeypatch, caplog):
    instrument = Instrument.from_config({**load_conf("instrument", "quickstart"), "image_size": 16})
    prior = shipped_prior("quickstart")
    model = fitted_model(lens_model_of(prior), shear=True, lens_light=False)
    labels = [str(tmp_path / f"{name}.fits") for name in ("a", "b_unreadable", "c_unpredicted", "d_raising")]
    items = [
        FitImage(labels[0], np.full((16, 16), 1.0)),
        FitImage(labels[1], error="no pixel scale"),
        FitImage(labels[2], np.full((16, 16), 3.0)),
        FitImage(labels[3], np.full((16, 16), 4.0)),
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

    monkeypatch.setattr(workers, "fit_lens_model", stand_in)
    figures = []
    with caplog.at_level(logging.WARNING, logger="lenscnn.modelling.pipeline"):
        outcomes = refine_images(
            items,
            predictions,
            FitConfiguration(model, observation_kwargs(instrument), parameter_moments(prior), instrument),
            RefineSettings(predictions_source="predictions.csv", seed_source=False, seed=10),
            on_fitted=lambda outcome, data: figures.append((outcome, data)),
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
        pixels_fitted=0,  # the stand-in counts none of the 16 x 16 pixels
        pixels_masked=256,
        neighbours_masked=0,  # a flat image: no source outside the lens region
    )
    assert (fitted.model == 2.0).all() and (fitted.residual == 0.0).all()
    assert unreadable == FitOutcome(labels[1], "failed: no pixel scale")
    assert unpredicted == FitOutcome(labels[2], "failed: no predictions for this image in predictions.csv")
    assert raising.status == "failed: RuntimeError: lenstronomy says no" and raising.network == NETWORK
    assert seeds == [10, 13]
    assert len(figures) == 1 and figures[0][0] is fitted and figures[0][1] is items[0].data
    assert [r.getMessage() for r in caplog.records] == [
        f"{labels[1]}: no pixel scale",
        f"{labels[2]}: no predictions for this image in predictions.csv",
        f"{labels[3]}: failed: RuntimeError: lenstronomy says no",
    ]


@pytest.mark.parametrize("shear", [True, False])
def test_fitted_names_are_the_mass_parameters(shear):
    model = fitted_model(lens_model_of(shipped_prior("quickstart")), shear=shear, lens_light=2)
    assert fitted_names(model) == ["theta_E", "e1", "e2", "center_x", "center_y"] + ["gamma1", "gamma2"] * shear


def test_an_image_whose_file_carries_its_psf_is_fitted_with_it(tmp_path, monkeypatch):
    """psf=auto: the PSF HDU beside the image (at 0.04"/px, FWHM 0.2") is resampled to the instrument's 0.08"
    pixels and replaces the instrument's PSF in that image's fit; an image without one keeps the instrument's."""
    from astropy.io import fits

    from lenscnn.modelling.inputs import load_images
    from lenscnn.preparation.pipeline import Preparation
    from lenscnn.preparation.psf import psf_fwhm

    instrument = Instrument.from_config(load_conf("instrument", "quickstart"))
    rng = np.random.default_rng(2)
    y, x = np.mgrid[:41, :41] - 20
    kernel = np.exp(-0.5 * (x**2 + y**2) / (0.2 / 0.04 / 2.3548) ** 2)
    header = fits.Header({"PIXSCALE": 0.08})
    image = fits.PrimaryHDU(rng.normal(0, 0.01, (64, 64)).astype(np.float32), header)
    psf = fits.ImageHDU(kernel.astype(np.float32), fits.Header({"PIXSCALE": 0.04}), name="PSF")
    fits.HDUList([image, psf]).writeto(tmp_path / "with_psf.fits")
    fits.PrimaryHDU(rng.normal(0, 0.01, (64, 64)).astype(np.float32), header).writeto(tmp_path / "without.fits")
    items = load_images(str(tmp_path), instrument, Preparation(cosmic_rays=False))
    with_psf, without = items
    assert without.psf is None and with_psf.psf.shape[0] % 2 == 1
    assert with_psf.psf.sum() == pytest.approx(1.0) and psf_fwhm(with_psf.psf, 0.08) == pytest.approx(0.2, rel=0.1)

    setups = []
    monkeypatch.setattr(
        "lenscnn.modelling.pipeline.fit_all", lambda jobs, workers: setups.extend(job[1][2] for job in jobs) or iter(())
    )
    prior = shipped_prior("quickstart")
    model = fitted_model(lens_model_of(prior), shear=True, lens_light=False)
    values = NETWORK | {f"{n}_sigma": 0.02 for n in NETWORK}
    predictions = {image_key(item.label): values for item in items}
    observation, moments = observation_kwargs(instrument), parameter_moments(prior)
    settings = RefineSettings(predictions_source="p.csv", seed_source=False)
    with pytest.raises(KeyError):  # no outcomes from the stand-in: only the set-ups matter here
        refine_images(items, predictions, FitConfiguration(model, observation, moments, instrument), settings)
    own, instruments = (np.asarray(s.kwargs["kwargs_psf"]["kernel_point_source"]) for s in setups)
    assert own == pytest.approx(with_psf.psf) and instruments == pytest.approx(
        np.asarray(observation["kwargs_psf"]["kernel_point_source"])
    )
