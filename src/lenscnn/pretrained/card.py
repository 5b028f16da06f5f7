"""The generated part of a model card: test metrics from a ``lenscnn-eval`` ``metrics.json``.

``MODEL_CARD.md`` is written by hand except for the block between :data:`BEGIN` and
:data:`END`, which ``make pretrained`` fills from the evaluation of the shipped ensemble
(``lenscnn-export card=... metrics=...``), so the card cannot drift from what
``lenscnn-eval ensemble=pretrained`` reports. :func:`card_metrics` reads the numbers back
(the tests compare them with a fresh evaluation).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lenscnn.errors import UserError
from lenscnn.io.atomic import write_text
from lenscnn.metrics.tables import Column, MetricsTable, markdown_table

BEGIN = "<!-- BEGIN generated metrics: make pretrained writes this block from lenscnn-eval's metrics.json -->"
END = "<!-- END generated metrics -->"

#: Metric table columns: key in ``metrics.json`` (``sigma_scale`` from its own entry) and header.
COLUMNS = (
    Column("rmse", "RMSE"),
    Column("mae", "MAE"),
    Column("bias", "bias"),
    Column("median_abs_error", "median abs. error"),
    Column("outlier_fraction", "outliers"),
    Column("coverage_68", "68% coverage"),
    Column("coverage_95", "95% coverage"),
    Column("sigma_scale", "sigma scale"),
)
NRMSE_LABEL = "Normalised RMSE (mean over targets of RMSE / prior std)"


def metrics_table(payload: Mapping[str, Any]) -> list[str]:
    """The lines of one evaluation's per-target table (with its test set and normalised RMSE);
    targets in vocabulary order (``metrics.json`` sorts them by name)."""
    scale = payload.get("sigma_scale", {})
    metrics = {name: {**values, "sigma_scale": scale.get(name)} for name, values in payload["metrics"].items()}
    table = MetricsTable(metrics, COLUMNS, name=lambda n: f"`{n}`", drop_empty=False)
    return [
        f"Test set: {payload['dataset']}; MC-dropout passes per member: {payload['mc_samples']}.",
        "",
        table.markdown(),
        "",
        f"{NRMSE_LABEL}: **{payload['nrmse']:.4f}**.",
    ]


def metrics_block(payload: Mapping[str, Any], *others: Mapping[str, Any]) -> str:
    """The generated block (markers included) for an evaluation ``payload`` (``metrics.json``),
    followed by the tables of ``others`` (the same model on other test sets)."""
    lines = [BEGIN, *metrics_table(payload)]
    comparison = payload.get("comparison")
    if comparison:
        # eval labels members "<k>: <directory>/<file>"; the file name says which one it is
        member_rows = [
            [Path(label.split(": ", 1)[-1]).name, f"{value:.4f}"] for label, value in comparison["members"].items()
        ]
        member_rows.append(["**ensemble**", f"**{comparison['ensemble']:.4f}**"])
        lines += [
            "",
            "Each member alone and the ensemble, on the same lenses:",
            "",
            markdown_table(["model", "normalised RMSE"], member_rows),
            "",
            f"The ensemble's normalised RMSE is {100 * comparison['improvement_over_best']:.1f}% below "
            "its best member's.",
        ]
    for other in others:
        lines += ["", *metrics_table(other)]
    return "\n".join([*lines, END])


def update_card(path: str | Path, payload: Mapping[str, Any], *others: Mapping[str, Any]) -> None:
    """Replace the generated block of the card at ``path`` by the numbers of ``payload`` (and of
    the further test sets ``others``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"card={path}: no such file")
    text = path.read_text()
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise UserError(f"card={path}: has no generated block (a line {BEGIN!r} ... {END!r})")
    write_text(path, text[:start] + metrics_block(payload, *others) + text[stop + len(END) :])


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
