"""Cluster paths without a cluster: SLURM auto-requeue on SIGUSR1, submitit sweeps, the sbatch script."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from lenscnn.training import leaderboard
from tests.helpers import TINY, TINY_FAST, compose_train, run_cli

REPO = Path(__file__).parents[2]


REQUEUE_RUN = [*TINY_FAST, "trainer.max_epochs=-1", "trainer.max_steps=12", "data.batches_per_epoch=5", "test=false"]
FAKE_JOB = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "lenscnn",
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_NNODES": "1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
}
#: Stands in for `scontrol`: records the call, then does what SLURM does to a requeued job (SIGTERM).
FAKE_SCONTROL = """#!/bin/sh
echo "$@" >> "{log}"
kill -TERM $PPID
"""


def test_sigusr1_requeues_the_slurm_job_which_resumes_in_the_same_run_directory(tmp_path, monkeypatch):
    """SIGUSR1 (SLURM's warning before the time limit): Lightning saves an hpc checkpoint into the run
    directory and runs `scontrol requeue <job id>`; the job started again (same job id, same command)
    continues from there in the same directory, logger file and step count."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.log"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL.format(log=calls))
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key, value in FAKE_JOB.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LENSCNN_RUN_STAMP", raising=False)
    logs = tmp_path / "logs"
    usr1_at_step_5 = [
        "+callbacks.signal._target_=tests.training.signals.SignalAt",
        "+callbacks.signal.step=5",
        f"+callbacks.signal.signum={int(signal.SIGUSR1)}",
    ]
    command = [*REQUEUE_RUN, f"paths.log_dir={logs}", *usr1_at_step_5]

    first = run_cli("train", command, cwd=REPO, timeout=300)
    assert first.returncode == 143, first.stderr[-3000:]  # stopped by the requeue's SIGTERM
    assert calls.read_text().split() == ["requeue", "4242"]
    run_dir = logs / "train" / "runs" / "slurm-4242"
    assert list((logs / "train" / "runs").iterdir()) == [run_dir]
    assert torch.load(run_dir / "hpc_ckpt_1.ckpt", weights_only=True)["global_step"] == 5

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # what SLURM sets in a requeued job
    again = run_cli("train", command, cwd=REPO, timeout=300)  # the same command, as the requeued job runs it
    assert again.returncode == 0, again.stderr[-3000:]
    assert list((logs / "train" / "runs").iterdir()) == [run_dir], "the requeued job must reuse the run directory"
    restored = [line for line in again.stderr.splitlines() if "Restoring states from the checkpoint path at" in line]
    assert len(restored) == 1 and str(run_dir) in restored[0], again.stderr[-3000:]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    steps = [int(r["step"]) for r in csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open())]
    train_steps = [
        int(r["step"])
        for r in csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open())
        if r.get("train/loss")
    ]
    assert min(steps) < 5 < max(steps), "the requeued job must append to the run's metrics.csv"
    assert sorted(train_steps) == list(range(12)), f"each step trained exactly once across the requeue: {train_steps}"


def test_ranks_started_by_srun_agree_on_one_run_directory(tmp_path):
    """Two DDP ranks started the way `srun` starts them (separately, seconds apart, with SLURM's
    variables): Lightning takes the ranks from SLURM, and both use the job's run directory."""
    logs = tmp_path / "logs"
    command = [sys.executable, "-m", "lenscnn.cli.train", *TINY_FAST, "trainer=ddp", f"paths.log_dir={logs}"]
    job = {**FAKE_JOB, "SLURM_JOB_ID": "5151", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2"}
    base = {**os.environ, **job, "WANDB_MODE": "offline", "MASTER_ADDR": "127.0.0.1"}
    base.pop("LENSCNN_RUN_STAMP", None)
    ranks = []
    for rank in (0, 1):
        env = {**base, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)}
        out = open(tmp_path / f"rank{rank}.txt", "w")  # noqa: SIM115 - closed below
        ranks.append((subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT), out))
        time.sleep(1.5)  # a clock-stamped directory would differ between the ranks
    for process, out in ranks:
        process.wait(timeout=300)
        out.close()
    for rank, (process, _) in enumerate(ranks):
        assert process.returncode == 0, (tmp_path / f"rank{rank}.txt").read_text()[-3000:]
    assert [p.name for p in (logs / "train" / "runs").iterdir()] == ["slurm-5151"]
    run_dir = logs / "train" / "runs" / "slurm-5151"
    assert sorted(p.name for p in run_dir.iterdir() if p.suffix == ".log") == ["train.log"]
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "metrics.json").is_file()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (tmp_path / "rank1.txt").read_text()  # the rank SLURM gave it


