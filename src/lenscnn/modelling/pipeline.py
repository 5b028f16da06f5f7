"""The fits of ``lenscnn-refine``: every prepared image fitted from the network's prediction for it, one
:class:`lenscnn.modelling.records.FitOutcome` per image.

An image is fitted (:func:`lenscnn.modelling.fitting.fit_lens_model`, in worker processes:
:mod:`lenscnn.modelling.workers`) from the :class:`lenscnn.modelling.fit_setup.FitSetup` that
:func:`lenscnn.modelling.kwargs.lens_model_kwargs` makes of the network's means and sigmas; one that could not
be read or prepared, or that has no prediction, is a failed outcome without a fit. A failure never stops the
others: it is reported in the image's status and in one warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lenscnn.modelling import kwargs as fit_kwargs
from lenscnn.modelling.fit_setup import FitSetup
from lenscnn.modelling.inputs import image_key
from lenscnn.modelling.records import FitOutcome
from lenscnn.modelling.settings import RefineSettings
from lenscnn.modelling.workers import fit_all
from lenscnn.progress import progress
from lenscnn.sim import Instrument
from lenscnn.sim.lens_model import LensModel

log = logging.getLogger(__name__)


def fitted_names(model: LensModel) -> list[str]:
    """The lens parameters a fit of ``model`` reports (by lenscnn name, in the model's order): those of its
    mass components, e.g. ``theta_E, e1, e2, center_x, center_y, gamma1, gamma2``."""
    return [name for component in model.of_role("lens") for name in component.own.values()]


def refine_images(
    items: Sequence[Mapping[str, Any]],
    predictions: Mapping[tuple[str, str], Mapping[str, float]],
    observation: Mapping[str, Any],
    moments: Mapping[str, tuple[float, float]],
    model: LensModel,
    instrument: Instrument,
    settings: RefineSettings,
    *,
    on_fitted: Callable[[FitOutcome, np.ndarray], None] | None = None,
    logger: logging.Logger = log,
) -> list[FitOutcome]:
    """Fit every image of ``items`` from its prediction; one :class:`FitOutcome` per item, in their order.

    Args:
        items: the prepared images (:func:`lenscnn.modelling.inputs.load_images`): per image its ``image``
            label and ``data`` (sky subtracted) and ``noise`` (rms) [counts/s/px] on the instrument's grid,
            ``mask`` (True: a pixel to fit) and its own ``psf`` kernel if it has one, or an ``error``.
        predictions: the network's means and ``<name>_sigma`` per image
            (:func:`lenscnn.modelling.inputs.read_predictions`, keyed by
            :func:`lenscnn.modelling.inputs.image_key`), in lenscnn units (``theta_E`` in arcsec).
        observation, moments, model: the fit's observation kwargs
            (:func:`lenscnn.modelling.kwargs.observation_kwargs`), the prior's parameter moments
            (:func:`lenscnn.modelling.kwargs.parameter_moments`) and the lens model to fit
            (:func:`lenscnn.modelling.kwargs.fitted_model`).
        instrument: its ``pixel_scale`` [arcsec/px] and ``background_rms`` (the noise of an image without a
            noise map) seed the source.
        settings: the fit per image, when it is reported converged, and the run's options (sky level,
            source seeding, network prior, seeds, worker processes).
        on_fitted: called in this process with each successful fit and the image data it fitted, as it
            finishes (e.g. to save its figure).
        logger: where a warning per failed image goes.

    The fits are tracked by a progress bar (:func:`lenscnn.progress.progress`).
    """
    names = fitted_names(model)
    outcomes: dict[int, FitOutcome] = {}
    jobs = []
    for k, item in enumerate(items):
        values = predictions.get(image_key(item["image"]))
        if "error" in item or values is None:
            error = item.get("error", f"no predictions for this image in {settings.predictions_source}")
            outcomes[k] = FitOutcome(item["image"], f"failed: {error}")
            logger.warning("%s: %s", item["image"], error)
            continue
        sigmas = {n.removesuffix("_sigma"): v for n, v in values.items() if n.endswith("_sigma")}
        pending = FitOutcome(
            item["image"],
            "",
            network={n: values[n] for n in names if n in values},
            network_sigma={n: sigmas[n] for n in names if n in sigmas},
        )
        seen = observation  # the image's own PSF, when its file carries one
        if item.get("psf") is not None:
            seen = {**observation, "kwargs_psf": fit_kwargs.pixel_psf(item["psf"])}
        setup = fit_kwargs.lens_model_kwargs(values, sigmas, seen, moments, model, sky=settings.sky)
        if settings.seed_source:
            noise = instrument.background_rms if item.get("noise") is None else float(np.median(item["noise"]))
            setup = fit_kwargs.seed_source(setup, item["data"], noise, instrument.pixel_scale, item.get("mask"))
        fit = FitSetup.from_kwargs(setup)
        jobs.append(
            (k, (pending, item, fit, settings.budget, settings.network_prior, settings.seed + k, settings.convergence))
        )
    with progress("fitting", total=len(jobs), unit="lenses") as tracker:
        for k, outcome in fit_all(jobs, settings.workers):
            outcomes[k] = outcome
            if not outcome.ok:
                logger.warning("%s: %s", outcome.image, outcome.status)
            elif on_fitted is not None:
                on_fitted(outcome, items[k]["data"])
            tracker.advance(1)
    return [outcomes[k] for k in range(len(items))]
