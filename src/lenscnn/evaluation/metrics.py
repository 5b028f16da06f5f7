"""Per-target regression metrics (torchmetrics), in physical units."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection


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
