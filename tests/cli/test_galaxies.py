"""``lenscnn-galaxies`` chooses no matplotlib backend when imported (the entry point does, for every app)
and draws its preview headless."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import run_cli
from tests.sim.test_galaxies import exponential_galaxy, write_stamp


def test_importing_the_app_module_keeps_the_backend():
    code = "import matplotlib; matplotlib.use('svg'); import lenscnn.cli.galaxies; print(matplotlib.get_backend())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "svg"


def test_the_app_draws_its_preview_without_a_display(tmp_path, monkeypatch):
    """No display and an interactive backend asked for in the environment: the app still writes its PNG."""
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    for seed in range(3):
        write_stamp(stamps / f"g{seed}.fits", exponential_galaxy(seed=seed), PIXSCALE=0.05)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setitem(os.environ, "MPLBACKEND", "TkAgg")
    run = tmp_path / "run"
    result = run_cli("galaxies", [f"hydra.run.dir={run}", f"library={stamps}", "size=32", "preview=3"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    png = (run / "galaxies.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png.endswith(b"IEND\xaeB`\x82")
    assert not list(run.glob(".*.partial"))
    assert (run / "galaxies.h5").is_file()
