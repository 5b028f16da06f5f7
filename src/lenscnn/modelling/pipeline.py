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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lenscnn.errors import UserError
from lenscnn.io.cutouts import find_inputs
from lenscnn.io.predictions import predictions_file
from lenscnn.modelling import kwargs as fit_kwargs
from lenscnn.modelling.configuration import FitConfiguration
from lenscnn.modelling.field import centre_pixel, lens_region, neighbour_mask
from lenscnn.modelling.fit_setup import FitSetup
from lenscnn.modelling.inputs import FieldPlan, FitImage, image_key, load_images
from lenscnn.modelling.records import FitOutcome
from lenscnn.modelling.settings import RefineSettings
from lenscnn.modelling.workers import fit_all
from lenscnn.preparation.pipeline import Preparation
from lenscnn.progress import progress
from lenscnn.sim import Instrument
from lenscnn.sim.lens_model import LensModel

log = logging.getLogger(__name__)


def fitted_names(model: LensModel) -> list[str]:
    """The lens parameters a fit of ``model`` reports (by lenscnn name, in the model's order): those of its
    mass components, e.g. ``theta_E, e1, e2, center_x, center_y, gamma1, gamma2``."""
    return [name for component in model.of_role("lens") for name in component.own.values()]


#: The lens parameters that are positions [arcsec], moved with the grid's centre.
POSITIONS = ("center_x", "center_y")


def shifted(values: Mapping[str, float], shift: tuple[float, float], sign: float = 1.0) -> dict[str, float]:
    """``values`` with the positions of :data:`POSITIONS` moved by ``sign * shift`` (``(x, y)`` [arcsec])."""
    return {k: v + sign * shift[POSITIONS.index(k)] if k in POSITIONS else v for k, v in values.items()}


def fitted_pixels(item: FitImage, values: Mapping[str, float], settings: RefineSettings, instrument: Instrument) -> int:
    """Narrow ``item.mask`` to the lens region of its prediction ``values`` (on the item's grid) less the
    neighbours centred outside it (:mod:`lenscnn.modelling.field`; an image without a noise map is segmented
    against the instrument's background); how many neighbours were masked."""
    field = settings.fit_field
    if field.reach is None:
        return 0
    shape, pixel_scale = item.data.shape, instrument.pixel_scale
    centre = centre_pixel(shape, values.get("center_x", 0.0), values.get("center_y", 0.0), pixel_scale)
    radius = field.radius(values["theta_E"]) / pixel_scale
    use = item.mask if item.mask is not None else np.ones(shape, dtype=bool)
    count = 0
    if field.neighbours:
        noise = np.full(shape, instrument.background_rms) if item.noise is None else item.noise
        neighbours, count = neighbour_mask(item.data, noise, use, centre, radius, field)
        use = use & ~neighbours
    item.mask = use & lens_region(shape, centre, radius)
    return count


