"""Fixtures for training tests: tiny, fast configs composed with Hydra's compose API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

#: Overrides that make any training config tiny: 32 x 32 images, a few small batches, eager rendering.
TINY = [
    "instrument.image_size=32",
    "data.batch_size=8",
    "data.batches_per_epoch=3",
    "data.val_size=16",
    "data.test_size=16",
    "data.simulator.compile=false",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "callbacks.rich_progress_bar=null",
    "callbacks.rich_model_summary=null",
    "model.example_lenses=4",
]

#: Also shrink the model (the fast CNN accepts a width multiplier).
TINY_FAST = [*TINY, "model.net.width=0.5"]


def compose_train(tmp_path: Path, overrides: list[str]) -> DictConfig:
    """The train config with ``overrides``, writing into ``tmp_path`` (as Hydra's run would)."""
    GlobalHydra.instance().clear()
    with initialize_config_module("lenscnn.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path)
        cfg.hydra.runtime.output_dir = str(tmp_path)
        cfg.hydra.job.num = 0
    return cfg


def run_cli(module: str, args: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """``python -m lenscnn.cli.<module> args...`` in a subprocess (the way users run it)."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    env.pop("WANDB_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", f"lenscnn.cli.{module}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kwargs,
    )


@pytest.fixture
def hydra_run(tmp_path):
    """Run ``train(cfg)`` with Hydra's runtime config set, as ``@hydra.main`` would."""
    from hydra.core.hydra_config import HydraConfig

    from lenscnn.cli.train import train

    def run(overrides: list[str]) -> tuple[DictConfig, dict]:
        cfg = compose_train(tmp_path, overrides)
        HydraConfig.instance().set_config(cfg)
        return cfg, train(cfg)

    yield run
    GlobalHydra.instance().clear()
