"""Outputs of a catalogue evaluation: ``predictions.csv``, ``metrics.csv``, ``plots/catalog.png``,
``report.md`` and, last, ``metrics.json`` (a run directory with a ``metrics.json`` is complete).

Every file is written to a temporary sibling and renamed (:mod:`lenscnn.io.atomic`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from rich.table import Table

from lenscnn.evaluation.catalog_pipeline import CatalogResult
from lenscnn.io.atomic import atomic_path, write_text
from lenscnn.io.predictions import target_columns, write_table
from lenscnn.io.run_dir import RunDir
from lenscnn.metrics.tables import CATALOG_COLUMNS, MetricsTable, markdown_table
from lenscnn.params import parameter
from lenscnn.plots import save_figure
from lenscnn.preparation.images import RECORD_COLUMNS

#: Catalogues longer than this are not listed lens by lens on the terminal (``predictions.csv`` has them).
PRINTED_LENSES = 50


def metrics_table(result: CatalogResult) -> MetricsTable:
    """The per-target table of the terminal, ``report.md`` and ``metrics.csv``."""
    return MetricsTable(result.metrics, CATALOG_COLUMNS)


def prediction_columns(result: CatalogResult) -> list[str]:
    """``predictions.csv`` header (:mod:`lenscnn.io.predictions`): ``name``, ``file``, ``status`` (``ok`` or
    ``failed: <reason>``); per target ``<t>``, ``<t>_sigma`` (with uncertainties), ``<t>_ref``,
    ``<t>_ref_err_low``, ``<t>_ref_err_high`` and ``<t>_z`` (blank when not scored); the preparation record
    (:data:`lenscnn.preparation.images.RECORD_COLUMNS`) and the domain ``flags`` (``; ``-separated, empty
    when like the training images)."""
    columns = ["name", "file", "status"]
    for target, values in result.values.items():
        kinds = ["value", "sigma"] if values.sigma is not None else ["value"]
        columns += target_columns([target], [*kinds, "ref", "ref_err_low", "ref_err_high", "z"])
    return [*columns, *RECORD_COLUMNS, "flags"]


def prediction_rows(result: CatalogResult) -> list[list[Any]]:
    """The rows of ``predictions.csv`` (:func:`prediction_columns`), in catalogue order (NaN: blank)."""
    rows = []
    catalog = result.catalog
    for k, (name, file, lens) in enumerate(zip(catalog.names, catalog.files, result.results, strict=True)):
        row = [name, str(file), "ok" if lens.ok else f"failed: {lens.error}"]
        for values in result.values.values():
            row.append(float(values.pred[k]))
            if values.sigma is not None:
                row.append(float(values.sigma[k]))
            given = not math.isnan(values.ref[k])
            errors = [values.err_low[k], values.err_high[k]] if given else [math.nan, math.nan]
            row += [float(values.ref[k]), *(float(e) for e in errors), float(values.z[k])]
        record = lens.prepared.record if lens.ok else {}
        row += [record.get(key) for key in RECORD_COLUMNS]
        rows.append([*row, "; ".join(lens.flags)])
    return rows


def write_predictions_csv(path: Path, result: CatalogResult) -> None:
    write_table(path, prediction_columns(result), prediction_rows(result))


def lens_rows(result: CatalogResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the lens-by-lens table of the terminal and ``report.md``: per target the
    prediction ``mu +- sigma``, the reference ``r -l/+h`` and ``z``; the flags (or why it failed)."""
    header = ["lens"]
    for target in result.values:
        header += [f"{target} predicted", f"{target} reference", f"z {target}"]
    header.append("flags")
    rows = []
    for k, (name, lens) in enumerate(zip(result.catalog.names, result.results, strict=True)):
        row = [name]
        for values in result.values.values():
            pred = "" if math.isnan(values.pred[k]) else f"{values.pred[k]:.3f}"
            if pred and values.sigma is not None:
                pred += f" ± {values.sigma[k]:.3f}"
            ref = ""
            if not math.isnan(values.ref[k]):
                low, high = values.err_low[k], values.err_high[k]
                ref = f"{values.ref[k]:.3f}" + (f" ± {low:.3f}" if low == high else f" -{low:.3f}/+{high:.3f}")
            z = "" if math.isnan(values.z[k]) else f"{values.z[k]:+.2f}"
            row += [pred, ref, z]
        row.append("; ".join(lens.flags) if lens.ok else f"failed: {lens.error}")
        rows.append(row)
    return header, rows


