"""The calibration record of an ensemble: the fitted sigma recalibration and the settings it was fitted with.

A record is ``{"sigma_scale": {target: positive number}, ...}``, with the power law's ``sigma_power`` and
``sigma_pivot`` and the ``mc_samples`` and ``symmetries`` it was fitted with (:func:`calibration_fit` says
which may be missing); ``lenscnn-eval calibrate=true`` writes it. A single member keeps it in its
checkpoint (``calibration``); several members share a JSON file that also holds the digests of the member
files it was fitted for (``members``). :func:`calibration_fit` turns a record into the
:class:`lenscnn.metrics.calibration.SigmaCalibration` that :class:`lenscnn.models.ensemble.Ensemble`
applies to its total sigma.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from lenscnn.errors import UserError
from lenscnn.io.atomic import write_json
from lenscnn.metrics.calibration import SigmaCalibration
from lenscnn.models.checkpoint import file_digest, read_checkpoint, save_checkpoint_atomic
from lenscnn.models.symmetry import SYMMETRY_COUNTS


class MemberSources(Protocol):
    """What :func:`store_calibration` needs of an ensemble (:class:`lenscnn.models.ensemble.Ensemble`):
    where each member came from (its checkpoint file)."""

    @property
    def sources(self) -> Sequence[str]: ...


def _per_target(record: Mapping[str, Any], key: str, names: Sequence[str], source: str | Path | None) -> list[float]:
    """``record[key]`` as positive finite numbers in the order of ``names``."""
    fitted = record.get(key)
    if not isinstance(fitted, Mapping):
        raise UserError(f"{source}: the calibration has no {key} per target; re-run lenscnn-eval calibrate=true")
    if set(fitted) != set(names):
        raise UserError(
            f"{source}: calibration for targets {sorted(map(str, fitted))} does not fit targets {list(names)}; "
            "re-run lenscnn-eval calibrate=true"
        )
    values = [fitted[n] for n in names]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf for v in values):
        raise UserError(f"{source}: calibration {key} {values} must be positive numbers; re-run calibrate=true")
    return [float(v) for v in values]


def calibration_fit(record: Any, names: Sequence[str], source: str | Path | None) -> SigmaCalibration | None:
    """The sigma recalibration of a calibration ``record`` (``None`` for no record, or an empty one).

    Refuses a record that is not ``{"sigma_scale": {target: positive number}, ...}`` with optional
    ``sigma_power`` and ``sigma_pivot`` of the same form (together; records written before the power
    law have neither: a plain scale), ``mc_samples`` (a count) and ``symmetries`` (1 or 8): the
    settings it was fitted with."""
    if record is None or (isinstance(record, Mapping) and not record):
        return None
    if not isinstance(record, Mapping):
        raise UserError(f"{source}: the calibration has no sigma_scale per target; re-run lenscnn-eval calibrate=true")
    scale = _per_target(record, "sigma_scale", names, source)
    if ("sigma_power" in record) != ("sigma_pivot" in record):
        raise UserError(f"{source}: calibration has one of sigma_power and sigma_pivot only; re-run calibrate=true")
    power, pivot = [1.0] * len(names), [1.0] * len(names)  # a plain scale
    if "sigma_power" in record:
        power, pivot = (_per_target(record, key, names, source) for key in ("sigma_power", "sigma_pivot"))
    mc_samples = record.get("mc_samples")
    if mc_samples is not None and (isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 0):
        raise UserError(f"{source}: calibration mc_samples={mc_samples!r} is not a count; re-run calibrate=true")
    symmetries = record.get("symmetries", 1)  # records written before symmetries: fitted with 1
    if isinstance(symmetries, bool) or not isinstance(symmetries, int) or symmetries not in SYMMETRY_COUNTS:
        raise UserError(f"{source}: calibration symmetries={symmetries!r} is not 1 or 8; re-run calibrate=true")
    return SigmaCalibration(*(torch.tensor(v, dtype=torch.float64) for v in (scale, power, pivot)))


def read_calibration(path: str | Path | None, members: Sequence[Path]) -> dict[str, Any] | None:
    """The ensemble calibration record at ``path`` (``None`` if there is none); refuses a record
    fitted for other members (compared by file content)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        record = json.loads(Path(path).read_text())
        digests = record["members"]
        record["sigma_scale"]
    except (ValueError, KeyError, TypeError):
        digests = None
    if not (isinstance(digests, list) and all(isinstance(d, str) for d in digests)):
        raise UserError(f"{path}: not a lenscnn calibration file; delete it or re-run with calibrate=true")
    if sorted(digests) != sorted(file_digest(m) for m in members):
        raise UserError(f"{path}: calibration was fitted for other members; re-run lenscnn-eval with calibrate=true")
    return record


def write_calibration(path: str | Path, record: Mapping[str, Any], members: Sequence[str | Path]) -> None:
    """Store an ensemble calibration ``record`` as JSON at ``path`` (atomically), with the digests
    of the member files it was fitted for."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**record, "members": [file_digest(m) for m in members]})


def store_calibration(ensemble: MemberSources, record: Mapping[str, Any], calibration_file: str | Path | None) -> Path:
    """Store a calibration ``record``: in the checkpoint of a single-member ensemble (atomically),
    else as JSON at ``calibration_file`` (:func:`write_calibration`). Returns where it went."""
    sources = ensemble.sources
    if len(sources) == 1:
        checkpoint = read_checkpoint(sources[0])
        checkpoint["calibration"] = dict(record)
        save_checkpoint_atomic(checkpoint, sources[0])
        return Path(sources[0])
    if calibration_file is None:
        raise UserError("an ensemble of several members needs ensemble.calibration=<file> to store its calibration")
    write_calibration(calibration_file, record, sources)
    return Path(calibration_file)
