"""``lenscnn-refine``: fits FITS images from a predictions.csv in worker processes; a bad image is
reported in its row without losing the others; global bad input is one line; shards merge; the fitted
lens model is the prior's (an EPL's slope is fitted and reported)."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from astropy.io import fits

from lenscnn.cli.refine import run
from lenscnn.errors import UserError
from lenscnn.fit.kwargs import observation_kwargs
from lenscnn.fit.refine import lenstronomy_image
from lenscnn.fit.report import read_refined_csv
from lenscnn.sim import Instrument
from tests.helpers import compose_run, load_conf, render_lenstronomy_lens, run_cli

LENSES = {
    "a": {"theta_E": 1.0, "e1": 0.05, "e2": -0.05, "center_x": 0.02, "center_y": -0.03},
    "b": {"theta_E": 1.4, "e1": -0.08, "e2": 0.04, "center_x": -0.05, "center_y": 0.04},
}
SOURCE = {"amp": 150.0, "R_sersic": 0.2, "n_sersic": 1.2, "e1": 0.0, "e2": 0.1, "center_x": 0.08, "center_y": 0.05}
FAST = ["fit.n_particles=12", "fit.n_iterations=8", "shear=false", "lens_light=false", "prior=quickstart"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two good lenses, one without a pixel scale, one without predictions; and their predictions.csv."""
    root = tmp_path_factory.mktemp("refine")
    images = root / "images"
    images.mkdir()
    instrument = Instrument.from_config(load_conf("instrument", "quickstart"))
    rng = np.random.default_rng(11)
    for name, lens in LENSES.items():
        image = render_lenstronomy_lens(lens, SOURCE, instrument, rng).astype(np.float32)
        fits.PrimaryHDU(image, header=fits.Header({"PIXSCALE": 0.08})).writeto(images / f"{name}.fits")
    fits.PrimaryHDU(np.zeros((64, 64), np.float32)).writeto(images / "c_no_scale.fits")
    fits.PrimaryHDU(np.zeros((64, 64), np.float32), header=fits.Header({"PIXSCALE": 0.08})).writeto(
        images / "d_unpredicted.fits"
    )
    predictions = root / "predictions.csv"
    with open(predictions, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *(k for n in LENSES["a"] for k in (n, f"{n}_sigma")), "center_col"])
        for name in ("a", "b", "c_no_scale"):
            lens = LENSES.get(name, LENSES["a"])
            writer.writerow([str(images / f"{name}.fits"), *(v for x in lens.values() for v in (x + 0.01, 0.02)), ""])
    return images, predictions


def refine(out, *args):
    return run_cli("refine", [*FAST, *args, f"hydra.run.dir={out}"], timeout=300)


