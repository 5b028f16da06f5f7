"""Shared fixtures: shipped configs, small simulators, random lens parameters and lenstronomy references."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from lenscnn.io.summaries import TrainingSummary
from lenscnn.models.checkpoint import resolve_checkpoint
from tests.helpers import (
    TINY_TRAIN,
    as_batch,
    compose_train,
    lenstronomy_image,
    load_conf,
    make_simulator,
    random_lens_params,
    run_app,
)

#: The fuzz modules' fixtures (``workdir``, ``one_thread_per_module``).
pytest_plugins = ["tests.fuzzing"]


@pytest.fixture(scope="session", autouse=True)
def galaxy_cache(tmp_path_factory) -> Iterator[Path]:
    """A private cache (the built-in galaxy library, the models' domain references) for every test and
    the apps they start, shared by the processes of one ``pytest -n`` run: each entry is built once per
    run (written atomically under a per-process name, so workers racing to write it are safe) and the
    user's ~/.cache is never touched."""
    root = tmp_path_factory.getbasetemp()
    cache = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "lenscnn_cache"
    cache.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LENSCNN_CACHE", str(cache))
        yield cache


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240601)


@pytest.fixture
def conf():
    """``conf(group, name)``: a shipped config as a dict."""
    return load_conf


@pytest.fixture
def lens_params():
    """``lens_params(rng, shear=True, lens_light=True)``: one random lens as ``{name: float}``."""
    return random_lens_params


@pytest.fixture
def batch():
    """``batch(list_of_param_dicts, dtype)``: ``{name: Tensor[n]}``."""
    return as_batch


@pytest.fixture
def reference_image():
    """``reference_image(params, size, pixel_scale, supersampling, kernel)``: lenstronomy's image."""
    return lenstronomy_image


@pytest.fixture
def make_sim():
    """``make_sim(instrument, prior="quickstart", **simulator_kwargs)``: a Simulator."""
    return make_simulator


@pytest.fixture
def small_instrument() -> dict:
    """The quickstart instrument on 32 x 32 pixels."""
    return {**load_conf("instrument", "quickstart"), "image_size": 32}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The run directory of a tiny trained model (``checkpoints/``, ``metrics.json``)."""
    root = tmp_path_factory.mktemp("tiny_run")
    result = run_app("train", [*TINY_TRAIN, f"hydra.run.dir={root / 'run'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "run"


@pytest.fixture
def tiny_checkpoint(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny model's checkpoint (tests may rewrite it)."""
    copy = tmp_path / "tiny.ckpt"
    shutil.copy(resolve_checkpoint(tiny_run), copy)
    return copy


@pytest.fixture
def hydra_run(tmp_path):
    """Run ``train(cfg)`` with Hydra's runtime config set, as ``@hydra.main`` would."""
    from hydra.core.hydra_config import HydraConfig

    from lenscnn.cli.train import train

    def run(overrides: list[str]) -> tuple[DictConfig, TrainingSummary]:
        cfg = compose_train(tmp_path, overrides)
        HydraConfig.instance().set_config(cfg)
        return cfg, train(cfg)

    yield run
    GlobalHydra.instance().clear()
