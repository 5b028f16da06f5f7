"""``lenscnn.plots.save_figure``: the one way a figure is written (atomic, the figure closed after),
and every figure of the package goes through it."""

from __future__ import annotations

import ast
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

import lenscnn
from lenscnn.plots import save_figure

SRC = Path(lenscnn.__file__).parent


def figure() -> plt.Figure:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    return fig


def test_save_figure_writes_the_whole_file_and_closes_the_figure(tmp_path):
    plt.close("all")
    fig = figure()
    path = save_figure(fig, tmp_path / "a.png", dpi=50)
    assert path == tmp_path / "a.png"
    png = path.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png.endswith(b"IEND\xaeB`\x82")  # complete
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left
    assert plt.get_fignums() == []


def test_save_figure_takes_the_format_from_the_suffix(tmp_path):
    save_figure(figure(), tmp_path / "a.pdf")
    assert (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF")
    assert plt.get_fignums() == []


def test_a_failed_save_keeps_the_old_file_leaves_no_temporary_and_closes_the_figure(tmp_path, monkeypatch):
    plt.close("all")
    path = tmp_path / "a.png"
    path.write_bytes(b"the previous figure")
    fig = figure()

    def half_written(target, **kwargs):
        Path(target).write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", half_written)
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, path)
    assert path.read_bytes() == b"the previous figure"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
    assert plt.get_fignums() == []


def test_a_missing_directory_fails_and_still_closes_the_figure(tmp_path):
    plt.close("all")
    with pytest.raises(OSError):
        save_figure(figure(), tmp_path / "nowhere" / "a.png")
    assert plt.get_fignums() == []


def test_every_figure_of_the_package_is_written_by_save_figure():
    """No module but :mod:`lenscnn.plots` calls ``savefig`` (of a figure or of pyplot)."""
    callers = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "plots.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "savefig":
                callers.append(f"{path.relative_to(SRC.parent)}:{node.lineno}")
    assert callers == []
