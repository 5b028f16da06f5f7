"""The pretrained ensemble shipped in the package: safe loading, calibration, the default model of
lenscnn-predict, the model card's numbers, and the recipe for Ensai's setting."""

from __future__ import annotations

import csv
import fnmatch
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from hydra.core.global_hydra import GlobalHydra

from lenscnn import pretrained
from lenscnn.cli.inference import load_ensemble
from lenscnn.errors import UserError
from lenscnn.models.checkpoint import file_digest
from lenscnn.models.ensemble import Ensemble
from lenscnn.pretrained.card import (
    BEGIN,
    card_instruments,
    card_metrics,
    card_robustness,
    metrics_block,
    update_card,
)
from lenscnn.sim import Simulator
from tests.helpers import TINY_FAST, compose_config, compose_train, evaluation_summary, run_app

REPO = Path(__file__).parents[2]
TARGETS = ("theta_E", "e1", "e2", "center_x", "center_y")


#: The shipped ensembles: image size [px], pixel scale [arcsec], instrument, theta_E range of the prior [arcsec].
SHIPPED = {
    "euclid": ([64, 64], 0.1, "euclid", (0.5, 2.0)),
    "space": ([80, 80], 0.1, "space", (0.3, 3.0)),
    "survey": ([64, 64], 0.08, "quickstart", (0.5, 2.0)),
}
#: The bands of each shipped ensemble.
BANDS = {"euclid": ("VIS", "Y", "J", "H"), "space": ("image",), "survey": ("image",)}


@pytest.fixture(scope="module")
def shipped() -> Ensemble:
    return pretrained.load()


# -- the shipped files ---------------------------------------------------------------------


