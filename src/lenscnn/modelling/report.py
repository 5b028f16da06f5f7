"""Outputs of ``lenscnn-refine``: ``refined.csv`` (one row per image), ``report.md``, and the merge
of the shards of a multirun.

A row holds the image label, its ``status`` (``ok`` or ``failed: <reason>``), whether the fit
``converged`` (:class:`lenscnn.modelling.settings.Convergence`: the best starts agree, the fit has settled, the
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

from lenscnn.errors import UserError, one_line
from lenscnn.io.atomic import atomic_path, write_text
from lenscnn.io.run_dir import RunDir
from lenscnn.metrics.tables import markdown_table
from lenscnn.modelling.records import FitOutcome
from lenscnn.modelling.settings import Convergence
from lenscnn.params import ordered, unit

FIXED_COLUMNS = (
    "image",
    "status",
    "converged",
    "why",
    "reduced_chi2",
    "pixels_fitted",
    "pixels_masked",
    "neighbours_masked",
    "exposure_time",
    "exposure_time_estimated",
    "arc_residual",
    "arc_snr",
    "starts_agreeing",
    "theta_E_change",
    "chi2_change",
    "fit_sky",
    "seconds",
)


#: The main lens's shape as published SIE fits give it, from the fitted ``e1``, ``e2`` (lenstronomy's
#: convention): axis ratio ``q = (1 - |e|) / (1 + |e|)`` and position angle ``phi = atan2(e2, e1) / 2`` [rad,
#: from the x axis]; ``shear`` says whether an external shear was fitted beside them (``free``) or not (``none``).
SHAPE_COLUMNS = ("axis_ratio", "position_angle", "shear")


def columns(names: Sequence[str]) -> list[str]:
    """``refined.csv``'s header for lens parameters ``names`` (and :data:`SHAPE_COLUMNS` when they hold
    ``e1`` and ``e2``)."""
    out = list(FIXED_COLUMNS)
    for name in names:
        out += [f"net_{name}", f"net_{name}_sigma", name, f"{name}_sigma"]
    return out + (list(SHAPE_COLUMNS) if {"e1", "e2"} <= set(names) else [])


def lens_shape(fitted: Mapping[str, float], names: Sequence[str]) -> dict[str, Any]:
    """:data:`SHAPE_COLUMNS` of a fit's ``fitted`` values (empty cells when it has none)."""
    if "e1" not in fitted or "e2" not in fitted:
        return dict.fromkeys(SHAPE_COLUMNS)
    e = math.hypot(fitted["e1"], fitted["e2"])
    shear = "free" if "gamma1" in names else "none"
    return {
        "axis_ratio": (1 - e) / (1 + e),
        "position_angle": math.atan2(fitted["e2"], fitted["e1"]) / 2,
        "shear": shear,
    }


def _cell(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.7g}"
    return str(value)


def refined_row(outcome: FitOutcome, names: Sequence[str]) -> dict[str, str]:
    """``outcome`` as a row of ``refined.csv`` for lens parameters ``names``: the cell of each column
    (:func:`columns`; empty: none, e.g. the fit's values of a failed image)."""
    values: dict[str, Any] = {
        "image": outcome.image,
        "status": outcome.status,
        "converged": outcome.converged,
        "why": outcome.why,
        "reduced_chi2": outcome.reduced_chi2,
        "pixels_fitted": outcome.pixels_fitted,
        "pixels_masked": outcome.pixels_masked,
        "neighbours_masked": outcome.neighbours_masked,
        "exposure_time": outcome.exposure_time,
        "exposure_time_estimated": outcome.exposure_time_estimated if outcome.exposure_time is not None else None,
        "arc_residual": outcome.arc_residual,
        "arc_snr": outcome.arc_snr,
        "starts_agreeing": outcome.starts_agreeing,
        "theta_E_change": outcome.theta_E_change,
        "chi2_change": outcome.chi2_change,
        "fit_sky": outcome.sky,
        "seconds": outcome.seconds,
    }
    for name in names:
        values |= {
            f"net_{name}": outcome.network.get(name),
            f"net_{name}_sigma": outcome.network_sigma.get(name),
            name: outcome.fitted.get(name),
            f"{name}_sigma": outcome.fitted_sigma.get(name),
        }
    values |= lens_shape(outcome.fitted, names)
    return {column: _cell(values[column]) for column in columns(names)}


def outcome_from_row(row: Mapping[str, str | None], names: Sequence[str]) -> FitOutcome:
    """The :class:`FitOutcome` of a row of ``refined.csv`` (column -> cell text) for lens parameters
    ``names``, without the figure's arrays: the inverse of :func:`refined_row`."""

    def number(column: str) -> float | None:
        return float(row[column]) if row.get(column) else None

    def by_name(template: str) -> dict[str, float]:
        cells = {name: number(template.format(name)) for name in names}
        return {name: value for name, value in cells.items() if value is not None}

    agreeing, fitted, masked = number("starts_agreeing"), number("pixels_fitted"), number("pixels_masked")
    neighbours = number("neighbours_masked")
    return FitOutcome(
        image=row["image"] or "",
        status=row["status"] or "",
        network=by_name("net_{}"),
        network_sigma=by_name("net_{}_sigma"),
        fitted=by_name("{}"),
        fitted_sigma=by_name("{}_sigma"),
        reduced_chi2=number("reduced_chi2"),
        seconds=number("seconds"),
        converged=row["converged"] == "true",
        starts_agreeing=None if agreeing is None else int(agreeing),
        chi2_change=number("chi2_change"),
        theta_E_change=number("theta_E_change"),
        sky=number("fit_sky"),
        why=row.get("why") or "",
        pixels_fitted=None if fitted is None else int(fitted),
        pixels_masked=None if masked is None else int(masked),
        neighbours_masked=None if neighbours is None else int(neighbours),
        exposure_time=number("exposure_time"),
        arc_residual=number("arc_residual"),
        arc_snr=number("arc_snr"),
        exposure_time_estimated=row.get("exposure_time_estimated") == "true",
    )