def lens_table(result: CatalogResult, title: str) -> Table | None:
    """The lens-by-lens rich table (``None`` for catalogues of more than :data:`PRINTED_LENSES`)."""
    if len(result.results) > PRINTED_LENSES:
        return None
    header, rows = lens_rows(result)
    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="left" if column in ("lens", "flags") else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def catalog_figure(result: CatalogResult) -> Figure:
    """One panel per target: the prediction (1-sigma error bars) against the reference (its
    asymmetric errors), lenses flagged as unlike the training images in orange, and the 1:1 line."""
    targets = result.targets
    fig, axes = plt.subplots(1, len(targets), figsize=(3.8 * len(targets), 3.8), squeeze=False)
    flagged = result.flagged
    names = result.catalog.names
    for ax, target in zip(axes[0], targets, strict=True):
        v = result.values[target]
        s = v.scored
        for mask, colour, label in ((s & ~flagged, "C0", "in domain"), (s & flagged, "C1", "flagged")):
            if not mask.any():
                continue
            ax.errorbar(
                v.ref[mask],
                v.pred[mask],
                xerr=np.stack([v.err_low[mask], v.err_high[mask]]),
                yerr=None if v.sigma is None else v.sigma[mask],
                fmt="o",
                ms=3,
                lw=0.8,
                color=colour,
                label=label,
            )
        if s.any():
            lo = float(np.nanmin([v.ref[s] - v.err_low[s], v.pred[s]]))
            hi = float(np.nanmax([v.ref[s] + v.err_high[s], v.pred[s]]))
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
            if s.sum() <= 20:
                for k in np.flatnonzero(s):
                    ax.annotate(names[k], (v.ref[k], v.pred[k]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        p = parameter(target)
        unit = f" [{p.plot_unit}]" if p.plot_unit else ""
        ax.set_xlabel(f"reference {p.label}{unit}")
        ax.set_ylabel(f"predicted {p.label}{unit}")
        m = result.metrics[target]
        if m.get("rmse") is not None:
            ax.set_title(f"n={m['n']}, rmse {m['rmse']:.3g}, bias {m['bias']:+.3g}", fontsize=8)
        ax.set_aspect("equal", adjustable="datalim")
        if flagged[s].any():
            ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def write_report(path: Path, result: CatalogResult, figures: Sequence[str]) -> None:
    """``report.md``: the model and catalogue, the metric table with its conventions, every lens,
    and the figure."""
    s = result.summary
    header, rows = lens_rows(result)
    errors = "; ".join(f"{t}: {e}" for t, e in s.reference_errors.items())
    lines = [
        "# lenscnn evaluation report: a lens catalogue",
        "",
        f"- model: {', '.join(s.members)}",
        f"- data: {s.dataset}",
        f"- lenses: {s.n} listed, {s.n_ok} predicted, {s.n_failed} failed, {s.n_flagged} flagged as "
        "unlike the training images",
        f"- reference uncertainty columns: {errors}",
        f"- MC-dropout passes per member: {s.mc_samples}; symmetries averaged: {s.symmetries}",
    ]
    if s.nrmse is not None:
        lines.append(f"- normalised RMSE (mean over targets of RMSE / prior std): {s.nrmse:.4f}")
    lines += [
        "",
        "## Metrics against the references (physical units)",
        "",
        metrics_table(result).markdown(),
        "",
        "Errors are prediction - reference over the lenses predicted that have a reference (`n`; of them "
        "`flagged` are unlike the training images). z = (prediction - reference) / sqrt(sigma_pred^2 + "
        "sigma_ref^2), with the reference's error on the side of the residual. Coverage: share of lenses with "
        "|z| within the central 68% / 95% Gaussian interval (0.994 / 1.96); NLL: Gaussian, in nats per lens, of "
        "the residual in that combined sigma.",
        "",
        "## Lenses",
        "",
        markdown_table(header, rows),
    ]
    if figures:
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(f).stem}]({f})" for f in figures]
    write_text(path, "\n".join(lines) + "\n")


def write_catalog_outputs(run_dir: Path, result: CatalogResult, figure: Figure | None = None) -> None:
    """Every file into ``run_dir`` (the figure as ``plots/catalog.png``, closed after), ``metrics.json`` last."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_predictions_csv(RunDir(run_dir).predictions, result)
    with atomic_path(RunDir(run_dir).metrics_csv) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(metrics_table(result).csv_rows())
    files = []
    if figure is not None:
        RunDir(run_dir).plots.mkdir(exist_ok=True)
        save_figure(figure, RunDir(run_dir).plots / "catalog.png", dpi=120)
        files.append("plots/catalog.png")
    write_report(RunDir(run_dir).report, result, files)
    result.summary.write(RunDir(run_dir).metrics)
