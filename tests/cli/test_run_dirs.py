"""Run directories: created exclusively (runs started at the same instant never share one), shared
only through ``LENSCNN_RUN_STAMP``, and removed when a run is refused before writing anything."""

import multiprocessing
import os
import subprocess
import sys

from omegaconf import OmegaConf

from lenscnn.cli import run_dirs
from lenscnn.io.hdf5 import read_lens_dataset
from tests.helpers import TINY_FAST, compose_config, run_cli

STARTS = 8


def _take(parent, barrier, queue):
    barrier.wait()
    queue.put(str(run_dirs.create_run_dir(parent, "2026-11-28_12-00-00")))


def test_runs_started_in_the_same_second_get_different_directories(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(STARTS), context.Queue()
    workers = [context.Process(target=_take, args=(tmp_path, barrier, queue)) for _ in range(STARTS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    taken = sorted(queue.get(timeout=10) for _ in workers)
    assert len(set(taken)) == STARTS
    assert {os.path.basename(p) for p in taken} == {"2026-11-28_12-00-00"} | {
        f"2026-11-28_12-00-00_{k}" for k in range(2, STARTS + 1)
    }


def test_config_resolves_its_run_directory_once_and_a_stamp_is_shared(tmp_path, monkeypatch):
    monkeypatch.delenv("LENSCNN_RUN_STAMP", raising=False)
    first = compose_config("simulate", [f"paths.log_dir={tmp_path}"])
    second = compose_config("simulate", [f"paths.log_dir={tmp_path}"])
    one, other = first.hydra.run.dir, second.hydra.run.dir
    assert one != other and first.hydra.run.dir == one  # cached: a run has one directory
    assert os.path.dirname(one) == str(tmp_path / "simulate" / "runs")

    monkeypatch.setenv("LENSCNN_RUN_STAMP", "slurm-42")
    ranks = [compose_config("train", [f"paths.log_dir={tmp_path}"]).hydra.run.dir for _ in range(2)]
    assert ranks == [str(tmp_path / "train" / "runs" / "slurm-42")] * 2


def test_sweep_directory_is_created_exclusively(tmp_path):
    compose_config("simulate", [])  # registers the resolvers
    sweeps = [OmegaConf.create({"d": f"${{lenscnn_run_dir:{tmp_path}/multiruns}}"}).d for _ in range(3)]
    assert len(set(sweeps)) == 3 and all(os.path.isdir(s) for s in sweeps)


def test_concurrent_simulate_runs_each_keep_their_output(tmp_path):
    """Four ``lenscnn-simulate`` started at once: four run directories, four complete files (before
    exclusive run directories, they shared one: one file survived, or none)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "LENSCNN_RUN_STAMP")}
    command = [sys.executable, "-m", "lenscnn.cli.simulate", f"paths.log_dir={tmp_path}", "n=8", "preview=0"]
    runs = [subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [run.communicate(timeout=300)[1] for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, errors
    outputs = sorted((tmp_path / "simulate" / "runs").glob("*/lenses.h5"))
    assert len(outputs) == 4
    for path in outputs:
        images, _, _ = read_lens_dataset(path)
        assert images.shape[0] == 8


def test_refused_run_leaves_no_run_directory(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lenscnn.cli.simulate", f"paths.log_dir={tmp_path}", "n=-3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and result.stderr.strip() == "error: n must be a positive integer, got -3"
    assert not (tmp_path / "simulate").exists(), "the run directory and the parents made for it are gone"


def test_only_directories_this_process_created_and_left_empty_are_removed(tmp_path):
    mine = run_dirs.create_run_dir(tmp_path, "run")
    (mine / ".hydra").mkdir()
    (mine / "simulate.log").write_text("")
    written = run_dirs.create_run_dir(tmp_path, "run")
    (written / "lenses.h5").write_text("data")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    assert run_dirs.remove_if_unused(mine) and not mine.exists()
    assert not run_dirs.remove_if_unused(written) and (written / "lenses.h5").exists()
    assert not run_dirs.remove_if_unused(foreign) and foreign.exists()

    fresh = run_dirs.create_run_dir(tmp_path / "app" / "runs", "run")
    (fresh / ".hydra").mkdir()
    assert run_dirs.remove_if_unused(fresh) and not (tmp_path / "app").exists() and tmp_path.exists()


def test_a_refused_sweep_job_leaves_no_job_or_sweep_directory(tmp_path):
    sweep = run_dirs.create_run_dir(tmp_path / "train" / "multiruns", "sweep")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    done = sweep / "0"  # a job that ran
    (done / ".hydra").mkdir(parents=True)
    (done / "metrics.json").write_text("{}")
    refused = sweep / "1"  # made by Hydra for the job, not by this module
    (refused / ".hydra").mkdir(parents=True)
    (refused / "train.log").write_text("")
    assert run_dirs.remove_if_unused(refused) and not refused.exists() and done.exists()
    (done / "metrics.json").unlink()
    assert run_dirs.remove_if_unused(done), "a sweep whose jobs were all refused is removed with its last job"
    assert not (tmp_path / "train").exists() and tmp_path.exists()
    foreign = tmp_path / "foreign" / "0"  # a job of a sweep this process did not create
    (foreign / ".hydra").mkdir(parents=True)
    assert not run_dirs.remove_if_unused(foreign) and foreign.exists()


def test_a_multirun_refused_by_its_first_job_leaves_no_directory(tmp_path):
    """DDP inside a basic multirun is refused (each rank would restart the sweep): before, the refusal left
    ``<sweep>/multirun.yaml`` and ``<sweep>/0/`` with Hydra's files."""
    result = run_cli("train", ["-m", "trainer=ddp", *TINY_FAST, f"paths.log_dir={tmp_path / 'logs'}"], timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: DDP in a multirun needs"), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "logs").exists(), sorted(str(p) for p in (tmp_path / "logs").rglob("*"))


def test_composing_an_experiment_with_its_own_sweep_directory_leaves_no_stray_directory(tmp_path):
    """OmegaConf resolves the default ``hydra.sweep.dir`` (``outputs/train/multiruns/<time>``) that an
    ensemble experiment replaces while Hydra composes the config, which made that directory: it is removed
    when the process exits (``make ensemble`` and the tests composing these experiments left it behind)."""
    script = (
        "from lenscnn.cli.common import register_resolvers\n"
        "from hydra import compose, initialize_config_module\n"
        "register_resolvers()\n"
        "with initialize_config_module('lenscnn.conf', version_base='1.3'):\n"
        "    for _ in range(2):  # as lenscnn-train does: its check of the command line, then Hydra\n"
        "        cfg = compose('train', overrides=['experiment=survey_ensemble'], return_hydra_config=True)\n"
        "assert cfg.hydra.sweep.dir.endswith('ensemble/survey')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (tmp_path / "outputs").exists(), sorted(str(p) for p in (tmp_path / "outputs").rglob("*"))
