"""An ensemble run over an evaluation set and scored: its predictions, metrics and calibration
(:func:`lenscnn.evaluation.pipeline.evaluate` puts these steps together)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from lenscnn.errors import UserError
from lenscnn.evaluation.datasets import EvaluationSet
from lenscnn.metrics.calibration import (
    CURVE_LEVELS,
    LEVELS,
    SigmaCalibration,
    calibration_curve,
    coverage,
    fit_sigma_calibration,
)
from lenscnn.metrics.regression import evaluation_metrics
from lenscnn.models.ensemble import Ensemble
from lenscnn.progress import progress


@dataclass
class Predictions:
    """Truth and prediction ``(N, T)`` of every lens of a set, in physical units (CPU tensors).

    ``sigma`` is the (calibrated) total standard deviation; ``members`` holds each member's
    mean alone when members were compared.
    """

    names: tuple[str, ...]
    truth: Tensor
    mean: Tensor
    sigma: Tensor | None
    aleatoric: Tensor | None
    epistemic: Tensor | None
    members: list[Tensor] = field(default_factory=list)

    @property
    def residual(self) -> Tensor:
        """``truth - mean``."""
        return self.truth - self.mean


def _predict_batch(
    ensemble: Ensemble,
    images: Tensor,
    params: dict[str, Tensor],
    names: tuple[str, ...],
    mc_samples: int,
    members: bool,
    parts: dict[str, list[Tensor]],
    symmetries: int = 1,
) -> None:
    """Append one batch's truth and predictions to ``parts`` (on the CPU)."""
    prediction = ensemble.predict(images, mc_samples, symmetries)
    parts["truth"].append(torch.stack([params[n] for n in names], -1).float().cpu())
    for key in ("mean", "sigma", "aleatoric", "epistemic"):
        value = getattr(prediction, key)
        if value is not None:
            parts[key].append(value.cpu())
    if members:
        parts["members"].append(prediction.member_means.cpu())


def predict_set(
    ensemble: Ensemble,
    dataset: EvaluationSet,
    batch_size: int = 256,
    mc_samples: int = 0,
    members: bool = False,
    show_progress: bool = False,
    symmetries: int = 1,
) -> Predictions:
    """Predict every lens of ``dataset`` on the ensemble's device (rendering simulated sets there).

    Args:
        members: also record each member's own mean prediction (for a member comparison).
        show_progress: a progress bar on a terminal, log lines otherwise (:mod:`lenscnn.progress`).
        symmetries: 1, or 8 to average every prediction over the image's flips and quarter-turns
            (:meth:`Ensemble.predict`).
    """
    names = ensemble.target_names
    missing = [n for n in names if n not in (dataset.params or dataset.lenses.params)]
    if missing:
        raise UserError(f"{dataset.description}: has no true {missing}, which the model predicts")
    dataset.check_geometry(ensemble.image_size, ensemble.pixel_scale)
    parts: dict[str, list[Tensor]] = {k: [] for k in ("truth", "mean", "sigma", "aleatoric", "epistemic", "members")}
    shown = (
        progress(f"predicting {dataset.description}", total=dataset.size, unit="lenses")
        if show_progress
        else contextlib.nullcontext()
    )
    with shown as tracker:
        for images, params in dataset.batches(batch_size, ensemble.device):
            _predict_batch(ensemble, images, params, names, mc_samples, members, parts, symmetries)
            if tracker is not None:
                tracker.advance(images.shape[0])
    joined = {k: torch.cat(v, dim=1 if k == "members" else 0) if v else None for k, v in parts.items()}
    return Predictions(
        names,
        joined["truth"],
        joined["mean"],
        joined["sigma"],
        joined["aleatoric"],
        joined["epistemic"],
        list(joined["members"]) if members else [],
    )


def normalised_rmse(truth: Tensor, mean: Tensor, prior_std: Sequence[float]) -> float:
    """Mean over targets of RMSE / prior standard deviation (the training's ``nrmse``)."""
    rmse = (mean.double() - truth.double()).square().mean(0).sqrt()
    return float((rmse / torch.tensor(prior_std, dtype=torch.float64)).mean())


def score(predictions: Predictions, outlier_nsigma: float = 3.0) -> dict[str, dict[str, float]]:
    """Per-target metrics of :func:`lenscnn.metrics.regression.evaluation_metrics`."""
    p = predictions
    return evaluation_metrics(p.truth, p.mean, p.sigma, p.names, outlier_nsigma)


def coverage_table(residual: Tensor, sigma: Tensor, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{target: {"coverage_68": ..., "coverage_95": ...}}``."""
    values = {f"coverage_{round(p * 100)}": coverage(residual, sigma, p) for p in LEVELS}
    return {n: {k: float(v[i]) for k, v in values.items()} for i, n in enumerate(names)}


def calibrate(validation: Predictions) -> SigmaCalibration:
    """Per-target sigma recalibration fitted on validation predictions (:func:`fit_sigma_calibration`)."""
    return fit_sigma_calibration(validation.residual.double(), validation.sigma.double())


def curve(predictions: Predictions, sigma: Tensor | None = None) -> np.ndarray:
    """Calibration curve ``(L, T)`` at :data:`CURVE_LEVELS` of the predictions' sigma (or ``sigma``)."""
    sigma = (predictions.sigma if sigma is None else sigma).double()
    return calibration_curve(predictions.residual.double(), sigma, CURVE_LEVELS).numpy()
