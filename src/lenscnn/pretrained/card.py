"""The generated part of a model card: test metrics from a ``lenscnn-eval`` ``metrics.json``.

``MODEL_CARD.md`` is written by hand except for the block between :data:`BEGIN` and
:data:`END`, which ``make pretrained`` fills from the evaluation of the shipped ensemble
(``lenscnn-export card=... metrics=...``), so the card cannot drift from what
``lenscnn-eval ensemble=pretrained`` reports. :func:`card_metrics` reads the numbers back
(the tests compare them with a fresh evaluation).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lenscnn.errors import UserError
from lenscnn.evaluation.pipeline import comparison_table, ensemble_gain_sentence
from lenscnn.io.atomic import write_text
from lenscnn.io.summaries import EvaluationSummary
from lenscnn.metrics.tables import Column, MetricsTable, markdown_table

BEGIN = "<!-- BEGIN generated metrics: make pretrained writes this block from lenscnn-eval's metrics.json -->"
END = "<!-- END generated metrics -->"

#: Metric table columns: key in ``metrics.json`` (``sigma_scale`` and ``sigma_power`` from their own
#: entries) and header.
COLUMNS = (
    Column("rmse", "RMSE"),
    Column("mae", "MAE"),
    Column("bias", "bias"),
    Column("median_abs_error", "median abs. error"),
    Column("outlier_fraction", "outliers"),
    Column("coverage_68", "68% coverage"),
    Column("coverage_95", "95% coverage"),
    Column("sigma_scale", "sigma scale"),
    Column("sigma_power", "sigma power"),
)
NRMSE_LABEL = "Normalised RMSE (mean over targets of RMSE / prior std)"
ROBUSTNESS_LABEL = "Robustness"
INSTRUMENTS_LABEL = "Per instrument"
#: Robustness table columns after the test set: ``(header, target group, metric, as a ratio to the clean set)``.
ROBUSTNESS_COLUMNS = (
    ("theta_E RMSE", ("theta_E",), "rmse", False),
    ("/ clean", ("theta_E",), "rmse", True),
    ("theta_E 68%", ("theta_E",), "coverage_68", False),
    ("theta_E 95%", ("theta_E",), "coverage_95", False),
    ("e RMSE / clean", ("e1", "e2"), "rmse", True),
    ("centre RMSE / clean", ("center_x", "center_y"), "rmse", True),
)


def nuisance(dataset: str) -> str:
    """What a robustness test set adds, from its ``lenscnn-eval`` description: the ``observation``
    chosen (else the ``prior``)."""
    found = re.search(r"observation (\w+)", dataset)
    if found and found.group(1) != "none":
        return found.group(1)
    found = re.search(r"prior (\w+)", dataset)
    return found.group(1) if found else dataset


#: Instrument table columns after the test set: ``(header, target group, metric)``.
INSTRUMENT_COLUMNS = (
    ("theta_E RMSE", ("theta_E",), "rmse"),
    ("theta_E 68%", ("theta_E",), "coverage_68"),
    ("theta_E 95%", ("theta_E",), "coverage_95"),
    ("e RMSE", ("e1", "e2"), "rmse"),
    ("e 68%", ("e1", "e2"), "coverage_68"),
    ("centre RMSE", ("center_x", "center_y"), "rmse"),
)


def group_value(summary: EvaluationSummary, targets: Sequence[str], metric: str) -> float:
    """``metric`` of ``summary`` averaged over ``targets`` (a group such as ``e1, e2``)."""
    return sum(summary.metrics[t][metric] for t in targets) / len(targets)


def instrument_table(rows: Sequence[EvaluationSummary]) -> list[str]:
    """The lines of the per-instrument table: one row per test set ``rows`` (``metrics.json`` of the same
    lenses seen through each instrument's PSFs), labelled by its ``observation``."""
    header = ["instrument", *(c[0] for c in INSTRUMENT_COLUMNS)]
    body = [
        [f"`{nuisance(s.dataset)}`", *(f"{group_value(s, t, m):.4g}" for _, t, m in INSTRUMENT_COLUMNS)] for s in rows
    ]
    return [
        f"{INSTRUMENTS_LABEL}: {rows[0].n} test lenses of {rows[0].dataset.split(', observation')[0]}), seen "
        "through each instrument's PSFs and the observation's other nuisances (group columns average e1, e2 and "
        "the centre's x, y; coverage of the calibrated 68%/95% intervals):",
        "",
        markdown_table(header, body),
    ]


def card_table(text: str, label: str) -> dict[str, dict[str, float]]:
    """The table of a card's generated block introduced by ``label`` (the robustness or instrument table):
    ``{row label: {header: value}}`` (``{}`` without one)."""
    block = text[text.find(BEGIN) : text.find(END)].splitlines()
    at = next((i for i, line in enumerate(block) if line.startswith(label + ":")), None)
    if at is None:
        return {}
    rows = {}
    header = [c.strip() for c in block[at + 2].strip("|").split("|")]
    for row in block[at + 4 :]:
        if not row.startswith("|"):
            break
        cells = [c.strip() for c in row.strip("|").split("|")]
        rows[cells[0].strip("`")] = {h: float(c) for h, c in zip(header[1:], cells[1:], strict=True)}
    return rows


def robustness_table(clean: EvaluationSummary, rows: Sequence[EvaluationSummary]) -> list[str]:
    """The lines of the robustness table: each of ``rows`` (``metrics.json`` of the same lenses with one
    nuisance added) against ``clean``'s; group columns (e, centre) average the targets' values."""

    header = ["test set", *(c[0] for c in ROBUSTNESS_COLUMNS)]
    body = []
    for summary in (clean, *rows):
        cells = [f"`{nuisance(summary.dataset)}`" if summary is not clean else "clean"]
        for _, targets, metric, ratio in ROBUSTNESS_COLUMNS:
            v = group_value(summary, targets, metric)
            cells.append(f"{v / group_value(clean, targets, metric):.3f}" if ratio else f"{v:.4g}")
        body.append(cells)
    return [
        f"{ROBUSTNESS_LABEL}: {clean.n} test lenses of {clean.dataset}, then the same lenses with one "
        "nuisance added (RMSE ratios to the clean set's; coverage of the calibrated 68%/95% intervals):",
        "",
        markdown_table(header, body),
    ]


def card_robustness(text: str) -> dict[str, dict[str, float]]:
    """The robustness table of a card's generated block: ``{test set: {header: value}}`` (``{}`` without one)."""
    return card_table(text, ROBUSTNESS_LABEL)


def card_instruments(text: str) -> dict[str, dict[str, float]]:
    """The per-instrument table of a card's generated block: ``{observation: {header: value}}``."""
    return card_table(text, INSTRUMENTS_LABEL)


def metrics_table(summary: EvaluationSummary) -> list[str]:
    """The lines of one evaluation's per-target table (with its test set and normalised RMSE);
    targets in vocabulary order (``metrics.json`` sorts them by name)."""
    scale, power = summary.sigma_scale, summary.sigma_power
    metrics = {
        name: {**values, "sigma_scale": scale.get(name), "sigma_power": power.get(name)}
        for name, values in summary.metrics.items()
    }
    table = MetricsTable(metrics, COLUMNS, name=lambda n: f"`{n}`", drop_empty=False)
    return [
        f"Test set: {summary.dataset}; MC-dropout passes per member: {summary.mc_samples}; "
        f"symmetries averaged: {summary.symmetries}.",
        "",
        table.markdown(),
        "",
        f"{NRMSE_LABEL}: **{summary.nrmse:.4f}**.",
    ]


def member_file(label: str) -> str:
    """The checkpoint file name of a member label of ``lenscnn-eval`` (``"<k>: <directory>/<file>"``):
    it says which member it is."""
    return Path(label.split(": ", 1)[-1]).name


def metrics_block(
    summary: EvaluationSummary,
    *others: EvaluationSummary,
    robustness: Sequence[EvaluationSummary] = (),
    instruments: Sequence[EvaluationSummary] = (),
) -> str:
    """The generated block (markers included) for an evaluation ``summary`` (``metrics.json``),
    followed by the tables of ``others`` (the same model on other test sets), given ``instruments``
    (the same lenses through each instrument's observation) the per-instrument table, and given
    ``robustness`` (a clean set's ``metrics.json`` then those of the same lenses with one nuisance each)
    the robustness table."""
    lines = [BEGIN, *metrics_table(summary)]
    comparison = summary.comparison
    if comparison:
        lines += [
            "",
            "Each member alone and the ensemble, on the same lenses:",
            "",
            comparison_table(comparison, label=member_file),
            "",
            f"{ensemble_gain_sentence(comparison['improvement_over_best'])}.",
        ]
    for other in others:
        lines += ["", *metrics_table(other)]
    if instruments:
        lines += ["", *instrument_table(instruments)]
    if robustness:
        lines += ["", *robustness_table(robustness[0], robustness[1:])]
    return "\n".join([*lines, END])


def update_card(
    path: str | Path,
    summary: EvaluationSummary,
    *others: EvaluationSummary,
    robustness: Sequence[EvaluationSummary] = (),
    instruments: Sequence[EvaluationSummary] = (),
) -> None:
    """Replace the generated block of the card at ``path`` by the numbers of ``summary`` (and of
    the further test sets ``others``, the ``instruments`` table and the ``robustness`` table)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"card={path}: no such file")
    text = path.read_text()
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise UserError(f"card={path}: has no generated block (a line {BEGIN!r} ... {END!r})")
    block = metrics_block(summary, *others, robustness=robustness, instruments=instruments)
    write_text(path, text[:start] + block + text[stop + len(END) :])


def card_metrics(text: str) -> list[dict[str, Any]]:
    """The numbers of a card's generated block, for each of its test sets in order:
    ``[{"dataset": str, "metrics": {target: {key: value}}, "nrmse": float}, ...]`` (keys of :data:`COLUMNS`)."""
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise UserError("the model card has no generated metrics block")
    block = text[start:stop].splitlines()
    labels = {c.title: c.key for c in COLUMNS}
    tables = []
    for at, line in enumerate(block):
        if not line.startswith("Test set: "):
            continue
        header_at = next((i for i in range(at, len(block)) if block[i].startswith("| target |")), None)
        if header_at is None:
            raise UserError(f"the model card's table for {line!r} is missing")
        header = [c.strip() for c in block[header_at].strip("|").split("|")]
        metrics: dict[str, dict[str, float]] = {}
        for row in block[header_at + 2 :]:
            if not row.startswith("|"):
                break
            cells = [c.strip() for c in row.strip("|").split("|")]
            metrics[cells[0].strip("`")] = {
                labels[h]: float(c) for h, c in zip(header, cells, strict=True) if h in labels and c != "-"
            }
        found = re.search(re.escape(NRMSE_LABEL) + r": \*\*([0-9.eE+-]+)\*\*", "\n".join(block[header_at:]))
        if not found:
            raise UserError("a table of the model card's generated block has no normalised RMSE")
        dataset = line.removeprefix("Test set: ").split("; MC-dropout")[0]
        tables.append({"dataset": dataset, "metrics": metrics, "nrmse": float(found.group(1))})
    if not tables:
        raise UserError("the model card's generated block has no metrics table")
    return tables
