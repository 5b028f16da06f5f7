"""DDP: a real 2-process run (gloo, CPU) and the pieces that make ranks agree."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from lenscnn.data.streams import TEST_SEED, VAL_SEED, FixedLenses, ParameterBatches, shard_bounds
from lenscnn.training.distributed import (
    RUN_STAMP_ENV,
    launch_arguments,
    launcher_rank,
    requeued_checkpoint,
    slurm_run_stamp,
)
from lenscnn.training.summary import prior_mean_rmse
from tests.helpers import TINY_FAST, compose_train, run_cli

REPO = Path(__file__).parents[2]
TARGETS = ["theta_E", "e1", "e2", "center_x", "center_y"]
DDP_RUN = [
    *TINY_FAST,
    "trainer=ddp",
    "trainer.devices=2",
    "trainer.max_epochs=2",
    "data.val_size=32",  # 16 lenses (2 batches) per rank
    "data.test_size=24",  # 12 lenses (batches of 8 and 4) per rank
]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """``(log_dir, run_dir, probe_dir)`` of one 2-process DDP run with a :class:`RankProbe` on every rank."""
    root = tmp_path_factory.mktemp("ddp")
    log_dir, probe_dir = root / "logs", root / "probe"
    probe = ["+callbacks.probe._target_=tests.training.probes.RankProbe", f"+callbacks.probe.out_dir={probe_dir}"]
    result = run_cli("train", [*DDP_RUN, f"paths.log_dir={log_dir}", *probe], cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((log_dir / "train" / "runs").iterdir())
    assert len(runs) == 1, f"DDP must write one run directory, got {runs}"
    return log_dir, runs[0], probe_dir


def _ranks(probe_dir: Path) -> list[dict]:
    ranks = [json.loads((probe_dir / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    return ranks


def _datamodule(tmp_path: Path):
    return instantiate(compose_train(tmp_path, DDP_RUN).data, _convert_="all")


def test_ddp_writes_one_run_directory_once(ddp_run):
    log_dir, run_dir, _ = ddp_run
    files = sorted(str(p.relative_to(log_dir)) for p in log_dir.rglob("*") if p.is_file())
    checkpoints = [f for f in files if f.endswith(".ckpt")]
    names = sorted(Path(c).name for c in checkpoints)
    assert len(names) == 2 and names[0] in ("epoch_000.ckpt", "epoch_001.ckpt") and names[1] == "last.ckpt", names
    assert all(Path(log_dir, c).parent == run_dir / "checkpoints" for c in checkpoints)
    for name in ("metrics.csv", "metrics.json", "config.yaml", "hparams.yaml"):
        assert sum(Path(f).name == name for f in files) == 1, f"{name} written more than once: {files}"
    assert [Path(f).name for f in files if f.endswith(".log")] == ["train.log"], "rank 1 must not write a log file"
    assert not any("lightning_logs" in f for f in files)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * 3  # 2 epochs of 3 steps: each step trains both ranks' batches


def test_ddp_ranks_draw_their_own_training_streams(ddp_run, tmp_path):
    ranks = _ranks(ddp_run[2])
    drawn = [r["train"]["theta_E"] for r in ranks]
    assert len(drawn[0]) == len(drawn[1]) == 2 * 3 * 8
    assert not set(drawn[0]) & set(drawn[1]), "the ranks trained on common lenses"
    # each rank's stream is the one seeded by its global rank: SeedSequence([seed, rank, epoch, batch])
    stream = ParameterBatches(_datamodule(tmp_path).simulator, batch_size=8, seed=0, length=3)
    for rank, lenses in enumerate(drawn):
        stream.rank = rank
        expected = [x for e in range(2) for i in range(3) for x in stream[(e, i)]["params"]["theta_E"].tolist()]
        assert lenses == pytest.approx(expected)


def test_ddp_evaluates_disjoint_shards_that_cover_the_fixed_sets(ddp_run, tmp_path):
    ranks = _ranks(ddp_run[2])
    simulator = _datamodule(tmp_path).simulator
    for stage, size, seed in (("val", 32, VAL_SEED), ("test", 24, TEST_SEED)):
        whole = FixedLenses(simulator, size, seed, batch_size=8).params["theta_E"].tolist()
        shards = [r[stage]["theta_E"] for r in ranks]
        assert [len(s) for s in shards] == [size // 2, size // 2]
        assert shards[0] + shards[1] == pytest.approx(whole), f"{stage}: shards must partition the fixed set in order"


def test_ddp_metrics_are_the_reduction_over_ranks(ddp_run, tmp_path):
    _, run_dir, probe_dir = ddp_run
    ranks = _ranks(probe_dir)
    rows = list(csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open()))
    val = [r for r in rows if r.get("val/loss")][-1]
    # val/loss: Lightning's sync_dist mean over ranks of each rank's epoch mean (equal shards)
    local_loss = [r["val"]["loss_sum"] / r["val"]["n"] for r in ranks]
    assert float(val["val/loss"]) == pytest.approx(sum(local_loss) / 2, rel=1e-5)
    assert local_loss[0] != pytest.approx(local_loss[1]), "the ranks must have evaluated different lenses"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for stage, logged in (("val", val), ("test", metrics["test"])):
        n = sum(r[stage]["n"] for r in ranks)
        for k, name in enumerate(TARGETS):
            local_mse = [r[stage]["sse"][k] / r[stage]["n"] for r in ranks]
            # RMSE of the whole set = sqrt(mean over the (equal) ranks of their MSE)
            expected = math.sqrt(sum(r[stage]["sse"][k] for r in ranks) / n)
            assert expected == pytest.approx(math.sqrt(sum(local_mse) / 2), rel=1e-9)
            assert float(logged[f"{stage}/rmse/{name}"]) == pytest.approx(expected, rel=1e-4), (stage, name)
    # the prior-mean baseline is summed over the ranks' shards: that of the whole test set
    datamodule = _datamodule(tmp_path)
    whole = prior_mean_rmse(datamodule.target_scaler(), datamodule.test_dataloader())
    assert metrics["prior_mean_rmse"] == pytest.approx(whole, rel=1e-9)


# -- the pieces, without processes -------------------------------------------------------


@pytest.mark.parametrize(("size", "world"), [(32, 2), (33, 2), (1024, 3), (5, 5), (7, 4)])
def test_shards_partition_the_set(size, world):
    bounds = [shard_bounds(size, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    lengths = [stop - start for start, stop in bounds]
    assert max(lengths) - min(lengths) <= 1 and min(lengths) >= 1


def test_val_set_smaller_than_the_world_is_refused(tmp_path):
    from lenscnn.errors import UserError

    datamodule = _datamodule(tmp_path)
    datamodule.val_size = 1
    datamodule.trainer = type("T", (), {"global_rank": 0, "world_size": 2})()
    with pytest.raises(UserError, match="val_size=1 is smaller than the 2 processes"):
        datamodule.val_dataloader()


SLURM_TASK = {"SLURM_NTASKS": "4", "SLURM_JOB_ID": "991", "SLURM_JOB_NAME": "sweep", "SLURM_PROCID": "3"}


def test_slurm_tasks_agree_on_the_run_directory(tmp_path):
    assert slurm_run_stamp({}) is None
    assert slurm_run_stamp(SLURM_TASK) == "slurm-991"
    assert slurm_run_stamp({**SLURM_TASK, "SLURM_ARRAY_JOB_ID": "990", "SLURM_ARRAY_TASK_ID": "1"}) == "slurm-990_1"
    assert slurm_run_stamp({**SLURM_TASK, "SLURM_JOB_NAME": "bash"}) is None  # salloc shell: the user's processes
    dirs = set()
    for procid in range(4):
        env = {**SLURM_TASK, "SLURM_PROCID": str(procid)}
        argv = launch_arguments(["model=fast"], env)
        assert env[RUN_STAMP_ENV] == "slurm-991"
        assert launcher_rank(env) == procid
        assert ("hydra.output_subdir=null" in argv) == (procid > 0)
        assert ("hydra/job_logging=stdout" in argv) == (procid > 0)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(RUN_STAMP_ENV, env[RUN_STAMP_ENV])
            dirs.add(str(compose_train(tmp_path, argv).hydra.run.dir))
    assert dirs == {f"{tmp_path}/train/runs/slurm-991"}
    # an explicit stamp wins; a Lightning DDP child (LOCAL_RANK=1) keeps the parent's directory, no own .hydra
    env = {**SLURM_TASK, RUN_STAMP_ENV: "mine"}
    launch_arguments([], env)
    assert env[RUN_STAMP_ENV] == "mine"
    child = launch_arguments(["hydra.output_subdir=null"], {"LOCAL_RANK": "1", "WORLD_SIZE": "2"})
    assert child == ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    assert launch_arguments(["-m", "model=fast,alexnet"], {"LOCAL_RANK": "1", "WORLD_SIZE": "2"})[0] == "-m"


def test_requeued_checkpoint_is_the_newest_state_of_a_restarted_job(tmp_path):
    import os

    (tmp_path / "checkpoints").mkdir()
    last, hpc = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt"
    last.write_bytes(b"x")
    hpc.write_bytes(b"x")
    os.utime(last, ns=(1, 10**18))
    os.utime(hpc, ns=(1, 2 * 10**18))
    restarted = {**SLURM_TASK, "SLURM_RESTART_COUNT": "1"}
    assert requeued_checkpoint(tmp_path, restarted) == str(hpc)
    os.utime(last, ns=(1, 3 * 10**18))
    assert requeued_checkpoint(tmp_path, restarted) == str(last)
    assert requeued_checkpoint(tmp_path, {**SLURM_TASK, "SLURM_RESTART_COUNT": "0"}) is None  # first run: start fresh
    assert requeued_checkpoint(tmp_path, {"SLURM_RESTART_COUNT": "1"}) is None  # not a SLURM job
    assert requeued_checkpoint(tmp_path / "nothing", restarted) is None
