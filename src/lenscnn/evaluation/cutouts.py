"""Predictions for real (or simulated) cutouts as obtained: checked, prepared, predicted and flagged.

The shared core of ``lenscnn-predict`` and the real-lens catalogue of ``lenscnn-eval``: every file
is checked before the model is loaded (:func:`check_inputs`); then the images are prepared
(:mod:`lenscnn.preparation.pipeline`) and predicted batch by batch, each with the domain flags of
:mod:`lenscnn.preparation.domain`. A file that cannot be read or prepared becomes a result with its
reason; it never stops the others.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lenscnn.errors import UserError
from lenscnn.models.ensemble import Ensemble
from lenscnn.preparation.bands import BandFiles
from lenscnn.preparation.domain import DomainReference, predicted_arc_area, prepared_statistics
from lenscnn.preparation.images import prepared_images
from lenscnn.preparation.pipeline import Preparation, Prepared, check_readable

log = logging.getLogger(__name__)


@dataclass
class CutoutResult:
    """One image: its ``label`` (``file`` or ``file[k]``); when it could be prepared and predicted,
    ``prepared``, the ensemble's ``mean`` and ``sigma`` (``None`` without uncertainties) per target
    and the domain ``flags``; else the ``error`` that stopped it. ``wcs``: the input's celestial WCS."""

    label: str
    prepared: Prepared | None = None
    mean: np.ndarray | None = None
    sigma: np.ndarray | None = None
    flags: list[str] = field(default_factory=list)
    error: str | None = None
    wcs: object | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def check_inputs(
    files: Sequence[Path], settings: Preparation, per_file: Mapping[Path, Preparation] | None = None
) -> dict[Path, str]:
    """The files that cannot be read (not FITS, truncated, no such HDU), with the reason: found
    before a model is loaded (``per_file``: the settings of files prepared otherwise, e.g. a catalogue row's; a
    multi-band model's lenses are checked as they are found, :func:`lenscnn.preparation.bands.find_band_inputs`)."""
    per_file = per_file or {}
    return {p: reason for p in files if (reason := check_readable(p, per_file.get(p, settings))) is not None}


