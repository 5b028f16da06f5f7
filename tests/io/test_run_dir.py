"""RunDir names every file of a run directory; the config and the apps agree with it."""

from __future__ import annotations

from pathlib import Path

from lenscnn.io.run_dir import RunDir, run_name
from tests.helpers import compose_config


def test_the_files_of_a_run_directory(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "2026-12-02_10-00-00")
    assert run.last_checkpoint == run.path / "checkpoints" / "last.ckpt"
    assert (run.metrics.name, run.metrics_csv.name, run.predictions.name) == (
        "metrics.json",
        "metrics.csv",
        "predictions.csv",
    )
    assert (run.plots, run.report) == (run.path / "plots", run.path / "report.md")
    assert run.saved_overrides == run.path / ".hydra" / "overrides.yaml"
    assert not run.is_run()
    run.hydra.mkdir(parents=True)
    assert run.is_run()


def test_a_checkpoint_knows_its_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    assert RunDir.of_checkpoint(run.last_checkpoint) is None  # not a run until Hydra wrote .hydra/
    run.hydra.mkdir()
    assert RunDir.of_checkpoint(run.last_checkpoint) == run
    assert RunDir.of_checkpoint(tmp_path / "elsewhere" / "model.ckpt") is None
    assert run_name(run.last_checkpoint) == "run"
    assert run_name(tmp_path / "member_1" / "model.ckpt") == "member_1"


def test_requeue_checkpoints(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    for name in ("hpc_ckpt_1.ckpt", "hpc_ckpt_2.ckpt", "other.ckpt"):
        (tmp_path / name).touch()
    assert sorted(p.name for p in run.requeue_checkpoints()) == ["hpc_ckpt_1.ckpt", "hpc_ckpt_2.ckpt"]


def test_lightning_writes_checkpoints_where_run_dir_looks(tmp_path: Path) -> None:
    cfg = compose_config("train", [f"hydra.run.dir={tmp_path}", f"paths.output_dir={tmp_path}"])
    run = RunDir(tmp_path)
    assert Path(cfg.callbacks.model_checkpoint.dirpath) == run.checkpoints
    assert Path(cfg.callbacks.save_last.dirpath) == run.checkpoints
