"""End-of-run summary: test errors per target next to the prior-mean baseline; metrics.json."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from rich.table import Table

from lenscnn.data.normalization import TargetScaler
from lenscnn.metrics.tables import Column, MetricsTable

#: Columns of the end-of-run table: the test errors and the prior-mean baseline.
SUMMARY_COLUMNS = (
    Column("rmse", "RMSE", fmt="{:.4f}"),
    Column("mae", "MAE", fmt="{:.4f}"),
    Column("bias", "bias", fmt="{:+.4f}"),
    Column("prior_mean_rmse", "prior-mean RMSE", fmt="{:.4f}"),
    Column("rmse_ratio", "RMSE / prior-mean", fmt="{:.3f}"),
)


def prior_mean_rmse(
    scaler: TargetScaler, batches: Iterable[Mapping[str, Any]], trainer: pl.Trainer | None = None
) -> dict[str, float]:
    """RMSE of always predicting the prior mean, per target, over the given batches.

    With a distributed ``trainer`` every rank passes its own shard of the set (and must call
    this), and the sums are added over the ranks: the result is that of the whole set.
    """
    sums = torch.zeros(len(scaler.names) + 1, dtype=torch.float64)  # squared errors per target, count
    for batch in batches:
        truth = scaler.stack(batch["params"]).double()
        sums[:-1] += (truth - torch.tensor(scaler.mean, dtype=torch.float64)).square().sum(0)
        sums[-1] += truth.shape[0]
    if trainer is not None and trainer.world_size > 1:
        sums = trainer.strategy.reduce(sums.to(trainer.strategy.root_device), reduce_op="sum").cpu()
    n = float(sums[-1])
    return {name: math.sqrt(float(v) / n) for name, v in zip(scaler.names, sums[:-1], strict=True)}


def error_table(
    test: Mapping[str, float], baseline: Mapping[str, float], names: Iterable[str], width: int | None = None
) -> Table:
    """The test errors per target (``test/<metric>/<name>`` from Lightning's test results) beside
    the RMSE of always predicting the prior mean (transposed when wider than ``width``)."""
    metrics = {
        name: {m: test[f"test/{m}/{name}"] for m in ("rmse", "mae", "bias")}
        | {"prior_mean_rmse": baseline[name], "rmse_ratio": test[f"test/rmse/{name}"] / baseline[name]}
        for name in names
    }
    return MetricsTable(metrics, SUMMARY_COLUMNS).rich("test set: errors in physical units", width)