def domain_reference(
    ensemble: Ensemble, settings: Preparation, mc_samples: int = 0, symmetries: int | None = None
) -> DomainReference | None:
    """What ``ensemble`` was trained on, prepared as ``settings`` prepare inputs (sky subtracted or not) and
    predicted by it as inputs are (``mc_samples``, ``symmetries``: the ``uncertain`` check compares like
    with like); ``None`` (with a warning: no domain flags) when its checkpoint's simulator config cannot
    render."""

    def predict(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        cuda = [ensemble.device] if ensemble.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # MC-dropout answers do not depend on the reference's cache
            prediction = ensemble.predict(images, mc_samples, symmetries)
        return prediction.mean, prediction.sigma

    model = f"{ensemble.fingerprint()}/mc{mc_samples}/sym{ensemble.symmetries(symmetries)}"
    try:
        return DomainReference.cached(
            ensemble.simulator_config,
            ensemble.target_names,
            subtract_sky=settings.sky == "estimate",
            rescale=settings.units == "noise",
            cosmic_rays=settings.cosmic_rays is not False,
            predict=predict,
            model=model,
        )
    except UserError as exc:
        log.warning("no domain flags: the model's simulator config cannot render its training images (%s)", exc)
        return None


def model_noise_rms(ensemble: Ensemble, reference: DomainReference | None) -> tuple[float, ...] | None:
    """Per band, the background rms per pixel [counts/s] of the images ``ensemble`` was trained on, to which
    ``units=noise`` rescales inputs: the reference's measured median, else the instrument's (``None``
    for a checkpoint without a simulator config: inputs then stay in their own units)."""
    if reference is not None:
        return reference.noise_rms
    instrument = ensemble.simulator_config.get("instrument", {})
    if instrument.get("bands"):
        return tuple(float(band["noise"]["background_rms"]) for band in instrument["bands"])
    rms = instrument.get("noise", {}).get("background_rms")
    return None if rms is None else (float(rms),)


@dataclass(frozen=True)
class CutoutPredictor:
    """How cutouts are predicted: by ``ensemble`` (on its device), ``batch_size`` images at a time, with
    ``mc_samples`` MC-dropout passes per member and ``symmetries`` (1 or 8) flips/rotations averaged;
    flagged against its domain ``reference`` (``None``: no flags; inputs in ``units=noise`` then rescaled
    to the instrument's noise, :func:`model_noise_rms`); the files are prepared in ``workers`` processes while
    this one predicts (1: in this one)."""

    ensemble: Ensemble
    reference: DomainReference | None
    batch_size: int = 256
    mc_samples: int = 0
    symmetries: int = 1
    workers: int = 1

    def batches(
        self,
        files: Sequence[Path | BandFiles],
        settings: Preparation,
        refused: Mapping[Path | BandFiles, str],
        per_file: Mapping[Path, Preparation] | None = None,
    ) -> Iterator[tuple[list[CutoutResult], int]]:
        """Results in lists of at most ``batch_size`` images, in input order, each list with the number of
        files read to the end so far (:func:`lenscnn.preparation.images.prepared_images`: ``refused`` files,
        ``per_file`` settings). Only the batch in flight is held in memory."""
        pending: list[CutoutResult] = []
        done = 0
        images = prepared_images(
            files,
            settings,
            self.ensemble.image_size,
            self.ensemble.pixel_scale,
            refused=refused,
            noise_rms=model_noise_rms(self.ensemble, self.reference),
            per_file=per_file,
            workers=self.workers,
        )
        for image in images:
            done = image.files_done
            pending.append(CutoutResult(image.label, image.prepared, error=image.error, wcs=image.wcs))
            if sum(r.ok for r in pending) == self.batch_size:
                yield self.predict(pending), done
                pending = []
        if pending:
            yield self.predict(pending), done

    def predict(self, results: list[CutoutResult]) -> list[CutoutResult]:
        """Predict the prepared images of ``results`` at once and flag each (not without a ``reference``);
        failed ones pass through."""
        good = [r for r in results if r.ok]
        if not good:
            return results
        images = torch.stack([r.prepared.image for r in good])
        prediction = self.ensemble.predict(images, self.mc_samples, self.symmetries)
        mean = prediction.mean.cpu().numpy()
        sigma = None if prediction.sigma is None else prediction.sigma.cpu().numpy()
        for k, result in enumerate(good):
            result.mean = mean[k]
            result.sigma = None if sigma is None else sigma[k]
        if self.reference is None:
            return results
        records = [r.prepared.record for r in good]
        first = images[:, :1]  # the flags are measured on the first band, as the reference's are
        stats = prepared_statistics(first, records, self.reference.background_rms, self.ensemble.pixel_scale)
        noise = stats["noise"] * self.reference.background_rms
        names, scale = self.ensemble.target_names, self.ensemble.pixel_scale
        areas = predicted_arc_area(first, noise, prediction.mean, names, scale)
        stats = {k: v.tolist() for k, v in stats.items()}
        for k, result in enumerate(good):
            record = result.prepared.record
            zoom = result.prepared.zoom
            result.flags = self.reference.flags(
                {name: values[k] for name, values in stats.items()},
                psf_fwhm=record["psf_fwhm"],
                pixel_scale_assumed=record["pixel_scale_assumed"],
                zoom=float(np.sqrt(zoom[0] * zoom[1])),
                prediction=dict(zip(self.ensemble.target_names, mean[k].tolist(), strict=True)),
                sigma=None if sigma is None else dict(zip(self.ensemble.target_names, sigma[k].tolist(), strict=True)),
                arcs=None if areas is None else float(areas[k]),
            )
        return results
