"""``lenscnn-predict``: FITS with a WCS in, the in-memory prediction out; bad input refused cleanly."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.wcs import WCS

from lenscnn.models.checkpoint import read_checkpoint
from lenscnn.models.ensemble import Ensemble
from lenscnn.sim import Simulator
from tests.helpers import celestial_header, run_cli

NAMES = ("theta_E", "e1", "e2", "center_x", "center_y")


def simulate(checkpoint, n: int, seed: int = 7) -> tuple[torch.Tensor, dict]:
    config = read_checkpoint(checkpoint)["hyper_parameters"]["simulator"]
    return Simulator.from_config({**config, "compile": False}).sample(n, generator=torch.Generator().manual_seed(seed))


def write_fits(path, image: np.ndarray, scale: float = 0.08) -> None:
    fits.PrimaryHDU(image.astype(np.float32), header=celestial_header(scale, image.shape[-1])).writeto(path)


def predict(out, *args):
    return run_cli("predict", [*args, f"hydra.run.dir={out}"])


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
    result = predict(out, f"ckpt_path={tiny_checkpoint}", f"input={inputs}", "plots=true", "formats=[csv,lenstronomy]")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_rows(out / "predictions.csv")
    assert [r["image"].rsplit("/", 1)[-1] for r in rows] == ["lens0.fits", "lens1.fits", "lens2_large.fits"]

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

    sim = run_cli("simulate", ["n=5", "instrument.image_size=32", "preview=0", f"hydra.run.dir={tmp_path / 'sim'}"])
    assert sim.returncode == 0, sim.stderr[-2000:]
    h5 = tmp_path / "h5"
    assert predict(h5, f"ckpt_path={tiny_checkpoint}", f"input={tmp_path / 'sim' / 'lenses.h5'}").returncode == 0
    assert [r["image"].rsplit("/", 1)[-1] for r in read_rows(h5 / "predictions.csv")] == [
        f"lenses.h5[{k}]" for k in range(5)
    ]


BAD_INPUTS = {
    "wrong pixel scale": ("scale", "differs from the model's"),
    "too small": ("small", "smaller than the model's"),
    "NaN pixels": ("nan", "set fill_nan="),
    "not an image": ("table", "holds no image"),
    "missing file": ("missing", "no such file or directory"),
    "corrupted checkpoint": ("corrupt", "not a readable PyTorch checkpoint"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_prediction_input_is_one_line_and_writes_nothing(tiny_checkpoint, tmp_path, case):
    kind, message = BAD_INPUTS[case]
    images, _ = simulate(tiny_checkpoint, 1)
    image = images[0, 0].numpy()
    inputs = tmp_path / "cutouts"
    inputs.mkdir()
    write_fits(inputs / "a_good.fits", image)  # a good file first: its row must not survive either
    bad = inputs / "b_bad.fits"
    checkpoint = tiny_checkpoint
    if kind == "scale":
        write_fits(bad, image, scale=0.1)
    elif kind == "small":
        write_fits(bad, image[:20, :20])
    elif kind == "nan":
        image = image.copy()
        image[5, 5] = np.nan
        write_fits(bad, image)
    elif kind == "table":
        table = fits.BinTableHDU.from_columns([fits.Column("a", "D", array=[1.0])])
        fits.HDUList([fits.PrimaryHDU(), table]).writeto(bad)  # a catalogue, no image
    elif kind == "corrupt":
        checkpoint = tmp_path / "corrupt.ckpt"
        checkpoint.write_bytes(tiny_checkpoint.read_bytes()[:3000])
    out = tmp_path / "run"
    target = inputs / "missing.fits" if kind == "missing" else inputs
    result = predict(out, f"ckpt_path={checkpoint}", f"input={target}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (out / "predictions.csv").exists()
    assert not list(out.glob("*.partial"))
