"""Resume arguments: which run ``ckpt_path=...`` continues, with its saved overrides; what is not a
checkpoint of a lenscnn training is refused in one line."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch
import yaml

from lenscnn.errors import UserError
from lenscnn.models.checkpoint import export_weights
from lenscnn.training.resume import check_training_checkpoint, resume_arguments
from tests.helpers import TINY_FAST, run_app


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


def _not_a_checkpoint(path: Path, why: str) -> str:
    with pytest.raises(UserError) as refused:
        check_training_checkpoint(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: not a lenscnn/Lightning checkpoint (") and "\n" not in message, message
    assert why in message, message
    return message


def test_only_a_checkpoint_of_a_lenscnn_training_is_resumed_from(tiny_run, tmp_path):
    """What is not a checkpoint of a lenscnn training is refused in one line naming the file (a file of
    Python objects was refused with torch's advice to set ``weights_only=False``)."""
    last = tiny_run / "checkpoints" / "last.ckpt"
    check_training_checkpoint(last)  # a run's own: accepted
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    _not_a_checkpoint(text, "not a file torch.save writes")
    objects = tmp_path / "objects.pt"
    torch.save({"state_dict": {}, "options": argparse.Namespace(lr=1e-3)}, objects)
    _not_a_checkpoint(objects, "it holds Python objects")
    weights = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, weights)
    _not_a_checkpoint(weights, "no training state")
    exported = tmp_path / "exported.ckpt"
    export_weights(last, exported)  # a lenscnn model, but no optimizer or loop state to resume
    _not_a_checkpoint(exported, "no training state: no optimizer_states, loops, global_step")
    foreign = tmp_path / "foreign.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["hyper_parameters"] = {"hidden": 32}
    torch.save(checkpoint, foreign)
    _not_a_checkpoint(foreign, "a Lightning checkpoint of another model")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[:4000])
    _not_a_checkpoint(truncated, "a truncated or corrupted file")
    with pytest.raises(UserError, match="no such checkpoint file"):
        check_training_checkpoint(tmp_path / "missing.ckpt")


def test_resuming_from_a_file_that_is_no_checkpoint_is_one_line(tmp_path):
    run_dir = make_run(tmp_path / "run", [*TINY_FAST, "test=false"])
    objects = run_dir / "checkpoints" / "random.pt"
    torch.save(argparse.Namespace(lr=1e-3), objects)
    result = run_app("train", [f"ckpt_path={objects}"])
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {objects.resolve()}: not a lenscnn/Lightning checkpoint")
    assert "weights_only" not in result.stderr and "Traceback" not in result.stderr