def test_multirun_through_the_submitit_local_launcher_writes_runs_and_leaderboard(tmp_path, capsys):
    """A tiny model as a submitit job (the local executor of hydra/launcher=slurm's launcher), its run
    named after its model, as the README's four-architecture sweep does (a sweep of two models and its
    leaderboard: test_train's test_multirun_over_two_models_writes_a_leaderboard)."""
    result = run_cli(
        "train",
        [
            "-m",
            "hydra/launcher=local",
            "model=fast",
            *TINY,
            "debug=limit",
            f"paths.log_dir={tmp_path}",
            "hydra.sweep.subdir=${hydra.runtime.choices.model}",
        ],
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    assert (sweep / ".submitit").is_dir(), "the job must have run through submitit"
    assert "hydra_submitit_launcher.submitit_launcher.LocalLauncher" in (sweep / "multirun.yaml").read_text()
    assert (sweep / "fast" / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((sweep / "fast" / "metrics.json").read_text())
    assert metrics["model"]["name"] == "fast"
    assert math.isfinite(metrics["test"]["test/rmse/theta_E"])
    (row,) = csv.DictReader((sweep / "leaderboard.csv").open())
    assert row["job"] == "fast" and math.isfinite(float(row["val/nrmse"]))

    # the leaderboard can be rebuilt from the run directories alone (e.g. after cluster jobs)
    board = (sweep / "leaderboard.md").read_text()
    (sweep / "leaderboard.md").unlink()
    leaderboard.main([str(sweep)])
    assert capsys.readouterr().out == f"1 runs ranked: {sweep / 'leaderboard.md'}\n"
    assert (sweep / "leaderboard.md").read_text() == board


def test_slurm_launcher_submits_one_task_per_device_with_lightnings_requeue_signal(tmp_path, monkeypatch):
    """The sbatch script of `hydra/launcher=slurm trainer=gpu trainer.devices=4 trainer.num_nodes=2`."""
    import submitit

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\n")  # submitit checks that it runs on a SLURM cluster
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_PARTITION", "gpu")  # sbatch's own; the script must not override it
    scripts = []

    class SubmittedError(Exception):
        pass

    def capture(executor, function, *arguments):
        scripts.append(executor._executor._make_submission_file_text("python -m submitit.core._submit", "0"))
        raise SubmittedError

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    overrides = ["hydra/launcher=slurm", "trainer=gpu", "trainer.devices=4", "trainer.num_nodes=2"]
    cfg = compose_train(tmp_path, [*overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(SubmittedError):
        launcher.launch([["model=alexnet"]], initial_job_idx=0)
    flags = {line.split()[1] for line in scripts[0].splitlines() if line.startswith("#SBATCH")}
    for flag in (
        "--nodes=2",
        "--ntasks-per-node=4",  # Lightning's SLURMEnvironment requires tasks per node = trainer.devices
        "--gpus-per-node=4",
        "--signal=USR1@120",  # Lightning's auto-requeue signal, not submitit's USR2
        "--requeue",
        "--time=1440",
    ):
        assert flag in flags, (flag, sorted(flags))
    assert not any(f.startswith("--partition") for f in flags)
    assert "srun" in scripts[0].splitlines()[-1]
