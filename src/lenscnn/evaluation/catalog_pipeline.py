"""One catalogue evaluation: prepare and predict every cutout of a real-lens catalogue, then score the
predictions against its references (:mod:`lenscnn.metrics.reference`).

Cutouts go through the same preparation and domain flags as ``lenscnn-predict``
(:meth:`lenscnn.evaluation.cutouts.CutoutPredictor.batches`). A cutout that cannot be read or prepared keeps
its row with the reason and is left out of the metrics; a lens flagged as unlike the training images
is scored and counted (``flagged``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lenscnn.evaluation.catalog import Catalog
from lenscnn.evaluation.cutouts import CutoutPredictor, CutoutResult
from lenscnn.io.summaries import CatalogSummary
from lenscnn.metrics.reference import reference_metrics, z_scores
from lenscnn.preparation.pipeline import Preparation
from lenscnn.progress import progress

log = logging.getLogger(__name__)


@dataclass
class TargetValues:
    """One target over every catalogue row ``(N,)``: the prediction and its sigma (NaN where the
    cutout failed; ``sigma`` ``None`` for a model without uncertainties), the reference and its
    errors (NaN: not given), the z-score (NaN unless scored) and ``scored``: the rows in its metrics
    (predicted, with a reference)."""

    pred: np.ndarray
    sigma: np.ndarray | None
    ref: np.ndarray
    err_low: np.ndarray
    err_high: np.ndarray
    z: np.ndarray
    scored: np.ndarray


@dataclass
class CatalogResult:
    """What a catalogue evaluation found: the ``catalog``, each row's :class:`CutoutResult`
    (``results``, in catalogue order), the scored ``targets`` with their :class:`TargetValues`, and
    ``summary``, the ``metrics.json`` content."""

    catalog: Catalog
    results: list[CutoutResult]
    values: dict[str, TargetValues]
    summary: CatalogSummary

    @property
    def targets(self) -> list[str]:
        return list(self.values)

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        return self.summary.metrics

    @property
    def flagged(self) -> np.ndarray:
        return flagged_rows(self.results)


def flagged_rows(results: list[CutoutResult]) -> np.ndarray:
    """Per row: predicted, but flagged as unlike the training images."""
    return np.array([r.ok and bool(r.flags) for r in results], dtype=bool)


def predict_catalog(
    catalog: Catalog,
    settings: Preparation,
    refused: Mapping[Path, str],
    predictor: CutoutPredictor,
    per_file: Mapping[Path, Preparation] | None = None,
) -> list[CutoutResult]:
    """One :class:`CutoutResult` per catalogue row, in order (each file holds one image: a row
    ``refused`` for holding more gets that reason; ``per_file``: the rows' own settings,
    :meth:`Catalog.preparations`); a line is logged per failed or flagged lens."""
    results: list[CutoutResult] = []
    with progress("predicting", total=len(catalog), unit="lenses", logger=log) as bar:
        batches = predictor.batches(catalog.files, settings, refused, per_file)
        for batch, _ in batches:
            results += batch
            bar.advance(len(batch))
    if len(results) != len(catalog):  # one image per file was checked before
        raise RuntimeError(f"{len(results)} images from the {len(catalog)} files of {catalog.path}")
    for name, result in zip(catalog.names, results, strict=True):
        if not result.ok:
            log.error("%s: failed, left out of the metrics: %s", name, result.error)
        elif result.flags:
            log.warning("%s: unlike the training images: %s", name, "; ".join(result.flags))
    return results


def target_values(catalog: Catalog, results: list[CutoutResult], target: str, index: int) -> TargetValues:
    """:class:`TargetValues` of ``target``, output ``index`` of the model."""
    ok = np.array([r.ok for r in results])
    pred = np.array([r.mean[index] if r.ok else np.nan for r in results], dtype=np.float64)
    with_sigma = any(r.ok and r.sigma is not None for r in results)
    sigma = np.array([r.sigma[index] if r.ok else np.nan for r in results], dtype=np.float64) if with_sigma else None
    ref = catalog.references[target]
    scored = ok & np.isfinite(ref.value)
    z = np.full(len(results), np.nan)
    z[scored] = z_scores(
        pred[scored],
        None if sigma is None else sigma[scored],
        ref.value[scored],
        ref.err_low[scored],
        ref.err_high[scored],
    )
    return TargetValues(pred, sigma, ref.value, ref.err_low, ref.err_high, z, scored)


def score_catalog(values: TargetValues, flagged: np.ndarray) -> dict[str, Any]:
    """The metrics of one target (:func:`lenscnn.metrics.reference.reference_metrics`) over its
    scored rows; only ``n`` and ``flagged`` (0) when none is."""
    s = values.scored
    if not s.any():
        return {"n": 0, "flagged": 0}
    return reference_metrics(
        values.pred[s],
        None if values.sigma is None else values.sigma[s],
        values.ref[s],
        values.err_low[s],
        values.err_high[s],
        flagged[s],
    )


def evaluate_catalog(
    catalog: Catalog,
    settings: Preparation,
    refused: Mapping[Path, str],
    predictor: CutoutPredictor,
    per_file: Mapping[Path, Preparation] | None = None,
) -> CatalogResult:
    """Predict every lens of ``catalog`` (on the ensemble's device) and score the targets it gives.

    The ``summary`` (``metrics.json``, :class:`CatalogSummary`): the model (``members``), the catalogue,
    the counts of lenses (``n``, ``n_ok``, ``n_failed``, ``n_flagged``), the scored ``targets`` and which
    error columns were read, the prediction settings and ``preparation``, the ``metrics`` per target and ``nrmse``
    (mean over targets of RMSE / the training prior's standard deviation; ``None`` without any)."""
    ensemble = predictor.ensemble
    targets = catalog.targets(ensemble.target_names)
    for target in targets:
        if catalog.references[target].errors == "none":
            column = catalog.references[target].column
            log.warning(
                "%s: no %s_err or %s_err_low/_err_high column: its references count as exact",
                catalog.path,
                column,
                column,
            )
    results = predict_catalog(catalog, settings, refused, predictor, per_file)
    names = list(ensemble.target_names)
    values = {t: target_values(catalog, results, t, names.index(t)) for t in targets}
    flagged = flagged_rows(results)
    metrics = {t: score_catalog(v, flagged) for t, v in values.items()}
    prior_std = [float(s) for s in ensemble.reference.scaler.std]
    normalised = [metrics[t]["rmse"] / prior_std[names.index(t)] for t in targets if metrics[t].get("rmse") is not None]
    ok = sum(r.ok for r in results)
    summary = CatalogSummary(
        members=list(ensemble.sources),
        dataset=catalog.description,
        references=str(catalog.path.resolve()),
        n=len(results),
        n_ok=ok,
        n_failed=len(results) - ok,
        n_flagged=int(flagged.sum()),
        targets=targets,
        reference_errors={t: catalog.references[t].errors for t in targets},
        reference_columns={t: catalog.references[t].column for t in targets},
        mc_samples=predictor.mc_samples,
        symmetries=predictor.symmetries,
        **ensemble.sigma_calibration.by_target(names),
        preparation=dataclasses.asdict(settings),
        metrics=metrics,
        nrmse=float(np.mean(normalised)) if normalised else None,
    )
    return CatalogResult(catalog, results, values, summary)