def test_refine_fits_every_good_image_and_reports_the_bad_ones_in_their_rows(inputs, tmp_path):
    images, predictions = inputs
    result = refine(tmp_path / "run", f"input={images}", f"predictions={predictions}", "workers=2")
    assert result.returncode == 0, result.stderr[-3000:]
    rows, names = read_refined_csv(tmp_path / "run" / "refined.csv")
    assert names == ["theta_E", "e1", "e2", "center_x", "center_y"]
    by_name = {r["image"].rsplit("/", 1)[-1]: r for r in rows}
    assert set(by_name) == {"a.fits", "b.fits", "c_no_scale.fits", "d_unpredicted.fits"}
    for name, lens in LENSES.items():
        row = by_name[f"{name}.fits"]
        assert row["status"] == "ok" and row["reduced_chi2"] > 0 and row["seconds"] > 0
        assert row["net_theta_E"] == pytest.approx(lens["theta_E"] + 0.01)
        assert abs(row["theta_E"] - lens["theta_E"]) < 0.05  # a tiny budget, but started close
        assert (tmp_path / "run" / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "no pixel scale" in by_name["c_no_scale.fits"]["status"]
    assert "no predictions for this image" in by_name["d_unpredicted.fits"]["status"]
    assert sum("failed:" in line for line in result.stderr.splitlines() if "WARNING" in line) == 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "images: 4; fitted: 2; failed: 2" in report and "| theta_E | arcsec |" in report


def refine_in_process(out, *args) -> None:
    run(compose_run("refine", out, [*FAST, *args, "workers=1"]))


def test_shards_merge_into_one_table(inputs, tmp_path):
    images, predictions = inputs
    sweep = tmp_path / "sweep"
    for shard in range(2):  # shard 1 holds only the two bad images: reported, not an error
        refine_in_process(sweep / str(shard), f"input={images}", f"predictions={predictions}", f"shard={shard}/2")
        rows, _ = read_refined_csv(sweep / str(shard) / "refined.csv")
        assert len(rows) == 2
    result = run_cli("refine", [f"merge={sweep}", f"hydra.run.dir={tmp_path / 'merge'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    rows, _ = read_refined_csv(sweep / "refined.csv")
    names = sorted(r["image"].rsplit("/", 1)[-1] for r in rows)
    assert names == ["a.fits", "b.fits", "c_no_scale.fits", "d_unpredicted.fits"]
    assert "images: 4; fitted: 2" in (sweep / "report.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["psf={psf_even}"], "must have odd sides"),
        (["psf={psf_big}"], "is larger than the 64x64 images"),
        (["shard=2/2"], "shard='2/2'"),
        (["predictions={missing}"], "no predictions.csv there"),
        (["fit.n_particles=0"], "fit.n_particles must be a positive integer"),
        (["merge={missing}"], "no */refined.csv below it"),
    ],
)
def test_bad_requests_are_user_errors(inputs, tmp_path, args, message):
    images, predictions = inputs
    fits.PrimaryHDU(np.ones((4, 4))).writeto(tmp_path / "even.fits")
    fits.PrimaryHDU(np.ones((65, 65))).writeto(tmp_path / "big.fits")
    paths = {"psf_even": tmp_path / "even.fits", "psf_big": tmp_path / "big.fits", "missing": tmp_path / "none"}
    with pytest.raises(UserError, match=re.escape(message)) as error:
        refine_in_process(
            tmp_path / "run", f"input={images}", f"predictions={predictions}", *(a.format(**paths) for a in args)
        )
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run" / "refined.csv").exists()


def test_a_bad_request_exits_2_with_one_line(inputs, tmp_path):
    images, predictions = inputs
    result = refine(tmp_path / "run", f"input={images}", f"predictions={predictions}", "shard=5")
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "error: shard=5: give i/N with 0 <= i < N, e.g. shard=0/4"
    ]


def test_weight_hdu_gives_the_noise_map(tmp_path):
    """An inverse-variance HDU replaces the instrument's noise: the true weights give the chi^2 of the
    instrument's (true) noise model, weights 4x too high give 4x that chi^2."""
    instrument = Instrument.from_config(load_conf("instrument", "quickstart"))
    lens = LENSES["a"]
    image = render_lenstronomy_lens(lens, SOURCE, instrument, np.random.default_rng(6))
    sigma = np.sqrt(instrument.background_rms**2 + np.abs(image) / instrument.exposure_time)
    chi2 = {}
    for name, factor in (("instrument", None), ("true", 1.0), ("high", 4.0)):
        path = tmp_path / f"{name}.fits"
        hdus = [fits.PrimaryHDU(image.astype(np.float32), header=fits.Header({"PIXSCALE": 0.08}))]
        if factor is not None:
            hdus.append(fits.ImageHDU((factor / sigma**2).astype(np.float32), name="WHT"))
        fits.HDUList(hdus).writeto(path)
        predictions = tmp_path / f"{name}.csv"
        predictions.write_text(
            "image," + ",".join(lens) + "\n" + f"{path}," + ",".join(str(v) for v in lens.values()) + "\n"
        )
        out = tmp_path / name
        weights = [] if factor is None else ["weight_hdu=WHT"]
        refine_in_process(out, f"input={path}", f"predictions={predictions}", "plots=false", *weights)
        rows, _ = read_refined_csv(out / "refined.csv")
        chi2[name] = rows[0]["reduced_chi2"]
    assert chi2["true"] == pytest.approx(chi2["instrument"], rel=0.15), chi2  # model- vs data-based shot noise
    assert chi2["high"] == pytest.approx(4 * chi2["true"], rel=0.1), chi2


def test_refine_fits_an_epl_when_the_network_predicts_gamma(tmp_path):
    """Predictions with an EPL slope: refused with an SIE prior (the fit would drop gamma), fitted with
    prior=epl, whose gamma joins the table beside the network's."""
    instrument = Instrument.from_config(load_conf("instrument", "quickstart"))
    lens = {**LENSES["a"], "gamma": 2.15}
    setup = {
        **observation_kwargs(instrument),
        "kwargs_model": {"lens_model_list": ["EPL"], "source_light_model_list": ["SERSIC_ELLIPSE"]},
    }
    image = lenstronomy_image(setup, {"kwargs_lens": [lens], "kwargs_source": [SOURCE]})
    path = tmp_path / "epl.fits"
    fits.PrimaryHDU(image.astype(np.float32), header=fits.Header({"PIXSCALE": 0.08})).writeto(path)
    predictions = tmp_path / "predictions.csv"
    predicted = {k: v + 0.01 for k, v in lens.items()}
    predictions.write_text(
        "image," + ",".join(f"{k},{k}_sigma" for k in predicted) + "\n"
        f"{path}," + ",".join(f"{v},0.02" for v in predicted.values()) + "\n"
    )
    args = ["fit.n_particles=12", "fit.n_iterations=8", "shear=false", "lens_light=false", "plots=false", "workers=1"]
    args += [f"input={path}", f"predictions={predictions}"]
    with pytest.raises(UserError, match=re.escape("the predictions hold ['gamma'], which the lens model")):
        run(compose_run("refine", tmp_path / "sie", [*args, "prior=quickstart"]))
    run(compose_run("refine", tmp_path / "epl", [*args, "prior=epl"]))
    rows, names = read_refined_csv(tmp_path / "epl" / "refined.csv")
    assert names == ["theta_E", "gamma", "e1", "e2", "center_x", "center_y"]
    assert rows[0]["status"] == "ok" and rows[0]["net_gamma"] == pytest.approx(2.16)
    assert 1.7 < rows[0]["gamma"] < 2.6 and abs(rows[0]["theta_E"] - lens["theta_E"]) < 0.05
