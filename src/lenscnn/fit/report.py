"""Outputs of ``lenscnn-refine``: ``refined.csv`` (one row per image), ``report.md``, and the merge
of the shards of a multirun.

A row holds the image label, its ``status`` (``ok`` or ``failed: <reason>``), whether the fit
``converged`` (reduced chi^2 at most the configured threshold), the reduced chi^2, the wall time
and, per lens parameter, the network's value and sigma (``net_<name>``, ``net_<name>_sigma``)
beside the fit's (``<name>``, ``<name>_sigma``: the MCMC standard deviation, empty without MCMC).
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lenscnn.errors import UserError
from lenscnn.io.atomic import atomic_path, write_text
from lenscnn.metrics.tables import markdown_table
from lenscnn.params import ordered, unit

FIXED_COLUMNS = ("image", "status", "converged", "reduced_chi2", "seconds")


def columns(names: Sequence[str]) -> list[str]:
    """``refined.csv``'s header for lens parameters ``names``."""
    out = list(FIXED_COLUMNS)
    for name in names:
        out += [f"net_{name}", f"net_{name}_sigma", name, f"{name}_sigma"]
    return out


def _cell(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.7g}"
    return str(value)


def write_refined_csv(path: Path, rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> None:
    """The rows, sorted by image, atomically."""
    header = columns(names)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in sorted(rows, key=lambda r: r["image"]):
            writer.writerow([_cell(row.get(c)) for c in header])


def read_refined_csv(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (numbers as floats, ``converged`` as bool) and lens parameter names of a ``refined.csv``."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        if header[: len(FIXED_COLUMNS)] != list(FIXED_COLUMNS):
            raise UserError(f"{path}: not a refined.csv of lenscnn-refine (header {header[:5]})")
        rows = []
        for raw in reader:
            row: dict[str, Any] = {
                "image": raw["image"],
                "status": raw["status"],
                "converged": raw["converged"] == "true",
            }
            for key, value in raw.items():
                if key not in ("image", "status", "converged"):
                    row[key] = float(value) if value else None
            rows.append(row)
    names = [c for c in header[len(FIXED_COLUMNS) :] if not c.startswith("net_") and not c.endswith("_sigma")]
    return rows, names


def report_markdown(rows: Sequence[Mapping[str, Any]], names: Sequence[str], settings: Mapping[str, Any]) -> str:
    """``report.md``: how many fits succeeded and converged, and the fit against the network per parameter."""
    ok = [r for r in rows if r["status"] == "ok"]
    converged = [r for r in ok if r["converged"]]
    lines = [
        "# lenscnn-refine report",
        "",
        f"- images: {len(rows)}; fitted: {len(ok)}; failed: {len(rows) - len(ok)}; "
        f"converged (reduced chi^2 <= {settings.get('converged_chi2', '?')}): {len(converged)}",
        f"- fit: {settings.get('fit', {})}; network posterior as a prior: {settings.get('network_prior', False)}",
    ]
    if ok:
        chi2 = [r["reduced_chi2"] for r in ok]
        seconds = [r["seconds"] for r in ok]
        lines.append(
            f"- reduced chi^2: median {statistics.median(chi2):.3f}; wall time per image: median "
            f"{statistics.median(seconds):.1f} s, total {sum(seconds):.0f} s"
        )
        table = []
        for name in ordered(names):
            pairs = [
                (r[name], r[f"net_{name}"], r.get(f"net_{name}_sigma")) for r in ok if r.get(f"net_{name}") is not None
            ]
            if not pairs:
                continue
            shift = [fit - net for fit, net, _ in pairs]
            pulls = [abs(fit - net) / s for fit, net, s in pairs if s]
            table.append(
                [
                    name,
                    unit(name) or "-",
                    f"{statistics.median(shift):+.4g}",
                    f"{math.sqrt(sum(d * d for d in shift) / len(shift)):.4g}",
                    f"{statistics.median(pulls):.3g}" if pulls else "-",
                    f"{sum(p <= 1 for p in pulls) / len(pulls):.2f}" if pulls else "-",
                ]
            )
        header = [
            "parameter",
            "unit",
            "median fit - network",
            "rms fit - network",
            "median abs(fit - network) / network sigma",
            "share within 1 network sigma",
        ]
        lines += ["", "## Fit against network", "", markdown_table(header, table)]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed", ""] + [f"- `{r['image']}`: {r['status']}" for r in failed]
    return "\n".join(lines) + "\n"


def merge_shards(directory: Path) -> tuple[list[dict[str, Any]], list[str], int]:
    """The rows and lens parameter names of every ``*/refined.csv`` under a multirun ``directory``
    (one per shard), and the number of shards."""
    files = sorted(directory.glob("*/refined.csv"))
    if not files:
        raise UserError(f"merge={directory}: no */refined.csv below it; give the multirun directory of the shards")
    rows: list[dict[str, Any]] = []
    names: list[str] = []
    for path in files:
        part, part_names = read_refined_csv(path)
        if names and part_names != names:
            raise UserError(f"{path}: other lens parameters ({part_names}) than the other shards ({names})")
        names = part_names
        rows += part
    return rows, names, len(files)


def write_report(
    path: Path, rows: Sequence[Mapping[str, Any]], names: Sequence[str], settings: Mapping[str, Any]
) -> None:
    write_text(path, report_markdown(rows, names, settings))
