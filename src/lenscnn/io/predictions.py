"""``predictions.csv``: the one column convention of every per-lens prediction table, its writer and reader.

Three apps write one (:attr:`lenscnn.io.run_dir.RunDir.predictions`): ``lenscnn-predict`` (a row per image),
``lenscnn-eval`` on a simulated set (a row per lens) and ``lenscnn-eval`` on a catalogue of real lenses.
Per target ``<t>`` (a name of :mod:`lenscnn.params`, in its unit: arcsec for ``theta_E`` and the centre):

=====================  ==================================================================
``<t>``                the prediction (the ensemble mean)
``<t>_sigma``          its 1-sigma uncertainty (calibrated), when the model gives one
``<t>_true``           the true value of a simulated lens
``<t>_ref``            a catalogue's reference value, ``<t>_ref_err_low`` / ``_high`` its errors
``<t>_z``              (prediction - reference) / combined sigma
=====================  ==================================================================

The other columns (``image``, ``status``, ``flags``, what the preparation did) are each app's, documented
there. Tables written before this convention (``lenscnn-eval``'s ``pred_<t>``, ``sigma_<t>``, ``true_<t>``,
``ref_<t>``, ``ref_err_low_<t>``, ``ref_err_high_<t>``, ``z_<t>``) are read with their columns renamed to it.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenscnn.errors import UserError, one_line
from lenscnn.io.atomic import atomic_path
from lenscnn.io.run_dir import RunDir

#: Column suffix of each kind of per-target value.
SUFFIXES = {
    "value": "",
    "sigma": "_sigma",
    "true": "_true",
    "ref": "_ref",
    "ref_err_low": "_ref_err_low",
    "ref_err_high": "_ref_err_high",
    "z": "_z",
}

#: The prefixes of tables written before :data:`SUFFIXES` (longest first, so ``ref_err_low_`` is not ``ref_``).
LEGACY_PREFIXES = {
    "ref_err_low_": "ref_err_low",
    "ref_err_high_": "ref_err_high",
    "pred_": "value",
    "sigma_": "sigma",
    "true_": "true",
    "ref_": "ref",
    "z_": "z",
}


def column(target: str, kind: str = "value") -> str:
    """The column of ``target``'s value of ``kind`` (a key of :data:`SUFFIXES`)."""
    return target + SUFFIXES[kind]


def target_columns(targets: Iterable[str], kinds: Sequence[str]) -> list[str]:
    """Per target in order, its columns of ``kinds`` in order (e.g. ``["true", "value", "sigma"]``)."""
    return [column(t, kind) for t in targets for kind in kinds]


def canonical_columns(header: Sequence[str]) -> list[str]:
    """``header`` in today's convention: a table with a ``pred_<t>`` column is an old ``lenscnn-eval``
    table, whose prefixed columns are renamed (``sigma_v`` in a new table is a target, not a sigma)."""
    if not any(name.startswith("pred_") for name in header):
        return list(header)
    out = []
    for name in header:
        prefix = next((p for p in LEGACY_PREFIXES if name.startswith(p)), None)
        out.append(name if prefix is None else column(name.removeprefix(prefix), LEGACY_PREFIXES[prefix]))
    return out


def format_value(value: Any) -> str:
    """A cell: blank for ``None`` or NaN, 7 significant digits for a float, else the text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.7g}" if isinstance(value, float) else str(value)


@contextmanager
def open_table(path: str | Path, columns: Sequence[str]) -> Iterator[Any]:
    """A CSV writer for a predictions table at ``path`` with its header written; rows may be streamed.
    The file is written under a temporary name and renamed into place when the block ends without error."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        yield writer


def write_table(path: str | Path, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a whole predictions table atomically (cells as :func:`format_value`)."""
    with open_table(path, columns) as writer:
        writer.writerows([format_value(v) for v in row] for row in rows)


@dataclass
class PredictionTable:
    """A predictions table read back: ``columns`` in today's convention and one ``{column: text}`` per row."""

    path: Path
    columns: list[str]
    rows: list[dict[str, str]]

    def values(self, target: str, kind: str = "value") -> list[float]:
        """``target``'s column of ``kind`` as floats (NaN where blank); a :class:`UserError` without it."""
        name = column(target, kind)
        if name not in self.columns:
            raise UserError(f"{self.path}: no column {name}")
        return [float(row[name]) if row[name] not in ("", None) else math.nan for row in self.rows]


def read_table(path: str | Path) -> PredictionTable:
    """The predictions table at ``path`` (old column names renamed: :func:`canonical_columns`)."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise UserError(f"{path}: empty; give a predictions.csv written by lenscnn-predict or lenscnn-eval")
            columns = canonical_columns(header)
            rows = [dict(zip(columns, row, strict=False)) for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read it as CSV ({exc})") from None
    return PredictionTable(path, columns, rows)


def predictions_file(path: str | Path) -> Path:
    """``path`` as a ``predictions.csv``: the file, or the one in a ``lenscnn-predict`` run directory."""
    file = Path(path).expanduser()
    return RunDir(file).predictions if file.is_dir() else file


def read_model_record(path: str | Path) -> dict[str, Any] | None:
    """``model.json`` beside the predictions ``path`` (:func:`lenscnn.evaluation.predict_files.model_record`):
    the model that made them, with its simulator config; ``None`` for predictions that do not say."""
    record = RunDir(predictions_file(path).parent).model
    if not record.is_file():
        return None
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{record}: not a model record of lenscnn-predict ({one_line(exc)})") from None
