"""lenscnn-train init_from=...: a run starts from another run's weights (fine-tuning), or refuses in one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from lenscnn.cli.train import train
from lenscnn.errors import UserError
from lenscnn.io.summaries import TrainingSummary
from tests.helpers import TINY_FAST, compose_config, compose_train

SHORT = [*TINY_FAST, "data.batches_per_epoch=2", "test=false", "callbacks.example_lenses=null"]


def _run(out: Path, overrides: list[str]) -> TrainingSummary:
    cfg = compose_train(out, overrides)
    HydraConfig.instance().set_config(cfg)
    try:
        return train(cfg)
    finally:
        GlobalHydra.instance().clear()


def _parameters(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's learned weights (not BatchNorm's running statistics, which any forward pass updates)."""
    state = torch.load(path, weights_only=True, map_location="cpu")["state_dict"]
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}


@pytest.fixture(scope="module")
def trunk(tmp_path_factory) -> Path:
    """A trained run directory to start from."""
    out = tmp_path_factory.mktemp("trunk")
    _run(out, [*SHORT, "seed=5"])
    return out


def test_a_run_starts_from_the_weights_of_init_from(tmp_path, trunk):
    # learning rate ~0: the weights a fine-tune ends with are the weights it started from
    frozen = ["model.optimizer.lr=1e-30", "model.optimizer.weight_decay=0.0", "seed=1"]
    summary = _run(tmp_path / "tuned", [*SHORT, *frozen, f"init_from={trunk}"])
    start = _parameters(trunk / "checkpoints" / "last.ckpt")
    end = _parameters(Path(summary.run_dir) / "checkpoints" / "last.ckpt")
    assert start.keys() == end.keys()
    assert all(torch.allclose(start[k], end[k], rtol=0, atol=1e-20) for k in start)
    # without init_from the same run starts from its own random initialisation
    fresh = _parameters(Path(_run(tmp_path / "fresh", [*SHORT, *frozen]).run_dir) / "checkpoints" / "last.ckpt")
    assert not all(torch.allclose(start[k], fresh[k], rtol=0, atol=1e-3) for k in start)


def test_a_fine_tune_trains_from_there_with_a_fresh_schedule(tmp_path, trunk):
    summary = _run(tmp_path, [*SHORT, "seed=1", f"init_from={trunk}/checkpoints/last.ckpt"])
    checkpoint = torch.load(Path(summary.run_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2  # its own 2 steps: the count starts afresh, not at 2 + the trunk's 2
    start, end = (
        _parameters(trunk / "checkpoints" / "last.ckpt"),
        _parameters(Path(summary.run_dir) / "checkpoints" / "last.ckpt"),
    )
    assert not all(torch.equal(start[k], end[k]) for k in start)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.targets=[theta_E,e1,e2]", "are not this run's ['theta_E', 'e1', 'e2']"),
        ("model.net.width=1.0", "weights do not fit the model"),
    ],
)
def test_init_from_an_incompatible_checkpoint_is_one_line(tmp_path, trunk, override, message):
    with pytest.raises(UserError, match=re.escape(message)) as refused:
        _run(tmp_path, [*SHORT, f"init_from={trunk}", override])
    assert "\n" not in str(refused.value) and "init_from=" in str(refused.value)
    assert not (tmp_path / "checkpoints").exists()  # refused before training wrote anything


def test_init_from_a_missing_checkpoint_is_one_line(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        _run(tmp_path, [*SHORT, f"init_from={tmp_path / 'nowhere.ckpt'}"])


@pytest.mark.parametrize("recipe", ["survey", "space"])
def test_the_members_fine_tune_their_trunk(recipe):
    members = compose_config("train", [f"experiment={recipe}_ensemble"])
    trunk = compose_config("train", [f"experiment={recipe}_trunk"])
    assert members.init_from == f"{trunk.hydra.run.dir}/checkpoints/last.ckpt"
    # same data and network as the trunk, so its weights fit and its training distribution is kept
    for key in ("data.simulator", "data.targets", "model.net"):
        assert OmegaConf.to_container(OmegaConf.select(members, key), resolve=False) == OmegaConf.to_container(
            OmegaConf.select(trunk, key), resolve=False
        )
    assert members.model.optimizer.lr < trunk.model.optimizer.lr