def test_the_survey_ensemble_stays_the_default_and_all_are_shipped():
    assert pretrained.DEFAULT == "survey"
    assert pretrained.available() == sorted(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_members_are_small_weights_only_float16_files(name):
    files = pretrained.checkpoints(name)
    assert [f.name for f in files] == ["member_1.pt", "member_2.pt", "member_3.pt", "member_4.pt"]
    assert sum(f.stat().st_size for f in files) < 8e6
    size, scale, instrument, theta_range = SHIPPED[name]
    for f in files:
        checkpoint = torch.load(f, map_location="cpu", weights_only=True)  # no arbitrary objects
        assert set(checkpoint) <= {"hyper_parameters", "state_dict", "calibration"}
        floats = [v for v in checkpoint["state_dict"].values() if v.is_floating_point()]
        assert floats and all(v.dtype == torch.float16 for v in floats)
        hp = checkpoint["hyper_parameters"]
        assert hp["image_size"] == size and hp["pixel_scale"] == pytest.approx(scale)
        assert hp["targets"]["names"] == list(TARGETS)
        assert hp["simulator"]["instrument"]["name"] == instrument
        theta = hp["simulator"]["prior"]["lens"]["theta_E"]
        assert (theta["low"], theta["high"]) == pytest.approx(theta_range)


def test_shipped_files_are_package_data():
    package_data = (REPO / "pyproject.toml").read_text().split("[tool.setuptools.package-data]")[1]
    patterns = re.findall(r'"([^"]+)"', re.search(r"lenscnn = \[(.*?)\]", package_data, re.S).group(1))
    package = Path(pretrained.__file__).parents[1]
    for name in pretrained.available():
        shipped = [*pretrained.checkpoints(name), pretrained.calibration_file(name), pretrained.model_card_file(name)]
        for path in shipped:
            relative = path.relative_to(package).as_posix()
            assert any(fnmatch.fnmatch(relative, p) for p in patterns), f"{relative} is not package data"
    assert (REPO / "MODEL_CARD.md").resolve() == pretrained.model_card_file().resolve()  # the default model's


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_ensemble_loads_calibrated_in_float32(name):
    ensemble = pretrained.load(name)
    record = json.loads(pretrained.calibration_file(name).read_text())
    assert sorted(record["members"]) == sorted(file_digest(f) for f in pretrained.checkpoints(name))
    assert ensemble.target_names == TARGETS
    assert ensemble.sigma_scale.tolist() == pytest.approx([record["sigma_scale"][n] for n in TARGETS])
    assert not torch.allclose(ensemble.sigma_scale, torch.ones(5))
    assert all(p.dtype == torch.float32 for p in ensemble.parameters())
    assert len(ensemble.members) == 4 and ensemble.predicts_uncertainty
    # the survey prior (space's too): two-component lens light, two neighbours and a field star as unlensed light
    assert ensemble.lens_model.kwargs_model() == {
        "lens_model_list": ["SIE", "SHEAR"],
        "source_light_model_list": ["SERSIC_ELLIPSE"],
        "lens_light_model_list": ["SERSIC_ELLIPSE"] * 4 + ["GAUSSIAN"],
    }
    assert ensemble.symmetries() == 8  # calibrated (and so predicting) with test-time averaging
    assert ensemble.bands == pretrained.bands(name) == BANDS[name]
    if name != "euclid":  # the observation's nuisances are single-band
        assert ensemble.simulator_config["observation"]["sky"]["fraction"] == pytest.approx(0.7)


def test_shipped_ensemble_measures_simulated_lenses(shipped):
    simulator = Simulator.from_config(shipped.simulator_config, compile=False)
    images, params = simulator.sample(64, generator=simulator.make_generator(11))
    prediction = shipped.predict(images)
    truth = torch.stack([params[n] for n in TARGETS], -1)
    error = prediction.mean - truth
    assert error[:, 0].abs().median() < 0.05  # theta_E [arcsec]; the prior spans 0.5-2
    inside = (error.abs() <= 1.96 * prediction.sigma).float().mean(0)
    assert (inside > 0.8).all(), inside


def test_predict_picks_the_shipped_ensemble_of_the_inputs_bands(tmp_path):
    """With no model named, a cutout holding Euclid's four bands (or a pattern naming them) gets the Euclid
    ensemble; one band, or other bands, the default."""
    from lenscnn.cli.predict import shipped_for

    image = np.zeros((8, 8), np.float32)
    hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(image, name=f"{b}_FLUX") for b in ("VIS", "NIR_Y", "NIR_J", "NIR_H")]
    fits.HDUList(hdus).writeto(tmp_path / "euclid.fits")
    fits.HDUList(hdus[:3]).writeto(tmp_path / "two_bands.fits")
    fits.PrimaryHDU(image).writeto(tmp_path / "one.fits")
    assert shipped_for("euclid.fits", None, [tmp_path / "euclid.fits"]) == "euclid"
    assert shipped_for("two_bands.fits", None, [tmp_path / "two_bands.fits"]) == pretrained.DEFAULT
    assert shipped_for("one.fits", None, [tmp_path / "one.fits"]) == pretrained.DEFAULT
    assert shipped_for("l_{H,J,Y,VIS}.fits", ("l_{}.fits", ["H", "J", "Y", "VIS"]), []) == "euclid"
    assert shipped_for("l_{g,r,i}.fits", ("l_{}.fits", ["g", "r", "i"]), []) == pretrained.DEFAULT


def test_pretrained_names_are_checked():
    with pytest.raises(UserError, match="no pretrained ensemble 'nonexistent'"):
        pretrained.checkpoints("nonexistent")
    with pytest.raises(UserError, match="not a pretrained ensemble name"):
        pretrained.directory("../conf")


# -- configs and the CLIs --------------------------------------------------------------------


def test_pretrained_config_points_into_the_package_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_config("eval", ["ensemble=pretrained"])
    assert [Path(p) for p in cfg.ensemble.checkpoints] == pretrained.checkpoints()
    assert Path(cfg.ensemble.calibration) == pretrained.calibration_file()


def test_predict_without_a_model_uses_the_shipped_ensemble_but_eval_does_not(tmp_path):
    cfg = compose_config("predict", ["input=x.fits"])
    ensemble, calibration = load_ensemble(cfg, default_pretrained=True)
    assert ensemble.sources == [str(f) for f in pretrained.checkpoints()]
    assert calibration == pretrained.calibration_file()
    with pytest.raises(UserError, match="no model"):
        load_ensemble(compose_config("eval", []))


