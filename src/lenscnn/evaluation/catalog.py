"""A real-lens catalogue: FITS cutouts and a CSV of reference values with their uncertainties.

The ``catalog`` keys of ``lenscnn-eval`` (``conf/catalog/none.yaml``) name the CSV (``references``),
the directory its file names are relative to (``images``; default: the CSV's own), and its
``name_column`` and ``file_column``. Every other column named as a lens parameter of
:mod:`lenscnn.params` (``theta_E``, ``e1``, ...; or mapped to one with ``columns: {target: column}``)
holds reference values of that parameter, in its unit (``theta_E`` in arcsec; centres in arcsec from
the cutout's centre, as ``lenscnn-predict`` reports them), with their 1-sigma uncertainties in

- ``<column>_err_low`` and ``<column>_err_high`` (asymmetric, both positive: ``value -low/+high``), or
- ``<column>_err`` (symmetric), or
- neither (the reference counts as exact; the evaluation warns when it scores such a parameter).

A blank (or ``nan``) value means the lens has no reference for that parameter. Columns ``hdu``,
``noise_hdu``, ``psf_hdu`` and ``pixel_scale`` (:data:`ROW_SETTINGS`) set that row's preparation (a blank
cell: the run's setting), so a catalogue of files from several telescopes needs no options. Rows naming
the same lens (its bands, say) are told apart by their file: ``name [file]``. Everything is checked
when the catalogue is read, before a model is loaded: a :class:`UserError` names the row and column.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lenscnn.errors import UserError
from lenscnn.io.cutouts import HDF5_SUFFIXES
from lenscnn.io.fits import open_fits, select_hdu
from lenscnn.params import PARAMETERS, ordered
from lenscnn.preparation.pipeline import Preparation

#: Catalogue columns that set a row's preparation, and the setting each sets.
ROW_SETTINGS = {"hdu": "hdu", "noise_hdu": "noise_hdu", "psf_hdu": "psf", "pixel_scale": "pixel_scale"}


@dataclass(frozen=True)
class CatalogSpec:
    """The ``catalog`` config: the CSV, the image directory, the name and file columns, and
    ``columns`` (``{target: CSV column}`` for value columns not named as their target)."""

    references: Path
    images: Path
    name_column: str = "name"
    file_column: str = "file"
    columns: Mapping[str, str] | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> CatalogSpec | None:
        """The spec of a ``catalog`` config node; ``None`` when it names no CSV (``references: null``)."""
        if not cfg or not cfg.get("references"):
            return None
        references = Path(str(cfg["references"])).expanduser()
        images = Path(str(cfg["images"])).expanduser() if cfg.get("images") else references.parent
        columns = {str(k): str(v) for k, v in (cfg.get("columns") or {}).items()}
        name_column, file_column = str(cfg.get("name_column") or "name"), str(cfg.get("file_column") or "file")
        return cls(references, images, name_column, file_column, columns)


@dataclass
class Reference:
    """One parameter's reference values ``(N,)`` per catalogue row (NaN: not given) and their
    uncertainties ``err_low`` / ``err_high`` (equal when symmetric; 0 when the CSV gives none),
    from CSV ``column``; ``errors`` says which error columns were read."""

    column: str
    value: np.ndarray
    err_low: np.ndarray
    err_high: np.ndarray
    errors: str


@dataclass
class Catalog:
    """A read and checked catalogue: per row its ``name`` and image ``file``; per parameter its
    :class:`Reference` (parameters in vocabulary order)."""

    path: Path
    names: list[str]
    files: list[Path]
    references: dict[str, Reference]
    row_settings: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def description(self) -> str:
        return f"catalogue {self.path} ({len(self)} lenses)"

    def preparations(self, settings: Preparation) -> dict[Path, Preparation]:
        """Each file's preparation: ``settings`` with its row's :data:`ROW_SETTINGS` cells (files whose row
        sets none are left out: they take ``settings``)."""
        prepared = {}
        for name, file, row in zip(self.names, self.files, self.row_settings, strict=False):
            if row:
                try:
                    prepared[file] = dataclasses.replace(settings, **row)
                except UserError as exc:
                    raise UserError(f"{self.path}, lens {name}: {exc}") from None
        return prepared

    def targets(self, predicted: tuple[str, ...] | list[str]) -> list[str]:
        """The parameters the model ``predicted`` that the catalogue gives (model order); refused if none."""
        targets = [t for t in predicted if t in self.references]
        if not targets:
            raise UserError(
                f"{self.path}: gives references for {list(self.references)}, none of which the model predicts "
                f"({list(predicted)}); map a column to a target with catalog.columns={{TARGET: COLUMN}}"
            )
        return targets


#: One CSV row: its line number in the file and its cells by column.
Row = tuple[int, dict[str, str]]


def read_rows(path: Path) -> tuple[list[str], list[Row]]:
    """The header and the non-blank rows of a CSV file, cells stripped (missing cells blank); a
    :class:`UserError` for a missing, unreadable or empty file or a repeated column name."""
    if not path.is_file():
        raise UserError(f"catalog.references={path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            lines = [(reader.line_num, [c.strip() for c in cells]) for cells in reader if any(c.strip() for c in cells)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: not a readable CSV file ({exc})") from None
    if len(lines) < 2:
        raise UserError(f"{path}: the catalogue lists no lenses (a header line and one row per lens needed)")
    header = lines[0][1]
    repeated = sorted({h for h in header if h and header.count(h) > 1})
    if repeated:
        raise UserError(f"{path}: the header names column {repeated[0]!r} twice")
    rows = [
        (line, {h: cells[i] if i < len(cells) else "" for i, h in enumerate(header) if h}) for line, cells in lines[1:]
    ]
    return header, rows


def number(text: str, where: str, *, error: bool = False) -> float:
    """A CSV cell as a float (blank or ``nan``: NaN); a :class:`UserError` naming ``where`` if it is not
    a number, is infinite, or (an ``error``) is negative."""
    if text == "":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: {text!r} is not a number") from None
    if math.isinf(value):
        raise UserError(f"{where}: {text!r} is not a finite number")
    if error and value < 0:
        raise UserError(f"{where}: {text!r} is negative; give uncertainties as positive numbers")
    return value


def value_columns(header: list[str], spec: CatalogSpec) -> dict[str, str]:
    """``{target: column}``: the columns named as a parameter, and those ``spec.columns`` maps."""
    mapped = dict(spec.columns or {})
    for target, column in mapped.items():
        if column not in header:
            raise UserError(f"catalog.columns.{target}={column!r}: {spec.references} has no such column ({header})")
    named = {c: c for c in header if c in PARAMETERS and c not in mapped.values()}
    columns = {**named, **mapped}
    if not columns:
        raise UserError(
            f"{spec.references}: no column of reference values (a parameter name such as theta_E, or one mapped "
            f"with catalog.columns={{theta_E: COLUMN}}); columns: {header}"
        )
    return {t: columns[t] for t in ordered(columns)}


def reference(target: str, column: str, header: list[str], rows: list[Row], path: Path) -> Reference:
    """The :class:`Reference` of ``target`` from ``column`` and its error columns."""
    low, high, sym = f"{column}_err_low", f"{column}_err_high", f"{column}_err"
    if (low in header) != (high in header):
        present, absent = (low, high) if low in header else (high, low)
        raise UserError(f"{path}: has {present} but no {absent}; give both, or one symmetric {sym}")
    error_columns = (low, high) if low in header else (sym, sym) if sym in header else None
    values, lows, highs = [], [], []
    for line, row in rows:
        where = f"{path} line {line}, column {{}}"
        value = number(row.get(column, ""), where.format(column))
        values.append(value)
        if error_columns is None or math.isnan(value):
            lows.append(0.0 if error_columns is None else math.nan)
            highs.append(lows[-1])
            continue
        errors = [number(row.get(c, ""), where.format(c), error=True) for c in error_columns]
        for c, e in zip(error_columns, errors, strict=True):
            if math.isnan(e):
                raise UserError(f"{where.format(c)}: no uncertainty for the {column} given on that line")
        lows.append(errors[0])
        highs.append(errors[1])
    kind = "none" if error_columns is None else f"{low}, {high}" if error_columns[0] == low else sym
    return Reference(column, np.array(values), np.array(lows), np.array(highs), kind)


def read_catalog(spec: CatalogSpec) -> Catalog:
    """Read and check the catalogue ``spec`` names (module docstring); every listed file must exist."""
    header, rows = read_rows(spec.references)
    for key, column in (("name_column", spec.name_column), ("file_column", spec.file_column)):
        if column not in header:
            raise UserError(f"{spec.references}: no column {column!r} (catalog.{key}); columns: {header}")
    references = {t: reference(t, c, header, rows, spec.references) for t, c in value_columns(header, spec).items()}
    names, files, missing, row_settings = [], [], [], []
    for line, row in rows:
        name, file = row[spec.name_column], row[spec.file_column]
        if not file:
            raise UserError(f"{spec.references} line {line}: no file in column {spec.file_column!r}")
        path = Path(file).expanduser()
        path = path if path.is_absolute() else spec.images / path
        if not path.is_file():
            missing.append(path)
        names.append(name or path.name)
        files.append(path)
        row_settings.append(settings_of(row, line, spec.references))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(
            f"{spec.references}: lists {missing[0]}, which does not exist{more}; file names are relative to "
            f"catalog.images={spec.images}"
        )
    counts = collections.Counter(names)
    names = [f"{name} [{file.name}]" if counts[name] > 1 else name for name, file in zip(names, files, strict=True)]
    return Catalog(spec.references, names, files, references, row_settings)


def settings_of(row: Mapping[str, str], line: int, path: Path) -> dict[str, Any]:
    """The preparation settings a CSV row's non-blank :data:`ROW_SETTINGS` cells give (HDU numbers as ints)."""
    settings: dict[str, Any] = {}
    for column, key in ROW_SETTINGS.items():
        cell = row.get(column, "")
        if cell == "":
            continue
        if key == "pixel_scale":
            settings[key] = number(cell, f"{path} line {line}, column {column!r}")
        else:
            settings[key] = int(cell) if cell.isdigit() else cell
    return settings


def single_image_problems(files: list[Path], hdu: int | str) -> dict[Path, str]:
    """The files that do not hold one 2-D image in ``hdu`` (a cube, an HDF5 set), with the reason: a
    catalogue row names one image. Files that cannot be opened are left to the preparation's checks."""
    problems = {}
    for path in files:
        if path.name.lower().endswith(HDF5_SUFFIXES):
            problems[path] = f"{path}: an HDF5 set; a catalogue row names one FITS image"
            continue
        try:
            with open_fits(path) as hdul:
                shape = select_hdu(hdul, hdu, path).shape  # hdu=auto: the science image
        except Exception:  # unreadable or no such HDU: check_inputs says why
            continue
        if len(shape) == 3 and shape[0] != 1:
            problems[path] = f"{path}: HDU {hdu!r} holds an array of shape {shape}; a catalogue row names one 2-D image"
    return problems
