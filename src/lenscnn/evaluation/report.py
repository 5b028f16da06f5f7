"""Evaluation outputs: ``metrics.json``, ``metrics.csv``, ``predictions.csv``, ``report.md``.

Every file is written to a temporary sibling and renamed, so a failed run leaves no
half-written file and never clobbers a good one.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from lenscnn.evaluation.evaluate import Predictions
from lenscnn.io.atomic import atomic_path, write_text
from lenscnn.training.summary import UNITS

#: Column order of ``metrics.csv`` (metrics a model without uncertainties lacks are left empty).
METRIC_COLUMNS = (
    "rmse",
    "mae",
    "bias",
    "median_abs_error",
    "outlier_fraction",
    "nll",
    "coverage_68",
    "coverage_95",
)


#: Column titles of the terminal table (narrow terminals).
SHORT_NAMES = {
    "median_abs_error": "med|err|",
    "outlier_fraction": "outliers",
    "coverage_68": "cov68",
    "coverage_95": "cov95",
}


def write_metrics_csv(path: Path, metrics: Mapping[str, Mapping[str, float]]) -> None:
    """One row per target: its unit and every metric of :data:`METRIC_COLUMNS`."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["target", "unit", *METRIC_COLUMNS])
        for name, values in metrics.items():
            writer.writerow([name, UNITS.get(name, ""), *(_fmt(values.get(c)) for c in METRIC_COLUMNS)])


def write_predictions_csv(path: Path, predictions: Predictions) -> None:
    """One row per lens: ``true_<t>``, ``pred_<t>`` and (if predicted) ``sigma_<t>`` per target."""
    p = predictions
    columns = [
        f"{kind}_{n}" for n in p.names for kind in ("true", "pred", "sigma") if kind != "sigma" or p.sigma is not None
    ]
    tables = {"true": p.truth.tolist(), "pred": p.mean.tolist(), "sigma": None if p.sigma is None else p.sigma.tolist()}
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", *columns])
        for i in range(len(tables["true"])):
            row = [i]
            for k in range(len(p.names)):
                row += [_fmt(tables["true"][i][k]), _fmt(tables["pred"][i][k])]
                if tables["sigma"] is not None:
                    row.append(_fmt(tables["sigma"][i][k]))
            writer.writerow(row)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.7g}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def metrics_markdown(metrics: Mapping[str, Mapping[str, float]]) -> str:
    present = [c for c in METRIC_COLUMNS if any(c in v for v in metrics.values())]
    rows = [[name, UNITS.get(name, "-"), *(f"{values[c]:.4g}" for c in present)] for name, values in metrics.items()]
    return markdown_table(["target", "unit", *present], rows)


def write_report(
    path: Path,
    payload: Mapping[str, Any],
    figures: Sequence[str],
    comparison: str | None = None,
) -> None:
    """``report.md``: what was evaluated, the metric table, calibration, comparison and plots."""
    lines = [
        "# lenscnn evaluation report",
        "",
        f"- model: {', '.join(payload['members'])}",
        f"- data: {payload['dataset']}",
        f"- lenses: {payload['n']}; MC-dropout passes per member: {payload['mc_samples']}",
        f"- normalised RMSE (mean over targets of RMSE / prior std): {payload['nrmse']:.4f}",
        "",
        "## Metrics (physical units)",
        "",
        metrics_markdown(payload["metrics"]),
        "",
        "Outliers: |error| above "
        f"{payload['outlier_nsigma']:g} robust (NMAD) standard deviations. NLL in nats per lens. "
        "Coverage: share of true values inside the central 68% / 95% Gaussian interval.",
    ]
    calibration = payload.get("calibration")
    if calibration:
        lines += ["", "## Calibration", "", calibration_markdown(calibration)]
    if comparison:
        lines += ["", "## Members and ensemble", "", comparison]
    if figures:
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(f).stem}]({f})" for f in figures]
    write_text(path, "\n".join(lines) + "\n")


def calibration_markdown(calibration: Mapping[str, Any]) -> str:
    """Coverage on the test set before and after calibration, and the scale per target."""
    before, after, scale = calibration["coverage_before"], calibration.get("coverage_after"), calibration["sigma_scale"]
    header = ["target", "sigma scale", "68% before", "95% before"]
    if after:
        header += ["68% after", "95% after"]
    rows = []
    for name in before:
        row = [name, f"{scale[name]:.3f}", f"{before[name]['coverage_68']:.3f}", f"{before[name]['coverage_95']:.3f}"]
        if after:
            row += [f"{after[name]['coverage_68']:.3f}", f"{after[name]['coverage_95']:.3f}"]
        rows.append(row)
    note = f"\n\nFitted on: {calibration.get('fitted_on', 'unknown')}."
    return markdown_table(header, rows) + note


def metrics_rich_table(metrics: Mapping[str, Mapping[str, float]], title: str) -> Table:
    """The metrics as a rich table for the terminal."""
    present = [c for c in METRIC_COLUMNS if any(c in v for v in metrics.values())]
    table = Table(title=title)
    table.add_column("target")
    table.add_column("unit")
    for column in present:
        table.add_column(SHORT_NAMES.get(column, column), justify="right")
    for name, values in metrics.items():
        table.add_row(name, UNITS.get(name, "-"), *(f"{values[c]:.4g}" for c in present))
    return table
