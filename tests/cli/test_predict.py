"""``lenscnn-predict``: FITS with a WCS in, the in-memory prediction out; bad files get their row and
the others are predicted; bad options and a single bad input refused before the model loads; a large
directory streamed with bounded memory and progress lines."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.wcs import WCS

import lenscnn.cli.predict as predict_app
from lenscnn import progress as progress_module
from lenscnn.errors import UserError
from lenscnn.evaluation.predict_files import CriticalCurvePlots
from lenscnn.io.cutouts import image_stem
from lenscnn.models.checkpoint import read_checkpoint
from lenscnn.models.ensemble import Ensemble
from lenscnn.sim import Simulator
from tests.helpers import celestial_header, compose_run, run_app

NAMES = ("theta_E", "e1", "e2", "center_x", "center_y")


def simulate(checkpoint, n: int, seed: int = 7) -> tuple[torch.Tensor, dict]:
    config = read_checkpoint(checkpoint)["hyper_parameters"]["simulator"]
    return Simulator.from_config({**config, "compile": False}).sample(n, generator=torch.Generator().manual_seed(seed))


def write_fits(path, image: np.ndarray, scale: float = 0.08) -> None:
    fits.PrimaryHDU(image.astype(np.float32), header=celestial_header(scale, image.shape[-1])).writeto(path)


def predict(out, *args):
    return run_app("predict", [*args, f"hydra.run.dir={out}"])


#: The preparation off: the images as they are (no sky subtracted, no cosmic-ray search).
AS_IS = ["sky=none", "cosmic_rays=false", "units=counts"]  # the pixels as simulated, in counts/s


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_predict_fits_with_wcs_matches_the_in_memory_prediction(tiny_checkpoint, tmp_path):
    images, _ = simulate(tiny_checkpoint, 3)
    inputs = tmp_path / "cutouts"
    inputs.mkdir()
    for k in range(2):
        write_fits(inputs / f"lens{k}.fits", images[k, 0].numpy())
    # a larger cutout (zero border) is centre-cropped back to the model's 32 x 32
    write_fits(inputs / "lens2_large.fits", np.pad(images[2, 0].numpy(), 5))
    out = tmp_path / "run"
    args = [f"ckpt_path={tiny_checkpoint}", f"input={inputs}", "plots=true", "formats=[csv,lenstronomy]"]
    result = predict(out, *args, *AS_IS)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_rows(out / "predictions.csv")
    assert [r["image"].rsplit("/", 1)[-1] for r in rows] == ["lens0.fits", "lens1.fits", "lens2_large.fits"]
    assert all(r["status"] == "ok" and r["sky"] == "0" and r["cosmic_ray_pixels"] == "0" for r in rows)

    expected = Ensemble.from_checkpoints([tiny_checkpoint]).predict(images)
    for k, row in enumerate(rows):
        for i, name in enumerate(NAMES):
            assert float(row[name]) == pytest.approx(float(expected.mean[k, i]), rel=1e-4, abs=1e-5)
            assert float(row[f"{name}_sigma"]) == pytest.approx(float(expected.sigma[k, i]), rel=1e-4)
        # the centre in input pixels and on the sky, through the file's own WCS
        size = 42 if k == 2 else 32
        col = (size - 1) / 2 + float(row["center_x"]) / 0.08
        row_ = (size - 1) / 2 + float(row["center_y"]) / 0.08
        assert float(row["center_col"]) == pytest.approx(col, abs=2e-3)
        assert float(row["center_row"]) == pytest.approx(row_, abs=2e-3)
        ra, dec = WCS(celestial_header(0.08, size)).pixel_to_world_values(col, row_)
        assert float(row["center_ra"]) == pytest.approx(float(ra), abs=1e-7)
        assert float(row["center_dec"]) == pytest.approx(float(dec), abs=1e-7)
    for name in ("lens0", "lens1", "lens2_large"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    # formats=[...,lenstronomy]: per image the kwargs of a lenstronomy fit, at the predicted values
    for row, name in zip(rows, ("lens0", "lens1", "lens2_large"), strict=True):
        setup = json.loads((out / "lenstronomy" / f"{name}.json").read_text())
        assert setup["image"] == row["image"] and setup["kwargs_model"]["lens_model_list"][0] == "SIE"
        for key in NAMES:
            assert setup["kwargs_lens"][0][key] == pytest.approx(float(row[key]), rel=1e-5, abs=1e-6)
            assert setup["kwargs_lens_sigma"][0][key] == pytest.approx(float(row[f"{key}_sigma"]), rel=1e-5)
        assert setup["kwargs_pixel_grid"]["nx"] == 32 and setup["kwargs_data"]["background_rms"] > 0
    assert not list(out.glob(".lenstronomy*"))


def test_predict_resamples_fills_and_reads_hdf5(tiny_checkpoint, tmp_path):
    images, _ = simulate(tiny_checkpoint, 2)
    fine = torch.nn.functional.interpolate(images[:1], scale_factor=2, mode="nearest")[0, 0] / 4  # 0.04"/px
    inputs = tmp_path / "cutouts"
    inputs.mkdir()
    write_fits(inputs / "fine.fits", fine.numpy(), scale=0.04)
    holey = images[1, 0].numpy().copy()
    holey[0, 0] = np.nan
    write_fits(inputs / "holey.fits", holey)
    out = tmp_path / "run"
    result = predict(out, f"ckpt_path={tiny_checkpoint}", f"input={inputs}", "resample=true", "fill_nan=0")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_rows(out / "predictions.csv")
    expected = Ensemble.from_checkpoints([tiny_checkpoint]).predict(images).mean
    fine_row = next(r for r in rows if r["image"].endswith("fine.fits"))
    # 2x2 block-replicated then resampled back: the same lens, so nearly the same prediction
    assert float(fine_row["theta_E"]) == pytest.approx(float(expected[0, 0]), abs=0.05)

    sim = run_app("simulate", ["n=5", "instrument.image_size=32", "preview=0", f"hydra.run.dir={tmp_path / 'sim'}"])
    assert sim.returncode == 0, sim.stderr[-2000:]
    h5 = tmp_path / "h5"
    assert predict(h5, f"ckpt_path={tiny_checkpoint}", f"input={tmp_path / 'sim' / 'lenses.h5'}").returncode == 0
    assert [r["image"].rsplit("/", 1)[-1] for r in read_rows(h5 / "predictions.csv")] == [
        f"lenses.h5[{k}]" for k in range(5)
    ]


BAD_FILES = {
    "wrong pixel scale, resample=false": ("scale", "differs from the model's"),
    "too small": ("small", "smaller than the model's"),
    "not an image": ("table", "holds no image"),
    "truncated": ("truncated", "not a readable FITS file"),
    "a noise map of the wrong shape": ("noise", "noise map of shape"),
}


#: The case also run as users run it (a subprocess: exit status 1 and the one log line); the others in process.
BAD_FILE_IN_A_SUBPROCESS = "truncated"


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_gets_its_row_and_the_others_are_predicted(tiny_checkpoint, tmp_path, case, caplog):
    kind, message = BAD_FILES[case]
    images, _ = simulate(tiny_checkpoint, 1)
    image = images[0, 0].numpy()
    inputs = tmp_path / "cutouts"
    inputs.mkdir()
    write_fits(inputs / "a_good.fits", image)
    bad = inputs / "b_bad.fits"
    if kind == "scale":
        write_fits(bad, image, scale=0.1)
    elif kind == "small":
        write_fits(bad, image[:20, :20])
    elif kind == "table":
        table = fits.BinTableHDU.from_columns([fits.Column("a", "D", array=[1.0])])
        fits.HDUList([fits.PrimaryHDU(), table]).writeto(bad)  # a catalogue, no image
    elif kind == "truncated":
        write_fits(bad, image)
        bad.write_bytes(bad.read_bytes()[:3000])
    elif kind == "noise":
        sci = fits.PrimaryHDU(image.astype(np.float32), header=celestial_header(0.08, 32))
        fits.HDUList([sci, fits.ImageHDU(np.ones((8, 8), dtype=np.float32), name="WHT")]).writeto(bad)
    write_fits(inputs / "c_good.fits", image)
    out = tmp_path / "run"
    args = [f"ckpt_path={tiny_checkpoint}", f"input={inputs}", "resample=false"]
    if case == BAD_FILE_IN_A_SUBPROCESS:
        result = predict(out, *args)
        assert result.returncode == 1, result.stderr[-2000:]
        output = result.stdout + result.stderr
        assert "1 failed" in (out / "predict.log").read_text()
    else:
        with caplog.at_level(logging.INFO, logger="lenscnn"):
            assert predict_in_process(out, *args).failed == 1  # one image failed
        output = caplog.text
    rows = read_rows(out / "predictions.csv")
    assert [(Path(r["image"]).name, r["status"][:6]) for r in rows] == [
        ("a_good.fits", "ok"),
        ("b_bad.fits", "failed"),
        ("c_good.fits", "ok"),
    ]
    assert message in rows[1]["status"] and rows[1]["theta_E"] == ""
    assert rows[0]["theta_E"] == rows[2]["theta_E"] != ""
    failures = [line for line in output.splitlines() if "b_bad.fits" in line and "failed" in line]
    assert len(failures) == 1, output
    assert "1 failed" in output


SINGLE_BAD = {
    "not an image": ("table", "holds no image"),
    "missing file": ("missing", "no such file or directory"),
    "corrupted checkpoint": ("corrupt", "not a readable PyTorch checkpoint"),
    "fill_nan not a number": ("fill_nan", "fill_nan='abc'"),
    "a PSF file without a pixel scale": ("psf", "PIXSCALE"),
    "a weight HDU of the wrong shape": ("shape", "noise map of shape"),
    "negative weights": ("negative", "negative values"),
}


@pytest.mark.parametrize("case", list(SINGLE_BAD))
def test_a_single_bad_input_or_option_is_refused_and_writes_nothing(tiny_checkpoint, tmp_path, case, monkeypatch):
    """Each refusal in process (the app's one-line report, exit status 2: the test below)."""
    kind, message = SINGLE_BAD[case]
    images, _ = simulate(tiny_checkpoint, 1)
    target = tmp_path / "lens.fits"
    write_fits(target, images[0, 0].numpy())
    checkpoint, extra = tiny_checkpoint, []
    if kind == "table":
        target = tmp_path / "table.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "D", array=[1.0])])]).writeto(
            target
        )
    elif kind == "missing":
        target = tmp_path / "missing.fits"
    elif kind == "corrupt":
        checkpoint = tmp_path / "corrupt.ckpt"
        checkpoint.write_bytes(tiny_checkpoint.read_bytes()[:3000])
    elif kind == "fill_nan":
        extra = ["fill_nan=abc"]
    elif kind == "psf":
        fits.PrimaryHDU(np.ones((5, 5))).writeto(tmp_path / "psf.fits")
        extra = [f"psf={tmp_path / 'psf.fits'}"]
    elif kind in ("shape", "negative"):
        weights = np.ones((8, 8)) if kind == "shape" else -np.ones(images.shape[-2:])
        sci = fits.PrimaryHDU(images[0, 0].numpy().astype(np.float32), header=celestial_header(0.08, 32))
        target = tmp_path / "weighted.fits"
        fits.HDUList([sci, fits.ImageHDU(weights.astype(np.float32), name="WHT")]).writeto(target)
    out = tmp_path / "run"
    args = [f"ckpt_path={checkpoint}", f"input={target}", *extra]
    loaded = []
    if kind not in ("corrupt", "shape", "negative"):  # refused before the model is read (those three: after)
        monkeypatch.setattr(predict_app, "open_model", lambda *a, **k: loaded.append(1))
    with pytest.raises(UserError, match=re.escape(message)):
        predict_in_process(out, *args)
    assert not loaded
    assert not (out / "predictions.csv").exists()
    assert not list(out.glob("*.partial"))


