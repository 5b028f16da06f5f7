"""``lenscnn-predict`` with a multi-band model: a lens read as one multi-extension file (Euclid's
``<BAND>_FLUX``/``_RMS``/``_PSF`` layout) or as one file per band (``input='lens_{VIS,Y,J,H}.fits'``) gives the
in-memory prediction of its bands; each band is rescaled to its own training noise, so the answer does not
depend on any band's unit; a missing band, a pattern for a single-band model, a fixed ``hdu`` and bands cut
around different positions are refused in one line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits

from lenscnn.errors import UserError
from lenscnn.models.checkpoint import read_checkpoint, resolve_checkpoint
from lenscnn.models.ensemble import Ensemble
from lenscnn.preparation.bands import band_pattern, find_band_inputs, hdu_band
from lenscnn.preparation.pipeline import Preparation
from lenscnn.sim import Simulator
from tests.helpers import TINY_TRAIN, celestial_header, run_app

BANDS = ("VIS", "Y", "J", "H")
#: Euclid's names of the bands' HDUs.
EXTENSIONS = ("VIS", "NIR_Y", "NIR_J", "NIR_H")
AS_IS = ["sky=none", "cosmic_rays=false", "units=counts"]


@pytest.fixture(scope="module")
def euclid_checkpoint(tmp_path_factory) -> Path:
    """A tiny four-band model (``instrument=euclid``, 32 x 32 pixels of 0.1")."""
    root = tmp_path_factory.mktemp("euclid_run")
    overrides = ["instrument=euclid", "prior=survey", "colours=survey_euclid", *TINY_TRAIN]
    result = run_app("train", [*overrides, f"hydra.run.dir={root / 'run'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    return resolve_checkpoint(root / "run")


@pytest.fixture(scope="module")
def lenses(euclid_checkpoint) -> torch.Tensor:
    config = read_checkpoint(euclid_checkpoint)["hyper_parameters"]["simulator"]
    simulator = Simulator.from_config({**config, "compile": False})
    images, _ = simulator.sample(3, generator=torch.Generator().manual_seed(3))
    return images


def write_euclid(path: Path, bands: np.ndarray, scales=(1.0, 1.0, 1.0, 1.0), shift: float = 0.0) -> None:
    """One lens as a Euclid cutout: per band ``<BAND>_FLUX`` (times its scale) and ``<BAND>_RMS``; ``shift``
    moves the NISP bands' WCS [pixels]."""
    hdus = [fits.PrimaryHDU()]
    for k, name in enumerate(EXTENSIONS):
        header = celestial_header(0.1, bands.shape[-1])
        if k:
            header["CRPIX1"] += shift
        hdus.append(fits.ImageHDU((bands[k] * scales[k]).astype(np.float32), header=header, name=f"{name}_FLUX"))
        rms = np.full(bands.shape[-2:], 0.01 * scales[k], dtype=np.float32)
        hdus.append(fits.ImageHDU(rms, header=header, name=f"{name}_RMS"))
    fits.HDUList(hdus).writeto(path)


def predict(out: Path, *args: str):
    return run_app("predict", [*args, f"hydra.run.dir={out}"])


def read_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_multi_extension_file_and_one_file_per_band_give_the_in_memory_prediction(
    euclid_checkpoint, lenses, tmp_path
):
    files = tmp_path / "euclid"
    files.mkdir()
    for k in range(2):
        write_euclid(files / f"lens{k}.fits", lenses[k].numpy())
    per_band = tmp_path / "per_band"
    per_band.mkdir()
    for k in range(2):
        for b, band in enumerate(BANDS):
            header = celestial_header(0.1, lenses.shape[-1])
            fits.PrimaryHDU(lenses[k, b].numpy().astype(np.float32), header=header).writeto(
                per_band / f"lens{k}_{band}.fits"
            )
    expected = Ensemble.from_checkpoints([euclid_checkpoint]).predict(lenses[:2])
    for name, spec in (("mef", str(files)), ("pattern", f"'{per_band}/lens*_{{VIS,Y,J,H}}.fits'")):
        result = predict(tmp_path / name, f"ckpt_path={euclid_checkpoint}", f"input={spec}", "noise_hdu=null", *AS_IS)
        assert result.returncode == 0, result.stderr[-2000:]
        rows = read_rows(tmp_path / name / "predictions.csv")
        assert [r["status"] for r in rows] == ["ok", "ok"]
        assert {"flux_scale_Y", "flux_scale_J", "flux_scale_H"} <= set(rows[0])
        for k, row in enumerate(rows):
            assert row["image"].endswith(f"lens{k}.fits" if name == "mef" else f"lens{k}_VIS+Y+J+H.fits")
            for i, target in enumerate(("theta_E", "e1", "e2", "center_x", "center_y")):
                assert float(row[target]) == pytest.approx(float(expected.mean[k, i]), rel=1e-4, abs=1e-5)


def test_each_band_is_rescaled_to_its_own_noise(euclid_checkpoint, lenses, tmp_path):
    """With the default preparation (``units=noise``), VIS in other units and the NISP bands 1000x brighter give
    the same answer, each band's factor to the model's units in its column."""
    answers = []
    for name, scales in (("same", (1.0,) * 4), ("units", (1e-3, 1e3, 1e3, 1e3))):
        path = tmp_path / f"{name}.fits"
        write_euclid(path, lenses[2].numpy(), scales)
        result = predict(tmp_path / name, f"ckpt_path={euclid_checkpoint}", f"input={path}")
        assert result.returncode == 0, result.stderr[-2000:]
        answers.append(read_rows(tmp_path / name / "predictions.csv")[0])
    same, units = answers
    assert float(units["theta_E"]) == pytest.approx(float(same["theta_E"]), rel=1e-4)
    assert float(units["flux_scale"]) == pytest.approx(1e3 * float(same["flux_scale"]), rel=1e-4)
    assert float(units["flux_scale_J"]) == pytest.approx(1e-3 * float(same["flux_scale_J"]), rel=1e-4)


def test_missing_bands_and_misaligned_bands_are_refused_in_one_line(euclid_checkpoint, lenses, tmp_path):
    ckpt = f"ckpt_path={euclid_checkpoint}"
    good, shifted, three = tmp_path / "good.fits", tmp_path / "shifted.fits", tmp_path / "three.fits"
    write_euclid(good, lenses[0].numpy())
    write_euclid(shifted, lenses[0].numpy(), shift=2.0)
    with fits.open(good) as hdul:
        fits.HDUList([h for h in hdul if not h.name.startswith("NIR_J")]).writeto(three)
    result = predict(tmp_path / "run", ckpt, f"input={tmp_path}", *AS_IS)
    assert result.returncode == 1, result.stderr[-2000:]
    rows = {Path(r["image"]).name: r for r in read_rows(tmp_path / "run" / "predictions.csv")}
    assert rows["good.fits"]["status"] == "ok"
    assert "no image HDU for band J of the model's VIS, Y, J, H" in rows["three.fits"]["status"]
    assert 'band Y is centred 0.2" from band VIS' in rows["shifted.fits"]["status"]

    for args, message in (
        ([ckpt, f"input='{tmp_path}/lens_{{VIS,Y}}.fits'"], "the braces name VIS, Y (no J, H)"),
        ([ckpt, f"input={good}", "hdu=VIS_FLUX"], "hdu='VIS_FLUX' names one HDU, but the model reads 4 bands"),
        ([ckpt, f"input={three}"], "no image HDU for band J"),
    ):
        result = predict(tmp_path / "refused", *args)
        assert result.returncode == 2, result.stderr[-2000:]
        assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "refused" / "predictions.csv").exists()


def test_a_single_band_model_refuses_a_band_pattern(tiny_checkpoint, tmp_path):
    result = predict(tmp_path / "run", f"ckpt_path={tiny_checkpoint}", f"input='{tmp_path}/lens_{{g,r,i}}.fits'")
    assert result.returncode == 2
    assert "names bands g, r, i, but the model reads one band" in result.stderr


def test_band_patterns_pair_each_lens_with_its_bands(tmp_path):
    for stem in ("a", "b"):
        for band in ("g", "r", "i"):
            fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(tmp_path / f"{stem}_{band}.fits")
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(tmp_path / "c_g.fits")
    lenses, refused = find_band_inputs(str(tmp_path / "[ab]_{g,r,i}.fits"), ("i", "g"), Preparation())
    assert not refused
    assert [lens.label for lens in lenses] == [str(tmp_path / f"{s}_i+g.fits") for s in ("a", "b")]
    assert lenses[0].files == (tmp_path / "a_i.fits", tmp_path / "a_g.fits")
    with pytest.raises(UserError, match=r"c_g.fits has no file for band r"):
        find_band_inputs(str(tmp_path / "*_{g,r}.fits"), ("g", "r"), Preparation())
    assert band_pattern("lens_{g, r}.fits") == ("lens_{}.fits", ["g", "r"])
    assert band_pattern("lens.fits") is None
    with pytest.raises(UserError, match="distinct band names"):
        band_pattern("lens_{g,g}.fits")
    assert hdu_band("NIR_Y_FLUX", "Y") and hdu_band("vis_flux", "VIS") and hdu_band("F150W_SCI", "F150W")
    assert not hdu_band("NIR_Y_FLUX", "J") and not hdu_band("VISX_FLUX", "VIS")
