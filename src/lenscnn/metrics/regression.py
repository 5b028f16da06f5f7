"""Per-target regression metrics in physical units: torchmetrics for training, tensors for evaluation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection
from torchmetrics.functional import mean_absolute_error, mean_squared_error

from lenscnn.metrics.calibration import coverage


class Bias(Metric):
    """Mean signed error ``mean(prediction - truth)`` per output."""

    full_state_update = False

    def __init__(self, num_outputs: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.add_state("sum_error", default=torch.zeros(num_outputs), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.sum_error += (preds - target).sum(0).to(self.sum_error.dtype)
        self.count += preds.shape[0]

    def compute(self) -> Tensor:
        return self.sum_error / self.count


def regression_metrics(num_targets: int) -> MetricCollection:
    """RMSE, MAE and bias, each a vector over targets (reduced across processes)."""
    return MetricCollection(
        {
            "rmse": MeanSquaredError(squared=False, num_outputs=num_targets),
            "mae": MeanAbsoluteError(num_outputs=num_targets),
            "bias": Bias(num_outputs=num_targets),
        }
    )


def per_target(values: dict[str, Tensor], names: Sequence[str], prefix: str) -> dict[str, Tensor]:
    """Flatten ``{metric: Tensor[T]}`` into ``{f"{prefix}/{metric}/{name}": scalar}``."""
    out = {}
    for metric, vector in values.items():
        vector = vector.reshape(-1)
        for k, name in enumerate(names):
            out[f"{prefix}/{metric}/{name}"] = vector[k]
    return out


def robust_sigma(error: Tensor) -> Tensor:
    """Normalised median absolute deviation ``1.4826 median|e - median e|`` per column (the
    standard deviation for Gaussian errors, insensitive to outliers)."""
    centred = error - error.median(0).values
    return 1.4826 * centred.abs().median(0).values


def evaluation_metrics(
    truth: Tensor, mean: Tensor, sigma: Tensor | None, names: Sequence[str], outlier_nsigma: float = 3.0
) -> dict[str, dict[str, float]]:
    """Per-target metrics of predictions ``(N, T)`` in physical units.

    Always: ``rmse``, ``mae``, ``bias`` (mean of prediction - truth), ``median_abs_error`` and
    ``outlier_fraction`` (share of lenses with ``|error| > outlier_nsigma`` robust standard
    deviations, see :func:`robust_sigma`). With predicted ``sigma``: ``nll`` (mean Gaussian
    negative log-likelihood per lens, nats, with its ``log 2 pi`` constant), ``coverage_68``
    and ``coverage_95`` (share of truths inside the central 68% and 95% intervals).
    """
    truth, mean = truth.double(), mean.double()
    error = mean - truth
    values: dict[str, Tensor] = {
        "rmse": torch.stack([mean_squared_error(mean[:, k], truth[:, k], squared=False) for k in range(len(names))]),
        "mae": torch.stack([mean_absolute_error(mean[:, k], truth[:, k]) for k in range(len(names))]),
        "bias": error.mean(0),
        "median_abs_error": error.abs().median(0).values,
        "outlier_fraction": (error.abs() > outlier_nsigma * robust_sigma(error)).double().mean(0),
    }
    if sigma is not None:
        sigma = sigma.double()
        values["nll"] = (0.5 * (error / sigma).square() + torch.log(sigma) + 0.5 * math.log(2 * math.pi)).mean(0)
        values["coverage_68"] = coverage(error, sigma, 0.68)
        values["coverage_95"] = coverage(error, sigma, 0.95)
    return {name: {metric: float(v[k]) for metric, v in values.items()} for k, name in enumerate(names)}
