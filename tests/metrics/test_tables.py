"""The one metrics-table builder: markdown, rich and CSV from the same rows."""

from __future__ import annotations

import pytest
from rich.console import Console

from lenscnn.metrics.tables import EVAL_COLUMNS, Column, MetricsTable, markdown_table

METRICS = {  # as metrics.json stores them: targets by name
    "e1": {"rmse": 0.0123456, "mae": 0.01, "bias": -0.002},
    "center_x": {"rmse": 0.02, "mae": 0.015, "bias": 1e-5},
    "theta_E": {"rmse": 0.05, "mae": 0.04, "bias": 0.001, "coverage_68": 0.69},
}


def test_rows_in_vocabulary_order_with_units_and_only_present_columns():
    table = MetricsTable(METRICS)
    assert [c.key for c in table.present()] == ["rmse", "mae", "bias", "coverage_68"]
    assert table.rows() == [
        ["theta_E", "arcsec", "0.05", "0.04", "0.001", "0.69"],
        ["e1", "-", "0.01235", "0.01", "-0.002", "-"],
        ["center_x", "arcsec", "0.02", "0.015", "1e-05", "-"],
    ]
    markdown = table.markdown().splitlines()
    assert markdown[0] == "| target | unit | rmse | mae | bias | coverage_68 |"
    assert markdown[2] == "| theta_E | arcsec | 0.05 | 0.04 | 0.001 | 0.69 |" and len(markdown) == 5


def test_csv_has_every_column_and_empty_cells():
    header, first, *_ = MetricsTable(METRICS).csv_rows()
    assert header == ["target", "unit", *(c.key for c in EVAL_COLUMNS)]
    assert first == ["theta_E", "arcsec", "0.05", "0.04", "0.001", "", "", "", "0.69", ""]


@pytest.mark.parametrize(
    ("width", "first_column"), [(200, ["theta_E", "e1"]), (60, ["rmse", "mae"]), (40, ["theta_E"] * 2)]
)
def test_rich_table_has_full_titles_and_is_never_cut(width, first_column):
    """Wide enough: targets as rows; narrower: transposed (metrics as rows); narrower still: a row
    per target and metric. No cell is cut."""
    console = Console(width=width, record=True)
    table = MetricsTable(METRICS)
    console.print(table.rich("errors", width))
    text = console.export_text()
    assert ("coverage_68" in text or width < 40) and "0.01235" in text and "1e-05" in text and "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    cells = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    assert cells[:2] == first_column


def test_fixed_columns_custom_names_and_formats():
    columns = (Column("rmse", "RMSE", fmt="{:.3f}"), Column("sigma_scale", "sigma scale"))
    table = MetricsTable(METRICS, columns, name=lambda n: f"`{n}`", drop_empty=False)
    assert table.markdown().splitlines()[2] == "| `theta_E` | arcsec | 0.050 | - |"


def test_markdown_escapes_pipes():
    assert markdown_table(["a"], [["x|y"]]).splitlines()[-1] == "| x\\|y |"
