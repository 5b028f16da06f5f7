"""The lenses of a population: per-lens Gaussian posteriors from ``predictions.csv`` files and the training
prior of the one model that made them (its ``model.json``: :func:`lenscnn.evaluation.predict_files.model_record`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lenscnn.errors import UserError
from lenscnn.io.predictions import column, predictions_file, read_model_record, read_table
from lenscnn.io.run_dir import RunDir
from lenscnn.population.hierarchy import INTERIM_DRAWS, InterimPrior

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lenses:
    """Every lens predicted well enough to count: its ``labels`` and, per target, the posterior ``means`` and
    ``sigmas`` (N,) [the target's unit]; ``model``: the record of the model that made them (``model.json``)."""

    labels: list[str]
    means: dict[str, np.ndarray]
    sigmas: dict[str, np.ndarray]
    model: dict[str, Any]

    def __len__(self) -> int:
        return len(self.labels)


def read_model(table: Path) -> dict[str, Any]:
    """The ``model.json`` beside ``table``; refused when absent (the training prior is then unknown)."""
    model = read_model_record(table)
    if model is None:
        raise UserError(
            f"{table}: no model.json beside it, so the training prior its posteriors carry is unknown; "
            "predict again with lenscnn-predict, which writes it"
        )
    if not isinstance(model, dict) or not (model.get("simulator") or {}).get("prior"):
        raise UserError(f"{RunDir(table.parent).model}: holds no simulator prior; predict again with lenscnn-predict")
    return model


def read_lenses(paths: Sequence[str | Path], targets: Sequence[str], keep_flagged: bool = False) -> Lenses:
    """The lenses of every ``predictions.csv`` (or ``lenscnn-predict`` run directory) in ``paths`` with a
    prediction and a sigma of every target; rows that failed, and (unless ``keep_flagged``) rows flagged
    as unlike the training images, are left out with a log line. Refused: files of different models or
    training priors (one interim prior is divided out), a target the model does not predict or without
    sigma, or no lens left."""
    if not paths:
        raise UserError("no predictions: give predictions=<predictions.csv or lenscnn-predict run dir> (or a list)")
    labels: list[str] = []
    values: dict[str, list[float]] = {c: [] for t in targets for c in (column(t), column(t, "sigma"))}
    model = None
    for path in paths:
        table_path = predictions_file(path)
        if not table_path.is_file():
            raise UserError(f"predictions={path}: no predictions.csv there; run lenscnn-predict first")
        own = read_model(table_path)
        if model is None:
            model, first = own, table_path
        elif own["fingerprint"] != model["fingerprint"] or own["simulator"]["prior"] != model["simulator"]["prior"]:
            raise UserError(
                f"{table_path} and {first} were predicted by different models or training priors; a population is "
                "inferred from the predictions of one model (its one interim prior is divided out)"
            )
        table = read_table(table_path)
        missing = [c for c in values if c not in table.columns]
        if missing:
            raise UserError(
                f"{table_path}: no column {missing[0]!r}: the model predicts {model['targets']}, with a sigma when it "
                "gives one; infer the population of targets it predicts"
            )
        skipped = flagged = 0
        for row in table.rows:
            if not row.get("status", "ok").startswith("ok") or any(row.get(c) in ("", None) for c in values):
                skipped += 1
                continue
            if row.get("flags") and not keep_flagged:
                flagged += 1
                continue
            labels.append(row.get("image") or row.get("name") or str(len(labels)))
            for c in values:
                values[c].append(float(row[c]))
        if skipped or flagged:
            log.info(
                "%s: left out %d failed and %d flagged rows (keep_flagged=true keeps those)",
                table_path,
                skipped,
                flagged,
            )
    if not labels:
        raise UserError(f"no lens with a prediction of {list(targets)} in {[str(p) for p in paths]}")
    means = {t: np.array(values[column(t)]) for t in targets}
    sigmas = {t: np.array(values[column(t, "sigma")]) for t in targets}
    bad = [t for t in targets if not (np.all(np.isfinite(means[t])) and np.all(sigmas[t] > 0))]
    if bad:
        raise UserError(f"the predictions of {bad[0]} hold non-finite values or sigmas <= 0")
    return Lenses(labels, means, sigmas, model)


def interim_priors(model: dict[str, Any], targets: Sequence[str], draws: int | None = None) -> dict[str, InterimPrior]:
    """The marginal training prior of each target, tabulated from ``draws`` (:data:`INTERIM_DRAWS`) lenses
    drawn from the model's own prior config (:class:`lenscnn.sim.prior.Prior`, galaxy sources left out: they
    do not change the lens parameters), with a fixed seed."""
    from lenscnn.sim.prior import Prior
    from lenscnn.sim.prior_config import without_galaxies

    prior = Prior(without_galaxies(model["simulator"]["prior"]))
    generator = torch.Generator().manual_seed(0)
    drawn = prior.sample(draws or INTERIM_DRAWS, generator, "cpu", torch.float64)
    missing = [t for t in targets if t not in drawn]
    if missing:
        raise UserError(f"the model's training prior draws no {missing[0]!r}: it has {sorted(drawn)}")
    return {t: InterimPrior.from_draws(drawn[t].numpy()) for t in targets}