def test_predict_cli_with_no_checkpoint_measures_a_fits_file(tmp_path):
    simulator = Simulator.from_config(compose_config("train", ["experiment=quickstart"]).data.simulator, compile=False)
    images, params = simulator.sample(6, generator=simulator.make_generator(5))
    header = fits.Header()
    header["PIXSCALE"] = 0.08
    fits.writeto(tmp_path / "lenses.fits", images[:, 0].numpy(), header)
    result = run_app("predict", [f"input={tmp_path / 'lenses.fits'}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "using the shipped pretrained ensemble" in result.stdout + result.stderr
    rows = list(csv.DictReader((tmp_path / "run" / "predictions.csv").open()))
    assert len(rows) == 6
    for row, true_theta in zip(rows, params["theta_E"].tolist(), strict=True):
        theta, sigma = float(row["theta_E"]), float(row["theta_E_sigma"])
        assert 0 < sigma < 0.3
        assert abs(theta - true_theta) < max(0.1, 4 * sigma), (theta, sigma, true_theta)


def test_predict_reads_a_euclid_cutout_with_the_euclid_ensemble(tmp_path):
    """Simulated Euclid lenses written as Euclid's cutouts (``<BAND>_FLUX`` and ``_RMS`` per band, in microjansky-
    like units of another scale per band) through ``lenscnn-predict`` with no model named: the Euclid ensemble
    reads all four bands and measures theta_E."""
    ensemble = pretrained.load("euclid")
    simulator = Simulator.from_config({**ensemble.simulator_config, "compile": False})
    images, params = simulator.sample(4, generator=simulator.make_generator(21))
    rms = [band["noise"]["background_rms"] for band in ensemble.simulator_config["instrument"]["bands"]]
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for k, lens in enumerate(images.numpy()):
        hdus = [fits.PrimaryHDU()]
        for b, name in enumerate(("VIS", "NIR_Y", "NIR_J", "NIR_H")):
            unit = 3.0 * (b + 1)  # another flux unit per band
            header = fits.Header({"PIXSCALE": 0.1})
            hdus.append(fits.ImageHDU((lens[b] * unit).astype(np.float32), header, name=f"{name}_FLUX"))
            hdus.append(fits.ImageHDU(np.full(lens[b].shape, rms[b] * unit, np.float32), header, name=f"{name}_RMS"))
        fits.HDUList(hdus).writeto(folder / f"lens{k}.fits")
    result = run_app("predict", [f"input={folder}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "predicting with the shipped euclid ensemble" in result.stdout + result.stderr
    rows = list(csv.DictReader((tmp_path / "run" / "predictions.csv").open()))
    assert {"flux_scale_Y", "flux_scale_J", "flux_scale_H"} <= set(rows[0])
    for row, truth in zip(rows, params["theta_E"].tolist(), strict=True):
        theta, sigma = float(row["theta_E"]), float(row["theta_E_sigma"])
        assert abs(theta - truth) < max(0.15, 4 * sigma), (theta, sigma, truth)


@pytest.mark.slow  # the default ensemble's card test covers eval reproducing a card; this one is its own card
def test_eval_of_the_euclid_ensemble_reproduces_its_card(tmp_path):
    (table,) = card_metrics(pretrained.model_card("euclid"))
    payload = shipped_eval(tmp_path, [], ensemble="pretrained_euclid")
    assert payload["dataset"] == table["dataset"] and payload["symmetries"] == 8
    for name, values in table["metrics"].items():
        assert payload["metrics"][name]["rmse"] == pytest.approx(values["rmse"], rel=0.01), name
        assert payload["metrics"][name]["coverage_68"] == pytest.approx(values["coverage_68"], abs=0.01), name


CARD_SETS = ["as trained", "realistic", "realistic_galaxies", "realistic_sersic", "quickstart"]


def shipped_eval(tmp_path: Path, choose: list[str], ensemble: str = "pretrained") -> dict:
    """``metrics.json`` of ``lenscnn-eval ensemble=<ensemble>`` (a shipped one) on the test set ``choose`` picks."""
    result = run_app("eval", [f"ensemble={ensemble}", "plots=false", *choose, f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((tmp_path / "metrics.json").read_text())


#: The card's first table (the training distribution) in make test; the other test sets, the same code path at
#: 50 s each, are slow (make test-all).
@pytest.mark.parametrize("k", [0, *(pytest.param(k, marks=pytest.mark.slow) for k in range(1, len(CARD_SETS)))])
def test_eval_of_the_shipped_ensemble_reproduces_the_model_card(tmp_path, k):
    """Every table of the card (the training distribution, the clean named test sets) is what lenscnn-eval measures."""
    tables = card_metrics(pretrained.model_card())
    priors = [re.search(r"prior ([\w ]+)[,)]", table["dataset"]).group(1) for table in tables]
    assert priors == CARD_SETS
    table, prior = tables[k], priors[k]
    assert set(table["metrics"]) == set(TARGETS)
    payload = shipped_eval(tmp_path, [] if prior == "as trained" else [f"prior={prior}", "observation=none"])
    assert payload["n"] == 2048 and payload["dataset"] == table["dataset"] and payload["symmetries"] == 8
    assert payload["nrmse"] == pytest.approx(table["nrmse"], rel=0.01)
    for name, values in table["metrics"].items():
        measured = {
            **payload["metrics"][name],
            "sigma_scale": payload["sigma_scale"][name],
            "sigma_power": payload["sigma_power"][name],
        }
        for key, value in values.items():
            if key == "bias":  # near zero: within 1% of the RMSE
                assert measured[key] == pytest.approx(value, abs=0.01 * values["rmse"]), (prior, name, key)
            elif key == "outlier_fraction":  # a count of a few dozen lenses: within 1% of the lenses
                assert measured[key] == pytest.approx(value, abs=0.01), (prior, name, key)
            else:
                assert measured[key] == pytest.approx(value, rel=0.01), (prior, name, key)


def test_the_space_card_says_where_it_is_less_accurate_than_the_survey_card():
    """The clean test sets both cards report (the same lens priors, theta_E 0.5-2", each on its own model's
    grid): the space ensemble's RMSE is 1.2-2.3x the survey ensemble's, which is why it is not the default."""

    def clean_sets(name: str) -> dict[str, dict]:
        tables = card_metrics(pretrained.model_card(name))
        return {re.search(r"prior (\w+)", t["dataset"]).group(1): t["metrics"] for t in tables[1:]}

    space, survey = clean_sets("space"), clean_sets("survey")
    assert list(space) == list(survey) == CARD_SETS[1:]
    ratios = [space[s][n]["rmse"] / survey[s][n]["rmse"] for s in survey for n in TARGETS]
    assert min(ratios) > 1.0 and max(ratios) < 2.4, ratios


@pytest.mark.slow  # the table's generation: test_model_card_block_is_generated_and_read_back; eval = card: above
def test_model_card_instrument_rows_are_what_eval_measures(tmp_path):
    """The instrument table lists HST, JWST short and long wavelength and Euclid; one row re-measured agrees."""
    rows = card_instruments(pretrained.model_card("space"))
    assert list(rows) == ["space_hst", "space_jwst_sw", "space_jwst_lw", "space_euclid"]
    payload = shipped_eval(tmp_path, ["observation=space_euclid"], ensemble="pretrained_space")
    theta = payload["metrics"]["theta_E"]
    assert theta["rmse"] == pytest.approx(rows["space_euclid"]["theta_E RMSE"], rel=0.01)
    assert theta["coverage_68"] == pytest.approx(rows["space_euclid"]["theta_E 68%"], abs=0.005)


@pytest.mark.slow  # the table's generation: test_model_card_block_is_generated_and_read_back; eval = card: above
def test_model_card_robustness_rows_are_what_eval_measures(tmp_path):
    """The robustness table lists every nuisance alone; one row (a residual sky) re-measured agrees."""
    rows = card_robustness(pretrained.model_card())
    assert list(rows) == [
        "clean",
        "pedestal_plus",
        "pedestal_minus",
        "moffat_narrow",
        "moffat_wide",
        "noise_x3",
        "cosmic_rays",
        "realistic_neighbour",
    ]
    payload = shipped_eval(tmp_path, ["prior=realistic", "observation=pedestal_plus"])
    theta = payload["metrics"]["theta_E"]
    assert theta["rmse"] == pytest.approx(rows["pedestal_plus"]["theta_E RMSE"], rel=0.01)
    assert theta["coverage_68"] == pytest.approx(rows["pedestal_plus"]["theta_E 68%"], abs=0.005)


def test_model_card_block_is_generated_and_read_back(tmp_path):
    payload = {
        "dataset": "simulated test set (4 lenses, instrument quickstart, prior as trained)",
        "n": 4,
        "mc_samples": 0,
        "nrmse": 0.123456,
        "sigma_scale": {"theta_E": 1.25, "e1": 0.9},
        "sigma_power": {"theta_E": 1.5, "e1": 1.0},
        "metrics": {
            "theta_E": {"rmse": 0.05, "mae": 0.04, "bias": -0.001, "coverage_68": 0.7, "coverage_95": 0.94},
            "e1": {"rmse": 0.02, "mae": 0.015, "bias": 0.0002},
        },
        "comparison": {"members": {"1: a": 0.2, "2: b": 0.21}, "ensemble": 0.18, "improvement_over_best": 0.1},
    }
    other = {
        "dataset": "simulated test set (4 lenses, instrument quickstart, prior realistic_galaxies)",
        "mc_samples": 0,
        "nrmse": 0.5,
        "metrics": {"theta_E": {"rmse": 0.08}},
    }
    payload, other = evaluation_summary(**payload), evaluation_summary(**other)
    card = tmp_path / "card.md"
    card.write_text(f"# card\n\nbefore\n\n{BEGIN}\nold\n<!-- END generated metrics -->\n\nafter\n")
    update_card(card, payload, other)
    text = card.read_text()
    assert text.startswith("# card\n\nbefore\n\n") and text.endswith("\n\nafter\n") and "old" not in text
    read, read_other = card_metrics(text)
    assert read["dataset"] == payload.dataset and read_other["dataset"] == other.dataset
    assert read["nrmse"] == pytest.approx(0.1235) and read_other["nrmse"] == pytest.approx(0.5)
    assert read["metrics"]["theta_E"] == pytest.approx(
        {
            "rmse": 0.05,
            "mae": 0.04,
            "bias": -0.001,
            "coverage_68": 0.7,
            "coverage_95": 0.94,
            "sigma_scale": 1.25,
            "sigma_power": 1.5,
        }
    )
    assert read["metrics"]["e1"] == pytest.approx(
        {"rmse": 0.02, "mae": 0.015, "bias": 0.0002, "sigma_scale": 0.9, "sigma_power": 1.0}
    )
    assert read_other["metrics"] == {"theta_E": {"rmse": 0.08}}
    assert "10.0% below" in metrics_block(payload)
    # the robustness table: the same lenses with one nuisance each, as ratios to the clean set
    clean = {
        "dataset": "simulated test set (4 lenses, instrument quickstart, prior realistic, observation none)",
        "n": 4,
        "metrics": {
            n: {"rmse": r, "coverage_68": 0.68, "coverage_95": 0.95}
            for n, r in zip(TARGETS, (0.02, 0.04, 0.04, 0.01, 0.03), strict=True)
        },
    }
    sky = {
        "dataset": "simulated test set (4 lenses, instrument quickstart, prior realistic, observation pedestal_plus)",
        "metrics": {n: {**v, "rmse": 2 * v["rmse"], "coverage_68": 0.5} for n, v in clean["metrics"].items()},
    }
    neighbour = {
        **clean,
        "dataset": "simulated test set (4 lenses, instrument quickstart, prior realistic_neighbour, observation none)",
    }
    robustness = [evaluation_summary(**s) for s in (clean, sky, neighbour)]
    update_card(card, payload, other, robustness=robustness)
    rows = card_robustness(card.read_text())
    assert list(rows) == ["clean", "pedestal_plus", "realistic_neighbour"]
    assert rows["clean"] == pytest.approx(
        {
            "theta_E RMSE": 0.02,
            "/ clean": 1,
            "theta_E 68%": 0.68,
            "theta_E 95%": 0.95,
            "e RMSE / clean": 1,
            "centre RMSE / clean": 1,
        }
    )
    assert rows["pedestal_plus"]["/ clean"] == pytest.approx(2) and rows["pedestal_plus"]["theta_E 68%"] == 0.5
    assert rows["pedestal_plus"]["e RMSE / clean"] == pytest.approx(2)
    assert len(card_metrics(card.read_text())) == 2  # the robustness table is not read as a test set
    # the instrument table: the same lenses through each instrument's observation, absolute values
    hst = {**clean, "metrics": sky["metrics"], "dataset": sky["dataset"].replace("pedestal_plus", "space_hst")}
    euclid = {**clean, "dataset": clean["dataset"].replace("observation none", "observation space_euclid")}
    instruments = [evaluation_summary(**s) for s in (hst, euclid)]
    update_card(card, payload, other, robustness=robustness, instruments=instruments)
    text = card.read_text()
    lenses = "4 test lenses of simulated test set (4 lenses, instrument quickstart, prior realistic)"
    assert f"Per instrument: {lenses}" in text
    rows = card_instruments(text)
    assert list(rows) == ["space_hst", "space_euclid"]
    assert rows["space_hst"]["theta_E RMSE"] == pytest.approx(0.04) and rows["space_hst"]["theta_E 68%"] == 0.5
    assert rows["space_euclid"]["e RMSE"] == pytest.approx(0.04) and rows["space_euclid"]["e 68%"] == 0.68
    assert rows["space_euclid"]["centre RMSE"] == pytest.approx(0.02)
    assert list(card_robustness(text)) == ["clean", "pedestal_plus", "realistic_neighbour"]
    assert len(card_metrics(text)) == 2
    with pytest.raises(UserError, match="no generated block"):
        (tmp_path / "bare.md").write_text("# nothing\n")
        update_card(tmp_path / "bare.md", payload)


# -- the same recipe for Ensai's setting (GPU) -----------------------------------------------


def test_hst_ensai_ensemble_experiment_is_ensais_setting_and_budget():
    cfg = compose_config("train", ["experiment=hst_ensai_ensemble"])
    assert cfg.instrument.name == "hst_ensai" and cfg.instrument.image_size == 192
    assert cfg.model.net.name == "ensai" and cfg.model.net.dropout == pytest.approx(0.1)
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.deterministic == "warn"
    images = cfg.data.batch_size * cfg.data.batches_per_epoch * cfg.trainer.max_epochs
    assert images == pytest.approx(5e7, rel=0.01)  # Ensai's ~1e6 lenses x 50 epochs
    assert cfg.hydra.sweeper.params.seed == "1,2,3,4"
    assert cfg.hydra.sweep.dir.endswith("ensemble/hst_ensai")
    members = compose_config("eval", ["ensemble=hst_ensai"]).ensemble.checkpoints
    assert [Path(m).name for m in members] == [f"member_{k}" for k in range(1, 5)]


def test_hst_ensai_ensemble_experiment_runs_on_cpu(tmp_path):
    from hydra.core.hydra_config import HydraConfig

    from lenscnn.cli.train import train

    overrides = ["experiment=hst_ensai_ensemble", "trainer=cpu", "debug=fdr", *TINY_FAST, "model.net.width=0.25"]
    cfg = compose_train(tmp_path, overrides)
    HydraConfig.instance().set_config(cfg)
    try:
        summary = train(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert cfg.trainer.accelerator == "cpu"
    assert all(math.isfinite(v) for v in summary.test.values())
    assert np.isfinite(summary.rmse_ratio["theta_E"])
