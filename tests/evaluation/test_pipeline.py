"""The evaluation pipeline without the app: calibrate, predict, score, compare; then the writers."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from lenscnn.errors import UserError
from lenscnn.evaluation.datasets import simulated_set
from lenscnn.evaluation.pipeline import ensemble_gain_sentence, evaluate
from lenscnn.evaluation.report import evaluation_figures, write_outputs
from lenscnn.models.ensemble import Ensemble
from tests.helpers import perturbed_copy


def test_evaluate_calibrates_scores_and_compares(tiny_checkpoint, tmp_path):
    other = tmp_path / "other.ckpt"
    perturbed_copy(tiny_checkpoint, other, 1.02)
    ensemble = Ensemble.from_checkpoints([tiny_checkpoint, other])
    config = ensemble.simulator_config
    test, val = simulated_set(config, "test", 96), simulated_set(config, "val", 96)
    result = evaluate(ensemble, test, val_set=val, batch_size=32, compare=True)

    names = ensemble.target_names
    payload = result.summary.to_json()
    assert payload["n"] == 96 and list(payload["metrics"]) == list(names)
    error = result.test.mean.double() - result.test.truth.double()
    for k, name in enumerate(names):  # the metrics are those of the returned predictions
        assert payload["metrics"][name]["rmse"] == pytest.approx(float(error[:, k].square().mean().sqrt()), rel=1e-9)
    scale = payload["calibration"]["sigma_scale"]
    assert ensemble.sigma_scale.tolist() == pytest.approx([scale[n] for n in names], rel=1e-6)
    assert payload["sigma_scale"] == pytest.approx(scale, rel=1e-6)
    val_after = payload["calibration"]["coverage_val_after"]
    assert all(abs(val_after[n]["coverage_68"] - 0.68) < 0.08 for n in names), val_after
    assert set(payload["comparison"]["members"]) == {
        f"0: {tiny_checkpoint.parent.name}/tiny.ckpt",
        "1: " + f"{tmp_path.name}/other.ckpt",
    }
    assert "**ensemble**" in result.comparison_md

    write_outputs(tmp_path / "out", result, evaluation_figures(result.test, result.calibration))
    out = tmp_path / "out"
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(payload))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["target"] for r in rows] == list(names) and float(rows[0]["rmse"]) == pytest.approx(
        payload["metrics"][names[0]]["rmse"], rel=1e-6
    )
    assert len((out / "predictions.csv").read_text().splitlines()) == 97
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "calibration.png",
        "predicted_vs_true.png",
        "residuals.png",
    ]
    report = (out / "report.md").read_text()
    assert "## Calibration" in report and "## Members and ensemble" in report and "![calibration]" in report
    assert (out / "comparison.csv").read_text().splitlines()[-1].startswith("ensemble,")
    assert not list(out.glob(".*.partial"))


def test_evaluate_refuses_calibration_without_uncertainties(tiny_checkpoint, tmp_path):
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["loss"] = "mse"
    state, targets = checkpoint["state_dict"], len(checkpoint["hyper_parameters"]["targets"]["names"])
    weight = [k for k, v in state.items() if k.endswith(".weight") and v.shape[0] == 2 * targets][-1]
    for key in (weight, weight.removesuffix("weight") + "bias"):  # an mse model has one output per target
        state[key] = state[key][:targets]
    torch.save(checkpoint, tmp_path / "mse.ckpt")
    ensemble = Ensemble.from_checkpoints([tmp_path / "mse.ckpt"])
    assert not ensemble.gives_sigma() and ensemble.gives_sigma(mc_samples=2)
    test = simulated_set(ensemble.simulator_config, "test", 8)
    with pytest.raises(UserError, match="calibrate=true needs uncertainties"):
        evaluate(ensemble, test, val_set=test)
    result = evaluate(ensemble, test)
    assert result.test.sigma is None and "coverage_68" not in result.metrics["theta_E"]
    assert math.isfinite(result.summary.nrmse)


def test_member_comparison_markdown_is_unchanged():
    """``comparison_table`` writes the member table of ``comparison.md`` (and of the model card): the same
    text as before it was shared, ``|`` in a label escaped."""
    from types import SimpleNamespace

    from lenscnn.evaluation.pipeline import compare_members, comparison_table
    from lenscnn.evaluation.scoring import Predictions

    truth = torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.5, -1.0]])
    members = [truth + 0.1, truth - 0.2 * torch.tensor([1.0, -1.0])]
    test = Predictions(("theta_E", "e1"), truth, truth + 0.05, None, None, None, members)
    ensemble = SimpleNamespace(
        reference=SimpleNamespace(scaler=SimpleNamespace(std=[0.5, 0.25])),
        sources=["runs/a/checkpoints/best.ckpt", "b|c/last.ckpt"],
    )
    result, text = compare_members(ensemble, test)
    table = (
        "| model | normalised RMSE |\n|---|---|\n| 0: a/best.ckpt | 0.3000 |\n| 1: b\\|c/last.ckpt | 0.6000 |\n"
        "| **ensemble** | **0.1500** |"
    )
    assert text == table + "\n\nThe ensemble's normalised RMSE is 50.0% below its best member's (0.3000)."
    assert comparison_table(result) == table
    assert comparison_table(result, label=str.upper).splitlines()[2] == "| 0: A/BEST.CKPT | 0.3000 |"


def test_ensemble_gain_sentence_says_below_above_or_within():
    assert ensemble_gain_sentence(0.1).endswith("10.0% below its best member's")
    assert ensemble_gain_sentence(-0.004).endswith("0.4% above its best member's")
    # -0.0002 would print as "-0.0% below": the sentence says what the rounding hides
    assert ensemble_gain_sentence(-0.0002).endswith("within 0.05% of its best member's")
    assert ensemble_gain_sentence(0.0004).endswith("within 0.05% of its best member's")