def test_a_refused_input_is_one_line_exit_2_and_writes_nothing(tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    result = predict(out, f"ckpt_path={tiny_checkpoint}", f"input={tmp_path / 'missing.fits'}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no such file or directory" in lines[0], lines
    assert not (out / "predictions.csv").exists() and not list(out.glob("*.partial"))


def predict_in_process(out, *args):
    """``predict(cfg)`` of ``lenscnn-predict args...`` in this process, writing into ``out``."""
    return predict_app.predict(compose_run("predict", out, list(args)))


def fits_bytes(image: np.ndarray, wcs: bool) -> bytes:
    """A FITS file of ``image`` at 0.08"/px: a celestial WCS, or only ``PIXSCALE`` (quicker to read)."""
    header = celestial_header(0.08, image.shape[-1]) if wcs else fits.Header({"PIXSCALE": 0.08})
    buffer = io.BytesIO()
    fits.PrimaryHDU(image.astype(np.float32), header=header).writeto(buffer)
    return buffer.getvalue()


def status_kb(key: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(key)


def peak_rss_growth_mb(task) -> float:
    """Peak resident-set growth [MB] while ``task()`` runs: the kernel's high-water mark, reset to
    the current RSS before (``/proc/self/clear_refs``), and a sampler thread every 5 ms."""
    before = status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            peak[0] = max(peak[0], status_kb("VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        task()
    finally:
        stop.set()
        sampler.join()
    high = max(peak[0], status_kb("VmRSS"), status_kb("VmHWM") if reset else 0)
    return (high - before) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the resident set from /proc")
def test_predict_streams_a_large_directory_with_bounded_memory(tiny_checkpoint, tmp_path):
    # 600 cutouts of 128 x 128 px (centre-cropped to the model's 32 x 32; one in 8 with a WCS):
    # 128 kB of float64 pixels each as read, so holding every cutout would grow the process by
    # ~77 MB, and by ~64 MB more over 600 files than over 100
    images, _ = simulate(tiny_checkpoint, 8)
    blobs = [fits_bytes(np.pad(image[0].numpy(), 48, mode="reflect"), wcs=k == 0) for k, image in enumerate(images)]
    inputs = tmp_path / "cutouts"
    inputs.mkdir()
    names = [f"lens_{k:05d}.fits" for k in range(600)]
    for k, name in enumerate(names):
        (inputs / name).write_bytes(blobs[k % len(blobs)])
    model = [f"ckpt_path={tiny_checkpoint}", "batch_size=64", *AS_IS]
    predict_in_process(tmp_path / "warm", *model, f"input='{inputs}/lens_000[0-6]*'")  # first-use allocations
    small = peak_rss_growth_mb(lambda: predict_in_process(tmp_path / "100", *model, f"input='{inputs}/lens_000*'"))
    large = peak_rss_growth_mb(lambda: predict_in_process(tmp_path / "600", *model, f"input={inputs}"))
    assert len(read_rows(tmp_path / "100" / "predictions.csv")) == 100
    rows = read_rows(tmp_path / "600" / "predictions.csv")
    assert [Path(r["image"]).name for r in rows] == names  # every file, in order, once
    assert all(float(r["theta_E"]) > 0 and bool(r["center_ra"]) == (k % 8 == 0) for k, r in enumerate(rows))
    # 6x the files, about the same memory: nothing is kept per file (a batch of 64 is ~8 MB)
    assert large < 100, f"RSS grew by {large:.0f} MB over 600 files"  # with the domain reference, once
    assert large - small < 25, f"RSS grew by {small:.0f} MB over 100 files and {large:.0f} MB over 600"


def test_a_bad_file_mid_directory_leaves_every_other_output_in_place(tiny_checkpoint, tmp_path, monkeypatch):
    images, _ = simulate(tiny_checkpoint, 1)
    image = images[0, 0].numpy()
    inputs = tmp_path / "cutouts"
    inputs.mkdir()
    for k in range(12):  # lens_00 ... lens_11, the bad file sorted between lens_05 and lens_06
        write_fits(inputs / f"lens_{k:02d}.fits", image)
    write_fits(inputs / "lens_05_bad.fits", image[:10, :10])
    # the figures are drawn by the first test; here only their files matter (and are fast)
    monkeypatch.setattr(
        CriticalCurvePlots, "write", lambda plots, r: (plots.staging / f"{image_stem(r.label)}.png").touch()
    )
    out = tmp_path / "run"
    args = [f"ckpt_path={tiny_checkpoint}", f"input={inputs}", "batch_size=4", "plots=true"]
    done = predict_in_process(out, *args, "formats=[csv,lenstronomy]")
    assert done.failed == 1 and done.table == out / "predictions.csv"
    assert sorted(p.name for p in out.iterdir()) == ["lenstronomy", "model.json", "plots", "predictions.csv"]
    rows = read_rows(out / "predictions.csv")
    assert [r["status"][:6] for r in rows] == ["ok"] * 6 + ["failed"] + ["ok"] * 6
    assert len(list((out / "plots").iterdir())) == len(list((out / "lenstronomy").iterdir())) == 12


PROGRESS_LINE = re.compile(r"predicting: (\d+)/12 files \(\d+%\), (\d+) images, [\d,]+ images/s, \d+:\d\d:\d\d elapsed")


def test_progress_is_logged_when_stdout_is_not_a_terminal(tiny_checkpoint, tmp_path, monkeypatch, caplog):
    images, _ = simulate(tiny_checkpoint, 1)
    inputs = tmp_path / "cutouts"
    inputs.mkdir()
    for k in range(12):
        write_fits(inputs / f"lens_{k:02d}.fits", images[0, 0].numpy())
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # a pipe or a log file, not a terminal
    monkeypatch.setattr(progress_module, "LOG_EVERY", 0.0)  # a line per batch (10 s apart by default)
    with caplog.at_level(logging.INFO):
        predict_in_process(tmp_path / "run", f"ckpt_path={tiny_checkpoint}", f"input={inputs}", "batch_size=5")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("predicting:")]
    assert len(lines) == 4 and lines[-1].endswith("(done)"), lines
    counts = [tuple(map(int, PROGRESS_LINE.match(line).groups())) for line in lines]
    assert counts == [(5, 5), (10, 10), (12, 12), (12, 12)]  # (files, images) after each batch, then the total
    assert sys.stdout.getvalue() == ""  # no bar drawn into the pipe


def test_progress_lines_keep_a_steady_pace_and_a_terminal_gets_a_bar(monkeypatch, caplog):
    clock = [0.0]
    monkeypatch.setattr(progress_module, "clock", lambda: clock[0])
    logger = logging.getLogger("test.progress")
    with (
        caplog.at_level(logging.INFO, logger="test.progress"),
        progress_module.progress("fitting", total=36, unit="fits", logger=logger, terminal=False) as bar,
    ):
        for _ in range(36):  # one fit a second, reported every 10 s
            clock[0] += 1.0
            bar.advance(1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "fitting: 10/36 fits (28%), 1 fits/s, 0:00:10 elapsed, ~0:00:26 left",
        "fitting: 20/36 fits (56%), 1 fits/s, 0:00:20 elapsed, ~0:00:16 left",
        "fitting: 30/36 fits (83%), 1 fits/s, 0:00:30 elapsed, ~0:00:06 left",
        "fitting: 36/36 fits (100%), 1 fits/s, 0:00:36 elapsed (done)",
    ]
    from rich.console import Console

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=150)
    with progress_module.progress("predicting", 8, "images", "files", terminal=True, console=console) as bar:
        bar.advance(30, completed=4)
        bar._bar.refresh()
    assert "4/8 files" in screen.getvalue() and "30 images" in screen.getvalue() and "images/s" in screen.getvalue()


def test_preparing_in_worker_processes_writes_the_same_table(tiny_checkpoint, tmp_path):
    """``workers=2``: files prepared in two processes (a ``DataLoader``) give the rows of ``workers=1``, in
    input order, failed files and a cube's planes included."""
    images, _ = simulate(tiny_checkpoint, 7, seed=3)
    images = images[:, 0].numpy()
    inputs = tmp_path / "cutouts"
    inputs.mkdir()
    for k in range(5):
        write_fits(inputs / f"lens_{k}.fits", images[k])
    write_fits(inputs / "lens_5_small.fits", images[5][:20, :20])  # fails in its preparation
    fits.PrimaryHDU(images[5:7].astype(np.float32)).writeto(inputs / "lens_6_cube.fits")  # two images
    (inputs / "lens_7_truncated.fits").write_bytes((inputs / "lens_0.fits").read_bytes()[:3000])  # refused
    tables = {}
    for workers in (1, 2):
        out = tmp_path / f"run_{workers}"
        done = predict_in_process(out, f"ckpt_path={tiny_checkpoint}", f"input={inputs}", f"workers={workers}")
        assert (done.files, done.images, done.failed) == (8, 9, 2)
        tables[workers] = (out / "predictions.csv").read_text()
    assert tables[2] == tables[1]
    rows = read_rows(tmp_path / "run_2" / "predictions.csv")
    assert [Path(r["image"]).name for r in rows][-4:] == [
        "lens_5_small.fits",
        "lens_6_cube.fits[0]",
        "lens_6_cube.fits[1]",
        "lens_7_truncated.fits",
    ]