def write_refined_csv(path: Path, outcomes: Sequence[FitOutcome], names: Sequence[str]) -> None:
    """``refined.csv``: a row per outcome (:func:`refined_row`), sorted by image, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns(names))
        writer.writeheader()
        for outcome in sorted(outcomes, key=lambda o: o.image):
            writer.writerow(refined_row(outcome, names))


#: Columns that earlier versions of ``refined.csv`` lack (they still read, with these empty).
LATER_COLUMNS = (
    "why",
    "pixels_fitted",
    "pixels_masked",
    "neighbours_masked",
    "exposure_time",
    "exposure_time_estimated",
    "arc_residual",
    "arc_snr",
    *SHAPE_COLUMNS,
)


def known_header(header: Sequence[str], names: Sequence[str]) -> bool:
    """Whether ``header`` is ``refined.csv``'s for lens parameters ``names``, of this version or an earlier one
    (the columns of this one, in order, less some of :data:`LATER_COLUMNS`)."""
    current = columns(names)
    return list(header) == [c for c in current if c in header] and set(current) - set(header) <= set(LATER_COLUMNS)


def read_refined_csv(path: Path) -> tuple[list[FitOutcome], list[str]]:
    """The outcomes (:func:`outcome_from_row`) and lens parameter names of a ``refined.csv``."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        names = [c for c in header if f"net_{c}_sigma" in header]
        if not known_header(header, names):
            raise UserError(f"{path}: not a refined.csv of lenscnn-refine (header {header[:5]})")
        outcomes = []
        for row in reader:
            try:
                outcomes.append(outcome_from_row(row, names))
            except ValueError as exc:
                raise UserError(f"{path}: line {reader.line_num}: {one_line(exc)}") from None
    return outcomes, names


def report_markdown(outcomes: Sequence[FitOutcome], names: Sequence[str], settings: Mapping[str, Any]) -> str:
    """``report.md``: how many fits succeeded and converged, and the fit against the network per parameter."""
    ok = [o for o in outcomes if o.ok]
    converged = [o for o in ok if o.converged]
    lines = [
        "# lenscnn-refine report",
        "",
        f"- images: {len(outcomes)}; fitted: {len(ok)}; failed: {len(outcomes) - len(ok)}; converged: {len(converged)}",
        f"- converged means: {settings.get('converged', '?')}",
        f"- fit: {settings.get('fit', {})}; network posterior as a prior: {settings.get('network_prior', False)}",
    ]
    if "lens_light" in settings:
        lines.append(f"- lens-light components: {settings['lens_light']}; free sky level: {settings.get('sky')}")
    if "shards" in settings:
        lines.append(f"- shards merged: {settings['shards']}")
    if ok:
        chi2 = [o.reduced_chi2 for o in ok]
        seconds = [o.seconds for o in ok]
        lines.append(
            f"- reduced chi^2: median {statistics.median(chi2):.3f}; wall time per image: median "
            f"{statistics.median(seconds):.1f} s, total {sum(seconds):.0f} s"
        )
        sky = [o.sky for o in ok if o.sky is not None]
        if sky:
            lines.append(f"- fitted sky level: median {statistics.median(sky):.4g} counts/s/px")
        table = []
        for name in ordered(names):
            pairs = [(o.fitted[name], o.network[name], o.network_sigma.get(name)) for o in ok if name in o.network]
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
    failed = [o for o in outcomes if not o.ok]
    if failed:
        lines += ["", "## Failed", ""] + [f"- `{o.image}`: {o.status}" for o in failed]
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


def merge_shards(directory: Path) -> tuple[list[FitOutcome], list[str], Shards]:
    """The outcomes (:func:`read_refined_csv`) and lens parameter names of every shard's ``refined.csv`` in a
    ``lenscnn-refine`` multirun ``directory``, and the :class:`Shards`.

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
        if not RunDir(job).refined.is_file():
            raise UserError(f"merge={directory}: shard {index}/{count} ({job.name}/) has no refined.csv; rerun it")
        if not shards.converged and isinstance(config.get("converged"), dict):
            try:
                shards.converged = Convergence(**config["converged"]).describe()
            except (TypeError, UserError):
                shards.converged = ""
    shards.missing = sorted(set(range(shards.count)) - set(seen))
    outcomes: list[FitOutcome] = []
    names: list[str] = []
    where: dict[str, Path] = {}
    for job in jobs:
        path = RunDir(job).refined
        part, part_names = read_refined_csv(path)
        if names and part_names != names:
            raise UserError(f"{path}: other lens parameters ({part_names}) than the other shards ({names})")
        names = part_names
        for outcome in part:
            if outcome.image in where:
                raise UserError(
                    f"merge={directory}: {outcome.image} is in {where[outcome.image].name}/ and {job.name}/"
                )
            where[outcome.image] = job
        outcomes += part
    return outcomes, names, shards


def write_report(path: Path, outcomes: Sequence[FitOutcome], names: Sequence[str], settings: Mapping[str, Any]) -> None:
    """``report.md`` (:func:`report_markdown`), atomically."""
    write_text(path, report_markdown(outcomes, names, settings))
