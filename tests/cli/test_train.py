"""lenscnn-train end to end: every model and loss, resume, sweeps and leaderboards, loggers, bad configs."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lenscnn.cli.common import check_config
from lenscnn.errors import UserError
from lenscnn.params import LENS
from tests.helpers import TINY, TINY_FAST, run_app, run_cli

REPO = Path(__file__).parents[2]
MODELS = sorted(p.stem for p in (Path(__file__).parents[2] / "conf" / "model").glob("*.yaml"))
BUILDABLE = [m for m in MODELS if m != "timm"]  # timm is an optional extra (tested below)


@pytest.mark.parametrize("model", BUILDABLE)
def test_every_model_config_runs_a_fast_dev_run(hydra_run, model):
    cfg, summary = hydra_run([f"model={model}", "debug=fdr", *TINY])
    assert cfg.model.net.name
    test = summary.test
    assert set(summary.rmse_ratio) == {"theta_E", "e1", "e2", "center_x", "center_y"}
    assert all(math.isfinite(v) for v in test.values())


@pytest.mark.parametrize("loss", ["mse", "gaussian_nll", "full_gaussian_nll"])
def test_every_loss_trains_and_reduces_the_loss(hydra_run, tmp_path, loss):
    cfg, summary = hydra_run([f"model.loss={loss}", *TINY_FAST, "trainer.max_epochs=3", "data.batches_per_epoch=4"])
    rows = list(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, f"{loss}: training did not reduce the loss: {losses}"
    ckpt = torch.load(summary.best_checkpoint, weights_only=True, map_location="cpu")
    assert ckpt["hyper_parameters"]["loss"] == loss
    assert ckpt["hyper_parameters"]["targets"]["names"] == ["theta_E", "e1", "e2", "center_x", "center_y"]


def test_checkpoint_holds_everything_needed_to_use_it(hydra_run):
    _, summary = hydra_run([*TINY_FAST])
    hp = torch.load(summary.best_checkpoint, weights_only=True, map_location="cpu")["hyper_parameters"]
    assert hp["image_size"] == [32, 32]
    assert hp["pixel_scale"] == pytest.approx(0.08)
    assert set(hp["input_normalization"]) == {"softening", "offset", "scale"}
    assert hp["simulator"]["instrument"]["name"] == "quickstart"
    assert len(hp["targets"]["mean"]) == len(hp["targets"]["std"]) == 5
    # theta_E ~ U(0.5, 2): prior mean 1.25, std 0.433
    assert hp["targets"]["mean"][0] == pytest.approx(1.25, abs=0.01)
    assert hp["targets"]["std"][0] == pytest.approx(1.5 / math.sqrt(12), rel=0.01)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True, map_location="cpu")["state_dict"]


RESUME_RUN = [
    *TINY_FAST,
    "trainer.max_epochs=-1",
    "trainer.max_steps=24",
    "data.batches_per_epoch=10",
    "trainer.deterministic=true",
    "test=false",
    "model.net.dropout=0.3",
]


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory) -> Path:
    log_dir = tmp_path_factory.mktemp("straight")
    straight = run_cli("train", [*RESUME_RUN, f"paths.log_dir={log_dir}"])
    assert straight.returncode == 0, straight.stderr[-2000:]
    (run_dir,) = (log_dir / "train" / "runs").iterdir()
    return run_dir


@pytest.mark.parametrize(
    ("step", "during_validation"),
    [(5, False), (10, True)],
    ids=["mid-epoch", "during-validation"],
)
def test_sigterm_saves_last_and_resume_matches_an_uninterrupted_run(
    tmp_path, uninterrupted_run, step, during_validation
):
    """A run stopped by SIGTERM saves last.ckpt and exits 143; ``ckpt_path=last`` continues it in the same
    directory, logger files and data stream, ending with the weights of a run that was never stopped."""
    signal_at = [
        "+callbacks.signal._target_=tests.training.signals.SignalAt",
        f"+callbacks.signal.step={step}",
        f"+callbacks.signal.during_validation={during_validation}",
    ]
    interrupted = run_cli("train", [*RESUME_RUN, f"paths.log_dir={tmp_path}", *signal_at], cwd=REPO)
    assert interrupted.returncode == 143, interrupted.stderr[-2000:]
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step

    resumed = run_cli("train", ["ckpt_path=last", f"paths.log_dir={tmp_path}", "~callbacks.signal"], cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert list((tmp_path / "train" / "runs").iterdir()) == [run_dir], "resume must reuse the run directory"
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 24
    expected = _weights(uninterrupted_run / "checkpoints" / "last.ckpt")
    for key, value in expected.items():
        torch.testing.assert_close(final["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=f"{key} differs")
    steps = [int(r["step"]) for r in csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open())]
    assert min(steps) < step < max(steps), "the resumed run must append to the same metrics.csv"


KILLS = int(os.environ.get("LENSCNN_TRAIN_KILLS", "3"))
EVERY_STEP = [  # last.ckpt after every step, so kills land between, and during, checkpoint writes
    "+callbacks.every_step._target_=pytorch_lightning.callbacks.ModelCheckpoint",
    "+callbacks.every_step.dirpath=${paths.output_dir}/checkpoints",
    "+callbacks.every_step.every_n_train_steps=1",
    "+callbacks.every_step.save_top_k=0",
    "+callbacks.every_step.save_last=true",
]


def _step(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=True)["global_step"] if checkpoint.exists() else -1


def _train(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    with log.open("a") as stderr:  # a file, not a pipe: nobody reads it while the run goes on
        return subprocess.Popen(
            [sys.executable, "-m", "lenscnn.cli.train", *args], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )


@pytest.mark.slow  # a kill mid-write: test_checkpoint_io's writer killed at random moments; resume: the SIGTERM test
def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(tmp_path, uninterrupted_run):
    """Training killed with SIGKILL (no chance to save) at random moments, up to :data:`KILLS` times
    (the 24 steps leave room for about 8), and resumed each time with ``ckpt_path=last``: every
    resume finds a whole checkpoint, and the run ends with the weights of a run that was never
    stopped (the same stream, continued)."""
    run_dir, rng, kills = tmp_path / "run", random.Random(13), 0
    last = run_dir / "checkpoints" / "last.ckpt"
    log = tmp_path / "stderr.log"
    process = _train([*RESUME_RUN, *EVERY_STEP, f"hydra.run.dir={run_dir}"], log)
    while kills < KILLS:
        seen = _step(last)
        while process.poll() is None and _step(last) <= seen:  # a new checkpoint since the (re)start
            time.sleep(0.05)
        if process.poll() is not None:
            break
        time.sleep(rng.uniform(0.0, 0.1))
        process.kill()
        process.wait()
        kills += 1
        process = _train(["ckpt_path=last", f"hydra.run.dir={run_dir}"], log)
    assert process.wait(timeout=600) == 0, log.read_text()[-2000:]
    assert kills >= min(KILLS, 3), f"the run ended after {kills} kills"  # 24 steps allow ~8 kills
    final = torch.load(last, weights_only=True)
    assert final["global_step"] == 24
    for key, value in _weights(uninterrupted_run / "checkpoints" / "last.ckpt").items():
        torch.testing.assert_close(final["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=f"{key} differs")


def test_resumes_from_checkpoints_of_the_last_batch_of_an_epoch_keep_the_stream(tmp_path, uninterrupted_run):
    """Killed twice during validation, each time resumed from the checkpoint saved on the epoch's
    last batch: Lightning's epoch counters then lag one epoch behind (this replayed epoch 0's
    lenses in epoch 1 before the stream position came from the optimizer steps)."""
    run_dir = tmp_path / "run"

    def killed_at(step: int) -> list[str]:
        return [
            "+callbacks.signal._target_=tests.training.signals.SignalAt",
            f"+callbacks.signal.step={step}",
            "+callbacks.signal.during_validation=true",
            f"+callbacks.signal.signum={int(signal.SIGKILL)}",
        ]

    first = run_cli("train", [*RESUME_RUN, *EVERY_STEP, f"hydra.run.dir={run_dir}", *killed_at(10)], cwd=REPO)
    second = run_cli("train", ["ckpt_path=last", f"hydra.run.dir={run_dir}", *killed_at(20)], cwd=REPO)
    assert (first.returncode, second.returncode) == (-signal.SIGKILL, -signal.SIGKILL)
    assert _step(run_dir / "checkpoints" / "last.ckpt") == 20
    final = run_cli("train", ["ckpt_path=last", f"hydra.run.dir={run_dir}", "~callbacks.signal"], cwd=REPO)
    assert final.returncode == 0, final.stderr[-2000:]
    resumed = _weights(run_dir / "checkpoints" / "last.ckpt")
    for key, value in _weights(uninterrupted_run / "checkpoints" / "last.ckpt").items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6, msg=f"{key} differs")


def test_resume_refuses_a_changed_training_stream(tmp_path):
    first = run_app("train", [*TINY_FAST, "test=false", f"paths.log_dir={tmp_path}"])
    assert first.returncode == 0, first.stderr[-2000:]
    result = run_app(
        "train", ["ckpt_path=last", f"paths.log_dir={tmp_path}", "data.batches_per_epoch=5", "trainer.max_epochs=2"]
    )
    assert result.returncode == 2
    assert "the training stream changed (batches_per_epoch 3 -> 5)" in result.stderr
    assert "Traceback" not in result.stderr


def test_multirun_over_two_models_writes_a_leaderboard(tmp_path):
    result = run_app(
        "train",
        ["-m", "model=fast,alexnet", *TINY, "debug=limit", f"paths.log_dir={tmp_path}"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    rows = list(csv.DictReader((sweep / "leaderboard.csv").open()))
    assert len(rows) == 2
    assert {r["overrides"].split()[0] for r in rows} == {"model=fast", "model=alexnet"}
    scores = [float(r["val/nrmse"]) for r in rows]
    assert scores == sorted(scores) and all(math.isfinite(s) for s in scores)
    for r in rows:
        assert float(r["test rmse theta_E"]) > 0
    md = (sweep / "leaderboard.md").read_text()
    assert "model=alexnet" in md and "| rank |" in md
    assert md in result.stdout, "the sweep prints its leaderboard"
    assert f"sweep directory: {sweep}" in result.stdout
    for run in sweep.glob("[0-9]"):
        assert f"run directory: {run}" in result.stdout and f"metrics: {run / 'metrics.json'}" in result.stdout
    # both runs were validated on the same fixed lenses: their val sets are identical by construction
    runs = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert {r["prior_mean_rmse"]["theta_E"] for r in runs}.__len__() == 1


def test_tensorboard_and_wandb_offline_record_real_metrics(hydra_run, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    _, summary = hydra_run(["logger=many", *TINY_FAST, "trainer.max_epochs=2"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard" / "version_0"), size_guidance={"images": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in ("train/loss", "val/nrmse", "val/rmse/theta_E", "test/rmse/center_x"):
        assert tag in scalars, f"{tag} missing from TensorBoard: {scalars}"
    val = [e.value for e in events.Scalars("val/nrmse")]
    assert len(val) == 2 and all(math.isfinite(v) for v in val)
    assert "val/examples" in events.Tags()["images"]

    (history,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    logged = _wandb_history(history)
    assert isinstance(logged.get("val/nrmse"), float) and math.isfinite(logged["val/nrmse"])
    assert logged["test/rmse/theta_E"] == pytest.approx(summary.test["test/rmse/theta_E"], rel=1e-5)
    assert logged["val/examples/_type"] == "image-file"  # the figure of example lenses


def _wandb_history(path: Path) -> dict[str, object]:
    """Last logged value of every key in an offline wandb run file.

    The file is a LevelDB-style log (7-byte file header; 32 KiB blocks of records with a
    7-byte header: crc32, length, type) of ``wandb_internal_pb2.Record`` protobufs.
    """
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, payload, logged = 7, b"", {}
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer: skip to the next block
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        payload += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            payload = b""
            if record.WhichOneof("record_type") == "history":
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    logged[key] = json.loads(item.value_json)
    return logged


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model=resnet99", "Could not find 'model/resnet99' Available: alexnet"),
        ("trainer.max_epocs=3", "no config key 'trainer.max_epocs'; did you mean 'trainer.max_epochs'?"),
        ("modle=fast", "no config key 'modle'; did you mean 'model'?"),
        ("trainer.bogus=1", "no config key 'trainer.bogus'; append a new key with +trainer.bogus=..."),
    ],
)
def test_override_checker_reports_a_typo_in_one_line(override, message, capsys):
    with pytest.raises(SystemExit) as stop:
        check_config("train", [*TINY_FAST, override])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and message in error, error


def test_override_checker_accepts_a_good_config_and_leaves_flags_to_hydra(capsys):
    check_config("train", [*TINY_FAST, "model=alexnet", "+trainer.detect_anomaly=true"])
    check_config("train", ["-m", "modle=fast"])  # multirun: Hydra checks every job itself
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.loss=nll", "model.loss='nll' is not a loss"),
        ("data.batch_size=many", "data.batch_size must be a positive integer"),
        ("model.optimizer.lr=abc", "model.optimizer.lr must be a number"),
        ("model.optimizer.name=adamm", "model.optimizer.name='adamm'"),
        ("model.optimizer.fused=sometimes", "model.optimizer.fused must be true or false, got 'sometimes'"),
        ("instrument.pixel_scale=0", "instrument.pixel_scale must be > 0"),
        ("data.targets=[theta_E,thetaE]", "thetaE"),
    ],
)
def test_bad_config_values_are_one_line_user_errors(hydra_run, override, message):
    with pytest.raises(UserError, match=re.escape(message)) as error:
        hydra_run([*TINY_FAST, override])
    assert "\n" not in str(error.value)


def test_bad_config_exits_2_with_one_line_and_no_traceback(tmp_path):
    result = run_cli("train", [*TINY_FAST, "model.loss=nll", f"paths.log_dir={tmp_path}"], timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == [
        "error: model.loss='nll' is not a loss; choose one of ['mse', 'gaussian_nll', 'full_gaussian_nll']"
    ]


@pytest.fixture(scope="module")
def lens_file(tmp_path_factory) -> Path:
    """40 lenses of 32 x 32 pixels in an HDF5 file as lenscnn-simulate writes it (noise, random truth)."""
    from lenscnn.io.hdf5 import create_lens_dataset, write_batch

    path, rng, names = tmp_path_factory.mktemp("lens_file") / "lenses.h5", np.random.default_rng(5), list(LENS)
    with create_lens_dataset(path, 40, (1, 32, 32), names, 0.08, "instrument: {}\n") as f:
        write_batch(
            f, 0, rng.normal(0, 0.01, (40, 1, 32, 32)).astype(np.float32), {n: rng.normal(size=40) for n in names}
        )
    return path


@pytest.mark.parametrize(
    ("data", "debug"),
    [("file", "fdr"), ("file", "limit"), ("file", "overfit"), ("sim", "fdr"), ("sim", "no-validation")],
)
def test_every_debug_mode_runs_on_either_data_and_writes_one_last_checkpoint(
    hydra_run, tmp_path, lens_file, data, debug
):
    """``debug=fdr`` with ``data=file`` failed (``batches_per_epoch`` is the simulated stream's), and wrote
    two checkpoints (``last.ckpt`` by SaveLast, ``last-v1.ckpt`` by ModelCheckpoint's ``save_last`` when it had
    saved nothing during the fit, as in a run without validation): it writes none now, and no run a
    ``last-v1.ckpt``."""
    overrides = [*TINY_FAST, "trainer.max_epochs=2"]
    if data == "file":
        tiny = [o for o in overrides if not o.startswith(("data.", "instrument."))]
        overrides = [*tiny, "data=file", f"data.path={lens_file}", "data.batch_size=8"]
    overrides += ["+trainer.limit_val_batches=0", "test=false"] if debug == "no-validation" else [f"debug={debug}"]
    _, summary = hydra_run(overrides)
    checkpoints = sorted(p.name for p in tmp_path.rglob("*.ckpt"))
    if debug == "fdr":
        assert checkpoints == [] and summary.best_checkpoint is None
        assert math.isfinite(summary.test["test/loss"])
    else:
        assert checkpoints[-1] == "last.ckpt" and not [c for c in checkpoints if c.startswith("last-")], checkpoints
