"""Resume arguments: which run ``ckpt_path=...`` continues, with its saved overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from lenscnn.errors import UserError
from lenscnn.training.resume import resume_arguments


def make_run(run_dir: Path, overrides: list[str]) -> Path:
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    return run_dir


def test_last_resumes_the_newest_run_under_the_log_dir(tmp_path):
    make_run(tmp_path / "train" / "runs" / "2026-01-01_00-00-00", ["model=fast"])
    newest = make_run(tmp_path / "train" / "runs" / "2026-01-02_00-00-00", ["model=alexnet", "seed=3"])
    argv = resume_arguments(["ckpt_path=last", f"paths.log_dir={tmp_path}", "trainer.max_epochs=5"])
    assert argv == [
        "model=alexnet",
        "seed=3",
        f"paths.log_dir={tmp_path}",
        "trainer.max_epochs=5",
        f"ckpt_path={(newest / 'checkpoints' / 'last.ckpt').resolve()}",
        f"hydra.run.dir={newest.resolve()}",
    ]


def test_last_is_the_run_written_last_not_the_alphabetically_last(tmp_path):
    runs = tmp_path / "train" / "runs"
    for name, age in (("slurm-4242", 300), ("2026-01-03_00-00-00", 200), ("2026-01-02_00-00-00", 100)):
        last = make_run(runs / name, [f"seed={age}"]) / "checkpoints" / "last.ckpt"
        stamp = 1_800_000_000 - age  # seconds; 2026-01-02 was resumed most recently
        os.utime(last, (stamp, stamp))
    argv = resume_arguments(["ckpt_path=last", f"paths.log_dir={tmp_path}"])
    assert argv[0] == "seed=100" and argv[-1] == f"hydra.run.dir={(runs / '2026-01-02_00-00-00').resolve()}"


def test_last_honours_an_explicit_run_dir_and_a_run_dir_is_a_checkpoint_path(tmp_path):
    make_run(tmp_path / "train" / "runs" / "2026-01-02_00-00-00", ["model=alexnet"])  # newer, elsewhere
    mine = make_run(tmp_path / "mine", ["model=fast"])
    for argv in (["ckpt_path=last", f"hydra.run.dir={mine}"], [f"ckpt_path={mine}"]):
        out = resume_arguments([*argv, f"paths.log_dir={tmp_path}"])
        assert out[0] == "model=fast" and out[-1] == f"hydra.run.dir={mine.resolve()}"
        assert out[-2] == f"ckpt_path={(mine / 'checkpoints' / 'last.ckpt').resolve()}"


def test_a_run_dir_without_last_checkpoint_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no checkpoints/last.ckpt"):
        resume_arguments(["ckpt_path=last", f"hydra.run.dir={tmp_path / 'empty'}"])
    with pytest.raises(UserError, match="has no checkpoints/last.ckpt"):
        resume_arguments([f"ckpt_path={tmp_path / 'empty'}"])