def refine_images(
    items: Sequence[FitImage],
    predictions: Mapping[tuple[str, str], Mapping[str, float]],
    configuration: FitConfiguration,
    settings: RefineSettings,
    *,
    on_fitted: Callable[[FitOutcome, np.ndarray], None] | None = None,
) -> list[FitOutcome]:
    """Fit every image of ``items`` from its prediction; one :class:`FitOutcome` per item, in their order.

    Args:
        items: the prepared images (:func:`lenscnn.modelling.inputs.load_images`), or why one could not be.
        predictions: the network's means and ``<name>_sigma`` per image
            (:func:`lenscnn.modelling.inputs.read_predictions`, keyed by
            :func:`lenscnn.modelling.inputs.image_key`), in lenscnn units (``theta_E`` in arcsec).
        configuration: the lens model to fit, its observation kwargs and the prior's parameter moments; its
            instrument's ``pixel_scale`` [arcsec/px] and ``background_rms`` (the noise of an image without a
            noise map) seed the source.
        settings: the fit per image, when it is reported converged, and the run's options (sky level,
            source seeding, network prior, seeds, worker processes).
        on_fitted: called in this process with each successful fit and the image data it fitted, as it
            finishes (e.g. to save its figure).

    The fits are tracked by a progress bar (:func:`lenscnn.progress.progress`).
    """
    model, observation, moments, instrument = (
        configuration.model,
        configuration.observation,
        configuration.moments,
        configuration.instrument,
    )
    names = fitted_names(model)
    outcomes: dict[int, FitOutcome] = {}
    jobs = []
    for k, item in enumerate(items):
        values = predictions.get(image_key(item.label))
        if not item.ok or values is None:
            error = item.error or f"no predictions for this image in {settings.predictions_source}"
            outcomes[k] = FitOutcome(item.label, f"failed: {error}")
            log.warning("%s: %s", item.label, error)
            continue
        sigmas = {n.removesuffix("_sigma"): v for n, v in values.items() if n.endswith("_sigma")}
        on_grid = shifted(values, item.shift)  # the network's values in this image's grid
        neighbours = fitted_pixels(item, on_grid, settings, instrument)
        pending = FitOutcome(
            item.label,
            "",
            network={n: values[n] for n in names if n in values},
            network_sigma={n: sigmas[n] for n in names if n in sigmas},
            neighbours_masked=neighbours,
            exposure_time=item.exposure_time,
            exposure_time_estimated=item.estimated,
        )
        seen = fit_kwargs.on_grid(observation, item.data.shape, instrument.pixel_scale)
        if item.psf is not None:  # the image's own PSF, when its file carries one
            seen["kwargs_psf"] = fit_kwargs.pixel_psf(item.psf)
        values = on_grid
        setup = fit_kwargs.lens_model_kwargs(values, sigmas, seen, moments, model, sky=settings.sky)
        if settings.seed_source:
            noise = instrument.background_rms if item.noise is None else float(np.median(item.noise))
            setup = fit_kwargs.seed_source(setup, item.data, noise, instrument.pixel_scale, item.mask)
        fit = FitSetup.from_kwargs(setup)
        jobs.append(
            (k, (pending, item, fit, settings.budget, settings.network_prior, settings.seed + k, settings.convergence))
        )
    with progress("fitting", total=len(jobs), unit="lenses") as tracker:
        for k, outcome in fit_all(jobs, settings.workers):
            outcome = replace(outcome, fitted=shifted(outcome.fitted, items[k].shift, -1.0))
            outcomes[k] = outcome
            if not outcome.ok:
                log.warning("%s: %s", outcome.image, outcome.status)
            elif on_fitted is not None:
                on_fitted(outcome, items[k].data)
            tracker.advance(1)
    return [outcomes[k] for k in range(len(items))]


def check_matching(
    inputs: str,
    shard: Any,
    predictions_path: str,
    predictions: Mapping[tuple[str, str], Any],
    items: Sequence[FitImage],
) -> None:
    """Refuse predictions made for other images: when none of this shard's ``items`` has a row (nor, in a
    shard, any file of the whole ``inputs``), the fit would only report "no predictions" for every image."""
    if any(image_key(item.label) in predictions for item in items):
        return
    if shard:  # this shard's images may be unpredicted while the others' are
        files = {str(Path(f).expanduser().resolve()) for f in find_inputs(str(inputs))}
        if any(path in files for path, _ in predictions):
            return
    raise UserError(
        f"predictions={predictions_file(predictions_path)} match none of the input images (e.g. {items[0].label}); "
        f"give the predictions lenscnn-predict made for input={inputs}"
    )


def refine(
    inputs: str,
    shard: Any,
    preparation: Preparation,
    predictions: Mapping[tuple[str, str], Mapping[str, float]],
    configuration: FitConfiguration,
    settings: RefineSettings,
    *,
    on_fitted: Callable[[FitOutcome, np.ndarray], None] | None = None,
) -> list[FitOutcome]:
    """Fit the images of shard ``"i/N"`` of ``inputs`` (prepared with ``preparation`` on the configuration's
    instrument: :func:`lenscnn.modelling.inputs.load_images`) from their ``predictions``
    (:func:`refine_images`); refused when the shard has no images or no prediction matches them."""
    kernel = configuration.observation["kwargs_psf"].get("kernel_point_source")
    kernel = None if kernel is None else np.asarray(kernel)
    plan = FieldPlan(settings.fit_field, predictions, configuration.instrument, preparation, kernel)
    items = load_images(inputs, configuration.instrument, preparation, shard=shard, plan=plan)
    if not items:
        raise UserError(f"input={inputs}: no images in this shard ({shard})")
    check_matching(inputs, shard, settings.predictions_source, predictions, items)
    return refine_images(items, predictions, configuration, settings, on_fitted=on_fitted)
