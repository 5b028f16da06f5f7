"""``log_figure``: the run directory's copy is written by ``save_figure`` (atomic) and the figure is closed."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest

from lenscnn.training.figures import log_figure


def trainer(root, rank_zero: bool = True) -> SimpleNamespace:
    return SimpleNamespace(is_global_zero=rank_zero, global_step=7, loggers=[], default_root_dir=str(root))


def test_log_figure_saves_a_complete_png_and_closes_the_figure(tmp_path):
    plt.close("all")
    fig, _ = plt.subplots(figsize=(2, 2))
    log_figure(trainer(tmp_path), "val/examples", fig)
    files = [p.name for p in (tmp_path / "figures").iterdir()]
    assert files == ["val_examples_step0000007.png"]  # no temporary file left
    png = (tmp_path / "figures" / files[0]).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png.endswith(b"IEND\xaeB`\x82")
    assert plt.get_fignums() == []


def test_log_figure_closes_the_figure_on_other_ranks_and_on_failure(tmp_path, monkeypatch):
    plt.close("all")
    fig, _ = plt.subplots()
    log_figure(trainer(tmp_path, rank_zero=False), "val/examples", fig)
    assert plt.get_fignums() == [] and not (tmp_path / "figures").exists()

    fig, _ = plt.subplots()
    monkeypatch.setattr(fig, "savefig", lambda *args, **kwargs: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        log_figure(trainer(tmp_path), "val/examples", fig)
    assert plt.get_fignums() == [] and list((tmp_path / "figures").iterdir()) == []
