"""``metrics.json``: one typed summary per app, one reader and writer each; old files still read."""

from __future__ import annotations

import json

import pytest

from lenscnn.errors import UserError
from lenscnn.io.run_dir import RunDir
from lenscnn.io.summaries import CatalogSummary, EvaluationSummary, TrainingSummary
from lenscnn.models.checkpoint import resolve_checkpoint
from lenscnn.training.leaderboard import write_leaderboard
from tests.helpers import evaluation_summary

#: A training run's metrics.json as lenscnn wrote it before the schema key (version 0).
OLD_TRAINING = {
    "run_dir": "outputs/train/runs/a",
    "overrides": ["model=fast", "model.optimizer.lr=0.001"],
    "model": {"_target_": "lenscnn.models.fast.FastLensNet"},
    "optimized_metric": "val/loss",
    "val": {"val/loss": -3.25},
    "test": {"test/rmse/theta_E": 0.0123, "test/rmse/e1": 0.02, "test/loss": -3.1},
    "prior_mean_rmse": {"theta_E": 0.3, "e1": 0.1},
    "rmse_ratio": {"theta_E": 0.041, "e1": 0.2},
}

#: An evaluation's metrics.json as lenscnn wrote it before the schema key (no calibration, no comparison).
OLD_EVALUATION = {
    "members": ["m1.pt", "m2.pt"],
    "dataset": "simulated test set (8 lenses, instrument quickstart, prior as trained)",
    "n": 8,
    "mc_samples": 0,
    "symmetries": 8,
    "outlier_nsigma": 3.0,
    "sigma_scale": {"theta_E": 1.1},
    "metrics": {"theta_E": {"rmse": 0.03, "coverage_68": 0.7}},
    "nrmse": 0.2,
}


def test_old_files_read_and_round_trip_with_a_schema(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps(OLD_TRAINING))
    training = TrainingSummary.read(old)
    assert training.score == -3.25 and training.test_rmse("theta_E") == 0.0123 and training.test_rmse("e2") is None
    assert training.best_checkpoint is None and training.time_budget is None
    training.write(tmp_path / "new.json")
    written = json.loads((tmp_path / "new.json").read_text())
    assert written["schema"] == "lenscnn.training/1" and written["val"] == {"val/loss": -3.25}
    assert TrainingSummary.read(tmp_path / "new.json") == training

    old.write_text(json.dumps(OLD_EVALUATION))
    evaluation = EvaluationSummary.read(old)
    assert evaluation.metrics["theta_E"]["coverage_68"] == 0.7 and evaluation.calibration is None
    evaluation.write(tmp_path / "eval.json")
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written == {"schema": "lenscnn.evaluation/1", **OLD_EVALUATION}  # absent records stay absent
    assert EvaluationSummary.read(tmp_path / "eval.json") == evaluation


def test_a_summary_of_another_kind_a_newer_schema_or_missing_fields_is_one_line(tmp_path):
    path = tmp_path / "metrics.json"
    evaluation_summary(nrmse=0.5).write(path)
    with pytest.raises(UserError, match=r"a lenscnn evaluation summary, not a training one"):
        TrainingSummary.read(path)
    path.write_text(json.dumps({**OLD_TRAINING, "schema": "lenscnn.training/7"}))
    with pytest.raises(UserError, match=r"schema lenscnn.training/7 is newer .* upgrade lenscnn"):
        TrainingSummary.read(path)
    path.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(UserError, match=r"not a lenscnn catalog summary \(no dataset, mc_samples, members, ...\)$"):
        CatalogSummary.read(path)
    path.write_text("{not json")
    with pytest.raises(UserError, match="not JSON"):
        EvaluationSummary.read(path)
    with pytest.raises(UserError, match="cannot read it"):
        EvaluationSummary.read(tmp_path / "missing.json")


def test_old_training_summaries_rank_a_sweep_and_name_the_best_checkpoint(tmp_path):
    """The leaderboard and the checkpoint resolver read metrics.json through TrainingSummary, old files too."""
    for job, loss, rmse in (("0", -2.0, 0.02), ("1", -3.0, 0.01)):
        run = RunDir(tmp_path / job)
        run.checkpoints.mkdir(parents=True)
        best = run.checkpoints / "epoch_001.ckpt"
        best.write_bytes(b"weights")
        old = {**OLD_TRAINING, "val": {"val/loss": loss}, "test": {"test/rmse/theta_E": rmse}}
        run.metrics.write_text(json.dumps({**old, "best_checkpoint": str(best)}))
    runs = write_leaderboard(tmp_path)
    assert [job for job, _ in runs] == ["1", "0"]
    table = (tmp_path / "leaderboard.csv").read_text().splitlines()
    assert table[0] == "rank,job,overrides,val/loss,test rmse theta_E,test rmse e1"
    assert table[1] == "1,1,model=fast model.optimizer.lr=0.001,-3,0.01,"
    assert resolve_checkpoint(tmp_path / "1") == RunDir(tmp_path / "1").checkpoints / "epoch_001.ckpt"
