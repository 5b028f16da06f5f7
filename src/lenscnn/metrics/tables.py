"""The one builder of per-target metric tables, rendered as markdown, rich or CSV rows.

The terminal table of ``lenscnn-eval``, ``report.md``, ``metrics.csv``, the model card and
the end-of-training summary are all a :class:`MetricsTable`: one row per target (in
vocabulary order, with its unit from :mod:`lenscnn.params`), one column per metric.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from lenscnn.params import ordered, unit


@dataclass(frozen=True)
class Column:
    """A metric column: ``key`` in the per-target metric dict, its ``title``, and how a value is written."""

    key: str
    title: str
    fmt: str = "{:.4g}"


#: Every metric ``lenscnn-eval`` reports, in ``metrics.csv`` / ``report.md`` order.
EVAL_COLUMNS = (
    Column("rmse", "rmse"),
    Column("mae", "mae"),
    Column("bias", "bias"),
    Column("median_abs_error", "median_abs_error"),
    Column("outlier_fraction", "outlier_fraction"),
    Column("nll", "nll"),
    Column("coverage_68", "coverage_68"),
    Column("coverage_95", "coverage_95"),
)

#: What ``lenscnn-eval`` reports on a real-lens catalogue (:mod:`lenscnn.metrics.reference`): the
#: errors against the references and the z-scores of the residuals in the combined uncertainty.
CATALOG_COLUMNS = (
    Column("n", "n", "{}"),
    Column("flagged", "flagged", "{}"),
    Column("rmse", "rmse"),
    Column("mae", "mae"),
    Column("bias", "bias"),
    Column("median_abs_error", "median_abs_error"),
    Column("median_abs_z", "median_abs_z"),
    Column("nll", "nll"),
    Column("coverage_68", "coverage_68"),
    Column("coverage_95", "coverage_95"),
)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (``|`` inside cells escaped)."""
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class MetricsTable:
    """Per-target metrics ``{target: {metric: value}}`` with the columns to show.

    With ``drop_empty``, columns whose metric no target has (e.g. coverage of a model without
    uncertainties) are left out of the markdown and rich tables; a missing single value is
    written ``missing``. ``name`` writes a target's name in its row.
    """

    metrics: Mapping[str, Mapping[str, float | None]]
    columns: Sequence[Column] = EVAL_COLUMNS
    name: Callable[[str], str] = str
    missing: str = "-"
    drop_empty: bool = True

    @property
    def targets(self) -> list[str]:
        return ordered(self.metrics)

    def present(self) -> list[Column]:
        """The columns shown in markdown and rich tables."""
        if not self.drop_empty:
            return list(self.columns)
        return [c for c in self.columns if any(v.get(c.key) is not None for v in self.metrics.values())]

    def rows(self, columns: Sequence[Column] | None = None) -> list[list[str]]:
        """One row per target: its name, its unit (``-`` if dimensionless) and the formatted values."""
        columns = self.present() if columns is None else columns
        rows = []
        for target in self.targets:
            values = self.metrics[target]
            cells = [self.missing if values.get(c.key) is None else c.fmt.format(values[c.key]) for c in columns]
            rows.append([self.name(target), unit(target) or "-", *cells])
        return rows

    def markdown(self) -> str:
        columns = self.present()
        return markdown_table(["target", "unit", *(c.title for c in columns)], self.rows(columns))

    def rich(self, title: str, width: int | None = None) -> Table:
        """A rich table with the full column titles. Targets as rows; if that is wider than
        ``width`` characters (a narrow terminal or log), transposed (metrics as rows); if still too
        wide, one row per target and metric (folded if even that is too wide). No cell is cut."""
        columns = self.present()
        rows = self.rows(columns)
        layouts = (self._by_target, self._by_metric, self._long)
        for layout in layouts:
            table = layout(title, columns, rows)
            if width is None or _natural_width(table) <= width:
                break
        return table

    @staticmethod
    def _by_target(title: str, columns: Sequence[Column], rows: list[list[str]]) -> Table:
        table = Table(title=title)
        for header in ("target", "unit", *(c.title for c in columns)):
            table.add_column(header, justify="left" if header in ("target", "unit") else "right", no_wrap=True)
        for row in rows:
            table.add_row(*row)
        return table

    @staticmethod
    def _by_metric(title: str, columns: Sequence[Column], rows: list[list[str]]) -> Table:
        table = Table(title=title)
        table.add_column("metric", no_wrap=True)
        for name, unit_, *_ in rows:
            table.add_column(name if unit_ == "-" else f"{name} [{unit_}]", justify="right", no_wrap=True)
        for i, column in enumerate(columns):
            table.add_row(column.title, *(row[2 + i] for row in rows))
        return table

    @staticmethod
    def _long(title: str, columns: Sequence[Column], rows: list[list[str]]) -> Table:
        table = Table(title=title)
        for header in ("target", "metric", "value"):  # the last resort: folds rather than cuts
            table.add_column(header, justify="right" if header == "value" else "left", overflow="fold")
        for name, unit_, *values in rows:
            for column, value in zip(columns, values, strict=True):
                table.add_row(name, column.title, value if unit_ == "-" else f"{value} {unit_}")
            table.add_section()
        return table

    def csv_rows(self) -> list[list[str]]:
        """Header and rows for a CSV file: every column (empty cells where a value is missing),
        unit empty when dimensionless, values to 7 significant digits."""
        header = ["target", "unit", *(c.key for c in self.columns)]
        rows = []
        for target in self.targets:
            values = self.metrics[target]
            cells = ("" if values.get(c.key) is None else f"{values[c.key]:.7g}" for c in self.columns)
            rows.append([target, unit(target), *cells])
        return [header, *rows]


def _natural_width(table: Table) -> int:
    """The width ``table`` takes when nothing constrains it."""
    from rich.console import Console

    return Console(width=10_000).measure(table).maximum
