"""End-of-run summary: test errors per target next to the prior-mean baseline; metrics.json."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from rich.console import Console
from rich.table import Table

from lenscnn.data.normalization import TargetScaler

UNITS = {"theta_E": "arcsec", "center_x": "arcsec", "center_y": "arcsec"}


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


def error_table(test: Mapping[str, float], baseline: Mapping[str, float], names: Iterable[str]) -> Table:
    table = Table(title="test set: errors in physical units")
    for column in ("target", "unit", "RMSE", "MAE", "bias", "prior-mean RMSE", "RMSE / prior-mean"):
        table.add_column(column, justify="left" if column in ("target", "unit") else "right")
    for name in names:
        rmse = test[f"test/rmse/{name}"]
        table.add_row(
            name,
            UNITS.get(name, "-"),
            f"{rmse:.4f}",
            f"{test[f'test/mae/{name}']:.4f}",
            f"{test[f'test/bias/{name}']:+.4f}",
            f"{baseline[name]:.4f}",
            f"{rmse / baseline[name]:.3f}",
        )
    return table


def print_table(table: Table) -> None:
    Console().print(table)
