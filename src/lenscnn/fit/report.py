"""Outputs of ``lenscnn-refine``: ``refined.csv`` (one row per image), ``report.md``, and the merge
of the shards of a multirun.

A row holds the image label, its ``status`` (``ok`` or ``failed: <reason>``), whether the fit
``converged`` (:class:`lenscnn.fit.refine.Convergence`: the best starts agree, the fit has settled, the
reduced chi^2 is not absurd), the reduced chi^2 over the used pixels, ``starts_agreeing`` (how many PSO
starts found the kept ``theta_E`` within the agreement tolerance), ``theta_E_change`` [arcsec] and
``chi2_change`` (how far the swarm's ``theta_E`` moved, and by which fraction its reduced chi^2 fell, over
the last 20% of the last PSO stage), ``fit_sky`` (the fitted sky level [counts/s/px], empty without
``sky``), the wall time [s] and, per lens parameter, the
network's value and sigma (``net_<name>``, ``net_<name>_sigma``) beside the fit's (``<name>``,
``<name>_sigma``: the MCMC standard deviation, 0 for a parameter held fixed, empty without MCMC).
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lenscnn.errors import UserError
from lenscnn.fit.refine import Convergence
from lenscnn.io.atomic import atomic_path, write_text
from lenscnn.metrics.tables import markdown_table
from lenscnn.params import ordered, unit

FIXED_COLUMNS = (
    "image",
    "status",
    "converged",
    "reduced_chi2",
    "starts_agreeing",
    "theta_E_change",
    "chi2_change",
    "fit_sky",
    "seconds",
)


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
        f"- images: {len(rows)}; fitted: {len(ok)}; failed: {len(rows) - len(ok)}; converged: {len(converged)}",
        f"- converged means: {settings.get('converged', '?')}",
        f"- fit: {settings.get('fit', {})}; network posterior as a prior: {settings.get('network_prior', False)}",
    ]
    if "lens_light" in settings:
        lines.append(f"- lens-light components: {settings['lens_light']}; free sky level: {settings.get('sky')}")
    if "shards" in settings:
        lines.append(f"- shards merged: {settings['shards']}")
    if ok:
        chi2 = [r["reduced_chi2"] for r in ok]
        seconds = [r["seconds"] for r in ok]
        lines.append(
            f"- reduced chi^2: median {statistics.median(chi2):.3f}; wall time per image: median "
            f"{statistics.median(seconds):.1f} s, total {sum(seconds):.0f} s"
        )
        sky = [r["fit_sky"] for r in ok if r.get("fit_sky") is not None]
        if sky:
            lines.append(f"- fitted sky level: median {statistics.median(sky):.4g} counts/s/px")
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


SHARD = re.compile(r"(\d+)/(\d+)")


@dataclass
class Shards:
    """The shards of a merged multirun: their job directories, ``N`` of ``i/N``, the indices ``i`` absent
    from the multirun and the shards' ``converged`` criterion (as :meth:`Convergence.describe` says it)."""

    jobs: list[Path] = field(default_factory=list)
    count: int = 0
    missing: list[int] = field(default_factory=list)
    converged: str = ""


def _job_config(job: Path) -> dict[str, Any]:
    """The Hydra config of one job of a multirun."""
    path = job / ".hydra" / "config.yaml"
    if not path.is_file():
        raise UserError(f"{job}: no .hydra/config.yaml, not a job of a lenscnn-refine multirun")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__})") from None
    return config if isinstance(config, dict) else {}


def merge_shards(directory: Path) -> tuple[list[dict[str, Any]], list[str], Shards]:
    """The rows and lens parameter names of every shard's ``refined.csv`` in a ``lenscnn-refine`` multirun
    ``directory``, and the :class:`Shards`.

    Only a Hydra multirun (``multirun.yaml``) whose numbered job directories are each a ``lenscnn-refine``
    run (``.hydra/config.yaml``: ``task_name: refine``) of one shard ``i/N`` with a ``refined.csv``, the
    shards distinct, of the same ``N`` and the same ``input``, and no image in two of them; anything else
    is a :class:`UserError`. Shards absent from the multirun are listed in ``missing``."""
    hint = "give the multirun directory of lenscnn-refine -m ... shard=0/N,1/N,..."
    if not directory.is_dir():
        raise UserError(f"merge={directory}: no such directory; {hint}")
    if not (directory / "multirun.yaml").is_file():
        raise UserError(f"merge={directory}: not a Hydra multirun directory (no multirun.yaml); {hint}")
    jobs = sorted((p for p in directory.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not jobs:
        raise UserError(f"merge={directory}: no job directories (0/, 1/, ...) in it; {hint}")
    shards = Shards(jobs=jobs)
    seen: dict[int, Path] = {}
    inputs: set[str] = set()
    for job in jobs:
        config = _job_config(job)
        if config.get("task_name") != "refine":
            task = config.get("task_name")
            raise UserError(f"merge={directory}: {job.name}/ is a {task!r} run, not a lenscnn-refine shard")
        match = SHARD.fullmatch(str(config.get("shard") or ""))
        if match is None or not int(match[1]) < int(match[2]):
            raise UserError(f"merge={directory}: {job.name}/ is no shard (shard={config.get('shard')}); {hint}")
        index, count = int(match[1]), int(match[2])
        if shards.count and count != shards.count:
            raise UserError(f"merge={directory}: {job.name}/ is shard {index}/{count}, others are of N={shards.count}")
        if index in seen:
            raise UserError(f"merge={directory}: {seen[index].name}/ and {job.name}/ are both shard {index}/{count}")
        shards.count, seen[index] = count, job
        inputs.add(str(config.get("input")))
        if len(inputs) > 1:
            raise UserError(f"merge={directory}: the shards fit different inputs ({sorted(inputs)})")
        if not (job / "refined.csv").is_file():
            raise UserError(f"merge={directory}: shard {index}/{count} ({job.name}/) has no refined.csv; rerun it")
        if not shards.converged and isinstance(config.get("converged"), dict):
            try:
                shards.converged = Convergence(**config["converged"]).describe()
            except (TypeError, UserError):
                shards.converged = ""
    shards.missing = sorted(set(range(shards.count)) - set(seen))
    rows: list[dict[str, Any]] = []
    names: list[str] = []
    where: dict[str, Path] = {}
    for job in jobs:
        path = job / "refined.csv"
        part, part_names = read_refined_csv(path)
        if names and part_names != names:
            raise UserError(f"{path}: other lens parameters ({part_names}) than the other shards ({names})")
        names = part_names
        for row in part:
            if row["image"] in where:
                raise UserError(f"merge={directory}: {row['image']} is in {where[row['image']].name}/ and {job.name}/")
            where[row["image"]] = job
        rows += part
    return rows, names, shards


def write_report(
    path: Path, rows: Sequence[Mapping[str, Any]], names: Sequence[str], settings: Mapping[str, Any]
) -> None:
    write_text(path, report_markdown(rows, names, settings))
