"""``lenscnn-refine``: fits FITS images from a predictions.csv in worker processes; a bad image is
reported in its row without losing the others; global bad input is one line; predictions for other
images are refused; only the shards of a refine multirun merge; the fitted lens model is the prior's
(the network's, from predict's model.json, unless prior= names one; an EPL's slope is fitted and
reported); MCMC fills every sigma column; lenstronomy prints nothing."""

from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest
from astropy.io import fits

from lenscnn.cli.refine import run
from lenscnn.errors import UserError
from lenscnn.modelling.kwargs import fitted_model, observation_kwargs
from lenscnn.modelling.lenstronomy_adapter import lenstronomy_image
from lenscnn.modelling.report import read_refined_csv
from lenscnn.sim import Instrument
from tests.helpers import compose_run, load_conf, render_lenstronomy_lens, run_app, run_cli

LENSES = {
    "a": {"theta_E": 1.0, "e1": 0.05, "e2": -0.05, "center_x": 0.02, "center_y": -0.03},
    "b": {"theta_E": 1.4, "e1": -0.08, "e2": 0.04, "center_x": -0.05, "center_y": 0.04},
}
SOURCE = {"amp": 150.0, "R_sersic": 0.2, "n_sersic": 1.2, "e1": 0.0, "e2": 0.1, "center_x": 0.08, "center_y": 0.05}
FAST = [
    "fit.n_particles=12",
    "fit.n_iterations=8",
    "fit.starts=2",
    "fit.final_iterations=4",
    "shear=false",
    "lens_light=false",
    "instrument=quickstart",  # the predictions below are written by hand, without predict's model.json
    "prior=quickstart",
]
#: What lenstronomy prints or logs while fitting (kept out of the output).
LENSTRONOMY_OUTPUT = (
    "Computing the",
    "log likelihood",
    "time used for",
    "MCMC selected",
    "Number of walkers",
    "Burn-in iterations",
    "time taken for MCMC",
    "SerialPool",
    "reduced X^2",
    "=====",
)


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
        fits.PrimaryHDU(image, header=fits.Header({"PIXSCALE": 0.08, "EXPTIME": instrument.exposure_time})).writeto(
            images / f"{name}.fits"
        )
    fits.PrimaryHDU(np.zeros((64, 64), np.float32)).writeto(images / "c_no_scale.fits")
    blank = rng.normal(0.0, 0.01, (64, 64)).astype(np.float32)  # sky noise (exact zeros would be masked)
    fits.PrimaryHDU(blank, header=fits.Header({"PIXSCALE": 0.08})).writeto(images / "d_unpredicted.fits")
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
    assert not [m for m in LENSTRONOMY_OUTPUT if m in result.stdout + result.stderr], result.stdout
    outcomes, names = read_refined_csv(tmp_path / "run" / "refined.csv")
    assert names == ["theta_E", "e1", "e2", "center_x", "center_y"]
    by_name = {o.image.rsplit("/", 1)[-1]: o for o in outcomes}
    assert set(by_name) == {"a.fits", "b.fits", "c_no_scale.fits", "d_unpredicted.fits"}
    for name, lens in LENSES.items():
        outcome = by_name[f"{name}.fits"]
        assert outcome.ok and outcome.reduced_chi2 > 0 and outcome.seconds > 0
        assert abs(outcome.sky) < 0.03 and outcome.starts_agreeing in (1, 2) and outcome.chi2_change >= 0
        assert outcome.network["theta_E"] == pytest.approx(lens["theta_E"] + 0.01)
        assert abs(outcome.fitted["theta_E"] - lens["theta_E"]) < 0.05  # a tiny budget, but started close
        assert (tmp_path / "run" / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "no pixel scale" in by_name["c_no_scale.fits"].status
    assert "no predictions for this image" in by_name["d_unpredicted.fits"].status
    assert sum("failed:" in line for line in result.stderr.splitlines() if "WARNING" in line) == 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "images: 4; fitted: 2; failed: 2" in report and "| theta_E | arcsec |" in report
    assert "converged means: (a) the two best starts agree on theta_E within max(0.01 arcsec" in report


def refine_in_process(out, *args) -> None:
    run(compose_run("refine", out, [*FAST, *args, "workers=1"]))


@pytest.fixture(scope="module")
def sweep(inputs, tmp_path_factory):
    """A real multirun of two shards (shard 1 holds only the two bad images: reported, not an error)."""
    images, predictions = inputs
    sweep = tmp_path_factory.mktemp("sweep") / "multirun"
    args = [f"input={images}", f"predictions={predictions}", "plots=false", "workers=1"]
    result = run_cli("refine", ["-m", *FAST, *args, "shard=0/2,1/2", f"hydra.sweep.dir={sweep}"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not [m for m in LENSTRONOMY_OUTPUT if m in result.stdout], result.stdout
    return sweep


def test_shards_merge_into_one_table(sweep, tmp_path):
    for shard in range(2):
        rows, _ = read_refined_csv(sweep / str(shard) / "refined.csv")
        assert len(rows) == 2
    result = run_app("refine", [f"merge={sweep}", f"hydra.run.dir={tmp_path / 'merge'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes, _ = read_refined_csv(sweep / "refined.csv")
    names = sorted(o.image.rsplit("/", 1)[-1] for o in outcomes)
    assert names == ["a.fits", "b.fits", "c_no_scale.fits", "d_unpredicted.fits"]
    report = (sweep / "report.md").read_text()
    assert "images: 4; fitted: 2" in report and "shards merged: 2 of 2" in report and "(a) the two best" in report
    run(compose_run("refine", tmp_path / "again", [f"merge={sweep}"]))  # merging again: the same rows, none twice
    assert len(read_refined_csv(sweep / "refined.csv")[0]) == 4


def edit_job(sweep, tmp_path, job: str, **changes):
    """A copy of the multirun with ``changes`` to the config of job ``job`` (None: delete its refined.csv)."""
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy)
    config = copy / job / ".hydra" / "config.yaml"
    text = config.read_text()
    for key, value in changes.items():
        if value is None:
            (copy / job / "refined.csv").unlink()
        else:
            text = re.sub(rf"^{key}: .*$", f"{key}: {value}", text, flags=re.M)
    config.write_text(text)
    return copy


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task_name": "predict"}, "1/ is a 'predict' run, not a lenscnn-refine shard"),
        ({"shard": "null"}, "1/ is no shard (shard=None)"),
        ({"shard": "0/2"}, "0/ and 1/ are both shard 0/2"),
        ({"shard": "1/3"}, "1/ is shard 1/3, others are of N=2"),
        ({"input": "elsewhere"}, "the shards fit different inputs"),
        ({"refined": None}, "shard 1/2 (1/) has no refined.csv; rerun it"),
    ],
)
def test_merge_takes_only_the_shards_of_one_refine_multirun(sweep, tmp_path, changes, message):
    copy = edit_job(sweep, tmp_path, "1", **changes)
    with pytest.raises(UserError, match=re.escape(message)) as error:
        run(compose_run("refine", tmp_path / "merge", [f"merge={copy}"]))
    assert "\n" not in str(error.value)


def test_merge_refuses_what_is_not_a_multirun(inputs, tmp_path):
    """Three unrelated runs in one directory used to merge into duplicate rows."""
    images, predictions = inputs
    for k in range(2):
        refine_in_process(tmp_path / "runs" / str(k), f"input={images}", f"predictions={predictions}", "plots=false")
    for directory, message in (
        (tmp_path / "runs", "not a Hydra multirun directory (no multirun.yaml)"),
        (tmp_path / "none", "no such directory"),
    ):
        with pytest.raises(UserError, match=re.escape(message)):
            run(compose_run("refine", tmp_path / "merge", [f"merge={directory}"]))
    assert not (tmp_path / "runs" / "refined.csv").exists()


def test_predictions_of_other_images_are_refused(inputs, tmp_path):
    """Predictions that match none of the images are a one-line error naming the file and an image (exit 2);
    in a shard, images without predictions are failed rows if the predictions match other shards' files."""
    images, predictions = inputs
    other = tmp_path / "other.csv"
    other.write_text(predictions.read_text().replace(str(images), str(tmp_path / "elsewhere")))
    result = refine(tmp_path / "run", f"input={images}", f"predictions={other}")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"predictions={other} match none of the input images (e.g. {images}/a.fits)" in lines[0]
    partial = tmp_path / "partial.csv"
    partial.write_text("\n".join(predictions.read_text().splitlines()[:3]) + "\n")  # a and b only
    refine_in_process(tmp_path / "shard", f"input={images}", f"predictions={partial}", "shard=1/2", "plots=false")
    outcomes, _ = read_refined_csv(tmp_path / "shard" / "refined.csv")
    assert [o.status.split(":")[0] for o in outcomes] == ["failed", "failed"]
    assert "no predictions for this image" in outcomes[1].status


def test_mcmc_fills_every_sigma_column(inputs, tmp_path):
    """With the lens lights on the lens centre (which lenstronomy samples on the first light), a shear and a
    sky level, a small MCMC gives every lens parameter its sigma, the centre included."""
    images, predictions = inputs
    out = tmp_path / "mcmc"
    args = [
        "instrument=quickstart",
        "prior=realistic",
        "lens_light=2",
        "shear=true",
        "fit_sky=true",
        "fit.mcmc_burn=2",
        "fit.mcmc_run=3",
    ]
    args += ["fit.walker_ratio=2", "plots=false", f"input={images}/a.fits", f"predictions={predictions}"]
    run(compose_run("refine", out, [*FAST[:4], *args, "workers=1"]))
    with open(out / "refined.csv", newline="") as f:
        row = next(csv.DictReader(f))
    sigma_columns = [c for c in row if c.endswith("_sigma") and not c.startswith("net_")]
    assert sigma_columns == [f"{n}_sigma" for n in ("theta_E", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2")]
    assert row["status"] == "ok" and all(float(row[c]) > 0 for c in sigma_columns), row
    assert row["fit_sky"] != ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["psf={psf_bare}"], "PIXSCALE"),
        (["shard=2/2"], "shard='2/2'"),
        (["predictions={missing}"], "no predictions.csv there"),
        (["fit.n_particles=0"], "fit.n_particles must be a positive integer"),
        (["fit.starts=0"], "fit.starts must be a positive integer"),
        (["converged.plateau=-1"], "converged.plateau must be a number > 0"),
        (["lens_light=-1"], "lens_light must be true, false or a number of components >= 0"),
        (["fit_sky=maybe"], "fit_sky must be true or false"),
        (["merge={missing}"], "no such directory"),
    ],
)
def test_bad_requests_are_user_errors(inputs, tmp_path, args, message):
    images, predictions = inputs
    fits.PrimaryHDU(np.ones((5, 5))).writeto(tmp_path / "bare.fits")  # a PSF without its pixel scale
    paths = {"psf_bare": tmp_path / "bare.fits", "missing": tmp_path / "none"}
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


def test_a_noise_hdu_gives_the_noise_map(tmp_path):
    """An inverse-variance HDU (noise_hdu=WHT) is the fit's noise: the true weights give the chi^2 of the
    noise the preparation estimates (background from the image, shot noise from exposure_time), weights 4x
    too high give 4x that chi^2."""
    instrument = Instrument.from_config(load_conf("instrument", "quickstart"))
    lens = LENSES["a"]
    image = render_lenstronomy_lens(lens, SOURCE, instrument, np.random.default_rng(6))
    sigma = np.sqrt(instrument.background_rms**2 + np.abs(image) / instrument.exposure_time)
    chi2 = {}
    for name, factor in (("estimated", None), ("true", 1.0), ("high", 4.0)):
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
        noise = ["noise_hdu=null", "exposure_time=1000"] if factor is None else ["noise_hdu=WHT"]
        # the network's whole field (field.reach=null): mostly background, where the weights alone set the chi^2
        refine_in_process(out, f"input={path}", f"predictions={predictions}", "plots=false", "field.reach=null", *noise)
        outcomes, _ = read_refined_csv(out / "refined.csv")
        chi2[name] = outcomes[0].reduced_chi2
    assert chi2["true"] == pytest.approx(chi2["estimated"], rel=0.15), chi2
    assert chi2["high"] == pytest.approx(4 * chi2["true"], rel=0.1), chi2


def test_the_psf_file_is_the_fits_psf_on_the_model_pixels(tmp_path):
    """psf=<FITS kernel with PIXSCALE> (here a Gaussian of the quickstart PSF's FWHM 0.16" at 0.02"/px): the fit
    convolves with it resampled to the model's 0.08" pixels, odd-sided and centred, close to the
    instrument's kernel; psf_fwhm=<arcsec> gives a Gaussian of that width."""
    from lenscnn.cli.refine import fit_configuration
    from lenscnn.preparation.pipeline import Preparation

    scale, sigma = 0.02, 0.16 / (2 * np.sqrt(2 * np.log(2)))
    y, x = (np.mgrid[:84, :84] - 41.5) * scale  # centred on a model pixel: 4 file pixels to one
    fits.PrimaryHDU(np.exp(-(x**2 + y**2) / (2 * sigma**2)), header=fits.Header({"PIXSCALE": scale})).writeto(
        tmp_path / "psf.fits"
    )
    cfg = compose_run("refine", tmp_path / "run", [*FAST, f"psf={tmp_path / 'psf.fits'}"])
    observation = fit_configuration(cfg, Preparation.from_config(cfg)).observation
    kernel = np.asarray(observation["kwargs_psf"]["kernel_point_source"])
    assert kernel.shape[0] % 2 == 1 and kernel.shape[0] == kernel.shape[1] and kernel.sum() == pytest.approx(1.0)
    instrument = np.asarray(
        observation_kwargs(Instrument.from_config(cfg.instrument))["kwargs_psf"]["kernel_point_source"]
    )
    centre, half = kernel.shape[0] // 2, instrument.shape[0] // 2
    assert (
        np.abs(kernel[centre - half : centre + half + 1, centre - half : centre + half + 1] - instrument).max() < 0.02
    )
    cfg = compose_run("refine", tmp_path / "run", [*FAST, "psf_fwhm=0.3"])
    observation = fit_configuration(cfg, Preparation.from_config(cfg)).observation
    wide = np.asarray(observation["kwargs_psf"]["kernel_point_source"])
    assert wide.max() < 0.5 * instrument.max()  # a wider PSF


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
    args = [*FAST[:-1], "plots=false", "workers=1"]
    args += [f"input={path}", f"predictions={predictions}"]
    with pytest.raises(UserError, match=re.escape("the predictions hold ['gamma'], which the lens model")):
        run(compose_run("refine", tmp_path / "sie", [*args, "prior=quickstart"]))
    run(compose_run("refine", tmp_path / "epl", [*args, "prior=epl"]))
    outcomes, names = read_refined_csv(tmp_path / "epl" / "refined.csv")
    assert names == ["theta_E", "gamma", "e1", "e2", "center_x", "center_y"]
    assert outcomes[0].ok and outcomes[0].network["gamma"] == pytest.approx(2.16)
    assert 1.7 < outcomes[0].fitted["gamma"] < 2.6 and abs(outcomes[0].fitted["theta_E"] - lens["theta_E"]) < 0.05


def test_refine_fits_the_lens_model_and_grid_of_the_network_that_made_the_predictions(tiny_checkpoint, tmp_path):
    """lenscnn-predict writes model.json beside predictions.csv; refine with neither instrument= nor prior= fits
    that network's prior on its grid (here the tiny model's quickstart SIE at 0.08"), prior= replaces it, and
    predictions that do not say which model made them are refused until both are given."""
    from lenscnn.cli.predict import predict
    from lenscnn.cli.refine import fit_configuration
    from lenscnn.models.ensemble import Ensemble
    from lenscnn.preparation.pipeline import Preparation

    instrument = Instrument.from_config(load_conf("instrument", "quickstart"))
    image = render_lenstronomy_lens(LENSES["a"], SOURCE, instrument, np.random.default_rng(3)).astype(np.float32)
    path = tmp_path / "a.fits"
    fits.PrimaryHDU(image, header=fits.Header({"PIXSCALE": 0.08})).writeto(path)
    predicted = tmp_path / "predicted"
    predict(compose_run("predict", predicted, [f"ckpt_path={tiny_checkpoint}", f"input={path}", "sky=none"]))
    network = Ensemble.from_checkpoints([tiny_checkpoint])
    record = json.loads((predicted / "model.json").read_text())
    assert record["simulator"]["prior"] == network.simulator_config["prior"]
    assert record["fingerprint"] == network.fingerprint() and record["members"] == [str(tiny_checkpoint)]

    fit = [f"input={path}", f"predictions={predicted}", *FAST[:4], "plots=false", "workers=1"]
    cfg = compose_run("refine", tmp_path / "run", fit)
    configuration = fit_configuration(cfg, Preparation.from_config(cfg))
    assert (
        configuration.model.kwargs_model()
        == fitted_model(network.lens_model, shear=cfg.shear, lens_light=cfg.lens_light).kwargs_model()
    )
    assert configuration.instrument.pixel_scale == network.pixel_scale
    run(cfg)
    outcomes, _ = read_refined_csv(tmp_path / "run" / "refined.csv")
    assert outcomes[0].ok and abs(outcomes[0].fitted["theta_E"] - LENSES["a"]["theta_E"]) < 0.1

    cfg = compose_run("refine", tmp_path / "epl", [*fit, "prior=epl"])
    assert "EPL" in fit_configuration(cfg, Preparation.from_config(cfg)).model.kwargs_model()["lens_model_list"]

    (predicted / "model.json").unlink()  # predictions from before model.json, or written by hand
    with pytest.raises(UserError, match=re.escape("do not say which model made them (no model.json with its")):
        run(compose_run("refine", tmp_path / "unknown", [*fit, "prior=quickstart"]))
    cfg = compose_run("refine", tmp_path / "named", [*fit, "instrument=quickstart", "prior=epl"])
    assert "EPL" in fit_configuration(cfg, Preparation.from_config(cfg)).model.kwargs_model()["lens_model_list"]
