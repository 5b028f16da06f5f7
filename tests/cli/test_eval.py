"""``lenscnn-eval``: every output file, consistent numbers, calibration, ensembles, refusals."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch
from scipy import stats

import lenscnn.cli.eval as eval_app
from lenscnn.cli.inference import load_ensemble
from lenscnn.errors import UserError
from lenscnn.models.checkpoint import read_checkpoint
from tests.helpers import compose_config, compose_run, perturbed_copy, run_app

NAMES = ("theta_E", "e1", "e2", "center_x", "center_y")


def evaluate(out, *args):
    result = run_app("eval", [*args, f"hydra.run.dir={out}", "batch_size=128"])
    return result


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def overconfident_copy(src, dst, factor: float = 0.25) -> None:
    """The model with every predicted sigma multiplied by ``factor`` (log-sigma output bias shifted)."""
    checkpoint = read_checkpoint(src)
    state = checkpoint["state_dict"]
    last_bias = [k for k, v in state.items() if k.endswith("bias") and v.shape == (2 * len(NAMES),)][-1]
    state[last_bias] = state[last_bias].clone()
    state[last_bias][len(NAMES) :] += np.log(factor)
    torch.save(checkpoint, dst)


def test_eval_writes_every_output_with_consistent_numbers(tiny_checkpoint, tmp_path):
    out = tmp_path / "eval"
    result = evaluate(out, f"ckpt_path={tiny_checkpoint}", "test_size=300", "logger=tensorboard")
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads((out / "metrics.json").read_text())
    rows = read_csv(out / "predictions.csv")
    assert payload["n"] == len(rows) == 300
    assert payload["dataset"].startswith("simulated test set (300 lenses")
    for name in NAMES:
        truth = np.array([float(r[f"{name}_true"]) for r in rows])
        pred = np.array([float(r[name]) for r in rows])
        sigma = np.array([float(r[f"{name}_sigma"]) for r in rows])
        m = payload["metrics"][name]
        assert m["rmse"] == pytest.approx(np.sqrt(np.mean((pred - truth) ** 2)), rel=1e-5)
        assert m["bias"] == pytest.approx(np.mean(pred - truth), rel=1e-4, abs=1e-7)
        assert m["coverage_68"] == pytest.approx(
            np.mean(np.abs(pred - truth) <= stats.norm.ppf(0.84) * sigma), abs=0.01
        )
        assert m["nll"] == pytest.approx(-stats.norm.logpdf(pred - truth, scale=sigma).mean(), rel=1e-3)
    table = {r["target"]: r for r in read_csv(out / "metrics.csv")}
    assert list(table) == list(NAMES)
    for name in NAMES:
        for metric, value in payload["metrics"][name].items():
            assert float(table[name][metric]) == pytest.approx(value, rel=1e-5, abs=1e-9)
    assert table["theta_E"]["unit"] == "arcsec" and table["e1"]["unit"] == ""
    for plot in ("predicted_vs_true", "residuals", "calibration"):
        png = out / "plots" / f"{plot}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "| theta_E | arcsec |" in report and "![calibration](plots/calibration.png)" in report
    assert f"{payload['nrmse']:.4f}" in report

    # the same figures and the metrics went to the configured logger (TensorBoard)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(out.glob("tensorboard/**/events.out.tfevents.*")).parent))
    events.Reload()
    assert {"eval/predicted_vs_true", "eval/residuals", "eval/calibration"} <= set(events.Tags()["images"])
    logged = events.Scalars("eval/rmse/theta_E")[0].value
    assert logged == pytest.approx(payload["metrics"]["theta_E"]["rmse"], rel=1e-5)


def test_calibration_fixes_an_overconfident_model_and_is_stored(tiny_checkpoint, tmp_path):
    overconfident = tmp_path / "overconfident.ckpt"
    overconfident_copy(tiny_checkpoint, overconfident)
    out = tmp_path / "calibrate"
    result = evaluate(out, f"ckpt_path={overconfident}", "calibrate=true", "test_size=1500", "val_size=1500")
    assert result.returncode == 0, result.stderr[-2000:]
    calibration = json.loads((out / "metrics.json").read_text())["calibration"]
    for name in NAMES:
        before, after = calibration["coverage_before"][name], calibration["coverage_after"][name]
        assert before["coverage_68"] < 0.45 and before["coverage_95"] < 0.75  # deliberately over-confident
        for level, nominal in (("coverage_68", 0.68), ("coverage_95", 0.95)):
            assert abs(after[level] - nominal) < abs(before[level] - nominal) / 5
        assert calibration["sigma_scale"][name] > 2.5
    # the barely trained model's residuals are Gaussian-like only for the ellipticities (a uniform prior
    # bounds the others, so no single scale hits 68% and 95% at once); there both land within 3 points
    for name in ("e1", "e2"):
        after = calibration["coverage_after"][name]
        assert abs(after["coverage_68"] - 0.68) < 0.03 and abs(after["coverage_95"] - 0.95) < 0.03
    stored = read_checkpoint(overconfident)["calibration"]
    for key in ("sigma_scale", "sigma_power", "sigma_pivot"):
        assert stored[key] == calibration[key] and set(stored[key]) == set(NAMES)
    assert "calibrate=true" in (out / ".hydra" / "overrides.yaml").read_text()

    # a later evaluation applies the stored scale: coverage as after calibration
    again = tmp_path / "again"
    assert evaluate(again, f"ckpt_path={overconfident}", "test_size=1500").returncode == 0
    metrics = json.loads((again / "metrics.json").read_text())["metrics"]
    for name in NAMES:
        assert metrics[name]["coverage_68"] == pytest.approx(calibration["coverage_after"][name]["coverage_68"])
        assert metrics[name]["coverage_95"] == pytest.approx(calibration["coverage_after"][name]["coverage_95"])


def test_ensemble_eval_compares_members_and_keeps_its_calibration(tiny_checkpoint, tmp_path):
    members = tmp_path / "members"
    members.mkdir()
    a, b = members / "a.ckpt", members / "b.ckpt"
    a.write_bytes(tiny_checkpoint.read_bytes())
    perturbed_copy(tiny_checkpoint, b, 1.02)
    out = tmp_path / "ens"
    spec = f"ensemble.checkpoints=[{a},{b}]"
    result = evaluate(out, spec, "compare_members=true", "calibrate=true", "test_size=200", "val_size=200")
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads((out / "metrics.json").read_text())
    comparison = payload["comparison"]
    assert len(comparison["members"]) == 2
    assert comparison["improvement_over_best"] == pytest.approx(
        1 - comparison["ensemble"] / min(comparison["members"].values())
    )
    assert payload["nrmse"] == pytest.approx(comparison["ensemble"])
    lines = (out / "comparison.csv").read_text().splitlines()
    assert lines[0] == "model,nrmse" and lines[-1].startswith("ensemble,") and len(lines) == 4
    assert "its best member's (" in (out / "report.md").read_text()
    record = json.loads((members / "calibration.json").read_text())
    assert record["sigma_scale"] == payload["calibration"]["sigma_scale"] and len(record["members"]) == 2

    # the stored calibration is used next time, and refused once a member has changed
    again = tmp_path / "again"
    assert evaluate(again, spec, "test_size=200").returncode == 0
    assert json.loads((again / "metrics.json").read_text())["sigma_scale"] == pytest.approx(record["sigma_scale"])
    perturbed_copy(tiny_checkpoint, b, 1.03)
    changed = evaluate(tmp_path / "changed", spec, "test_size=200")
    assert changed.returncode != 0
    assert changed.stderr.strip().splitlines()[-1].endswith("re-run lenscnn-eval with calibrate=true")


def test_eval_on_a_simulated_file_and_on_another_prior(tiny_checkpoint, tmp_path):
    sim = run_app("simulate", ["n=40", "instrument.image_size=32", "preview=0", f"hydra.run.dir={tmp_path / 'sim'}"])
    assert sim.returncode == 0, sim.stderr[-2000:]
    out = tmp_path / "file"
    assert evaluate(out, f"ckpt_path={tiny_checkpoint}", f"dataset={tmp_path / 'sim' / 'lenses.h5'}").returncode == 0
    assert len(read_csv(out / "predictions.csv")) == 40
    other = tmp_path / "prior"
    result = evaluate(other, f"ckpt_path={tiny_checkpoint}", "prior=galaxy_galaxy", "test_size=64")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((other / "metrics.json").read_text())["n"] == 64
    # the same lenses with one observation nuisance, averaged over the image's 8 symmetries
    sky = tmp_path / "sky"
    result = evaluate(sky, f"ckpt_path={tiny_checkpoint}", "observation=pedestal_plus", "test_size=64", "symmetries=8")
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads((sky / "metrics.json").read_text())
    assert payload["n"] == 64 and payload["symmetries"] == 8
    assert payload["dataset"].endswith("prior as trained, observation pedestal_plus)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no model: give ckpt_path="),
        (["ckpt_path={ckpt}", "ensemble.checkpoints=[{ckpt}]"], "not both"),
        (["ckpt_path={tmp}/missing.ckpt"], "checkpoint not found"),
        (["ckpt_path={ckpt}", "instrument=quickstart"], "evaluate on data with the model's geometry"),
        (["ckpt_path={ckpt}", "dataset={tmp}/lenses.txt"], "expected an .h5/.hdf5 or .fits file"),
        (["ckpt_path={ckpt}", "mc_samples=-1"], "mc_samples=-1: give an integer >= 0"),
        (["ckpt_path={ckpt}", "symmetries=4"], "symmetries must be 1 (off) or 8"),
        (["ckpt_path={ckpt}", "workers=0"], "workers=0: give auto or a number of processes"),
        (["ckpt_path={ckpt}", "observation=pedestal_plus", "observation.sky.pedestal=high"], "sky.pedestal"),
        (["ckpt_path={ckpt}", "device=cuda"], "CUDA is not available"),
    ],
)
def test_bad_eval_input_is_refused_before_anything_is_written(tiny_checkpoint, tmp_path, args, message):
    """Each refusal in process (the app's one-line report of any refusal: the test below)."""
    out = tmp_path / "bad"
    args = [a.format(ckpt=tiny_checkpoint, tmp=tmp_path) for a in args]
    with pytest.raises(UserError, match=re.escape(message)):
        eval_app.run(compose_run("eval", out, args))
    assert not (out / "metrics.json").exists() and not (out / "predictions.csv").exists()


def test_a_refused_eval_is_one_line_exit_2_and_writes_nothing(tiny_checkpoint, tmp_path):
    out = tmp_path / "bad"
    result = evaluate(out, f"ckpt_path={tiny_checkpoint}", "mc_samples=-1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: mc_samples=-1: give an integer >= 0"], result.stderr
    assert not (out / "metrics.json").exists() and not (out / "predictions.csv").exists()


@pytest.mark.parametrize(
    ("ensemble", "trained_by"),
    [
        ("quickstart", "lenscnn-train -m experiment=quickstart_ensemble"),
        ("realistic", "lenscnn-train -m experiment=realistic_ensemble"),
        ("survey", "make ensemble (lenscnn-train -m experiment=survey_ensemble)"),
        ("space", "make space-ensemble (lenscnn-train -m experiment=space_ensemble)"),
    ],
)
def test_an_ensemble_not_trained_yet_says_how_to_train_it(tmp_path, ensemble, trained_by):
    cfg = compose_config("eval", [f"ensemble={ensemble}", f"paths.log_dir={tmp_path}"])
    with pytest.raises(UserError, match=r"member_1/checkpoints/last.ckpt does not exist") as refused:
        load_ensemble(cfg)
    assert str(refused.value).endswith(f"train the ensemble's members first with {trained_by}")
