"""Evaluation outputs: ``metrics.json``, ``metrics.csv``, ``predictions.csv``, ``comparison.{md,csv}``,
``plots/*.png`` and ``report.md``.

Every file is written to a temporary sibling and renamed, so a failed run leaves no
half-written file and never clobbers a good one.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from lenscnn import plots
from lenscnn.evaluation.pipeline import EvaluationResult
from lenscnn.evaluation.scoring import Predictions, curve
from lenscnn.io.atomic import atomic_path, write_text
from lenscnn.io.predictions import target_columns, write_table
from lenscnn.io.run_dir import RunDir
from lenscnn.io.summaries import EvaluationSummary
from lenscnn.metrics.calibration import CURVE_LEVELS
from lenscnn.metrics.tables import MetricsTable, markdown_table
from lenscnn.models.calibration_record import calibration_fit


def write_metrics_csv(path: Path, metrics: Mapping[str, Mapping[str, float]]) -> None:
    """One row per target: its unit and every metric ``lenscnn-eval`` reports (empty if missing)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(MetricsTable(metrics).csv_rows())


def write_predictions_csv(path: Path, predictions: Predictions) -> None:
    """One row per lens (:mod:`lenscnn.io.predictions`): its ``index``, then per target ``<t>_true``, ``<t>``
    and (if predicted) ``<t>_sigma``."""
    p = predictions
    kinds = ["true", "value", "sigma"] if p.sigma is not None else ["true", "value"]
    tables = [p.truth, p.mean] + ([p.sigma] if p.sigma is not None else [])
    columns = torch.stack([t.double().cpu() for t in tables], dim=-1).flatten(1).tolist()  # (lens, target * kind)
    write_table(path, ["index", *target_columns(p.names, kinds)], ([i, *row] for i, row in enumerate(columns)))


def write_report(
    path: Path,
    summary: EvaluationSummary,
    figures: Sequence[str],
    comparison: str | None = None,
) -> None:
    """``report.md``: what was evaluated, the metric table, calibration, comparison and plots."""
    lines = [
        "# lenscnn evaluation report",
        "",
        f"- model: {', '.join(summary.members)}",
        f"- data: {summary.dataset}",
        f"- lenses: {summary.n}; MC-dropout passes per member: {summary.mc_samples}",
        f"- normalised RMSE (mean over targets of RMSE / prior std): {summary.nrmse:.4f}",
        "",
        "## Metrics (physical units)",
        "",
        MetricsTable(summary.metrics).markdown(),
        "",
        "Outliers: |error| above "
        f"{summary.outlier_nsigma:g} robust (NMAD) standard deviations. NLL in nats per lens. "
        "Coverage: share of true values inside the central 68% / 95% Gaussian interval.",
    ]
    calibration = summary.calibration
    if calibration:
        lines += ["", "## Calibration", "", calibration_markdown(calibration)]
    if comparison:
        lines += ["", "## Members and ensemble", "", comparison]
    if figures:
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(f).stem}]({f})" for f in figures]
    write_text(path, "\n".join(lines) + "\n")


def calibration_markdown(calibration: Mapping[str, Any]) -> str:
    """Coverage on the test set before and after calibration, and the fitted power law per target."""
    before, after = calibration["coverage_before"], calibration.get("coverage_after")
    fit = calibration_fit(calibration, list(before), "the calibration record")
    header = ["target", "sigma scale", "sigma power", "68% before", "95% before"]
    if after:
        header += ["68% after", "95% after"]
    rows = []
    for name, scale, power in zip(before, fit.scale.tolist(), fit.power.tolist(), strict=True):
        row = [name, f"{scale:.3f}", f"{power:.3f}"]
        row += [f"{before[name]['coverage_68']:.3f}", f"{before[name]['coverage_95']:.3f}"]
        if after:
            row += [f"{after[name]['coverage_68']:.3f}", f"{after[name]['coverage_95']:.3f}"]
        rows.append(row)
    note = f"\n\nFitted on: {calibration.get('fitted_on', 'unknown')}."
    return markdown_table(header, rows) + note


def evaluation_figures(test: Predictions, calibration: Mapping[str, Any] | None) -> dict[str, Figure]:
    """Predicted against true values, residual histograms and (with sigma) calibration curves,
    before and after calibration when one was fitted."""
    names = test.names
    truth, mean = test.truth.numpy(), test.mean.numpy()
    sigma = None if test.sigma is None else test.sigma.numpy()
    figures = {
        "predicted_vs_true": plots.predicted_vs_true_figure(truth, mean, sigma, names),
        "residuals": plots.residual_histograms_figure(truth, mean, names),
    }
    if sigma is not None:
        curves = {"as predicted": curve(test)}
        if calibration is not None:
            raw = calibration_fit(calibration, names, "the calibration record").invert(test.sigma.double())
            curves = {"before calibration": curve(test, raw), "after calibration": curves["as predicted"]}
        figures["calibration"] = plots.calibration_figure(np.array(CURVE_LEVELS), curves, names)
    return figures


def write_comparison(run_dir: Path, result: EvaluationResult) -> None:
    """``comparison.md`` and ``comparison.csv`` (normalised RMSE of each member and the ensemble)."""
    comparison = result.summary.comparison
    write_text(run_dir / "comparison.md", result.comparison_md + "\n")
    rows = [[src, f"{v:.6f}"] for src, v in comparison["members"].items()]
    rows.append(["ensemble", f"{comparison['ensemble']:.6f}"])
    write_text(run_dir / "comparison.csv", "model,nrmse\n" + "\n".join(",".join(r) for r in rows) + "\n")


def write_outputs(run_dir: Path, result: EvaluationResult, figures: Mapping[str, Figure] | None = None) -> None:
    """Every evaluation file into ``run_dir``: the figures as ``plots/<name>.png`` (closed after),
    the CSVs, the comparison, ``report.md`` and last ``metrics.json`` (a run directory with a
    ``metrics.json`` is complete)."""
    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    write_predictions_csv(run.predictions, result.test)
    write_metrics_csv(run.metrics_csv, result.metrics)
    files = []
    if figures:
        run.plots.mkdir(exist_ok=True)
        try:
            for key, fig in figures.items():
                path = run.plots / f"{key}.png"
                plots.save_figure(fig, path, dpi=100)
                files.append(path.relative_to(run.path).as_posix())
        finally:  # when one cannot be written, the figures after it are closed too
            for fig in figures.values():
                plt.close(fig)
    if result.comparison_md:
        write_comparison(run_dir, result)
    write_report(run.report, result.summary, files, result.comparison_md)
    result.summary.write(run.metrics)
