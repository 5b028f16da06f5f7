"""LensDataModule seeding and on-device rendering; FileLensDataModule on a file written by lenscnn-simulate."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from lenscnn.data import FileLensDataModule, LensDataModule
from lenscnn.data.streams import EpochSampler, ParameterBatches


@pytest.fixture(scope="module")
def sim_cfg():
    with initialize_config_module("lenscnn.conf", version_base="1.3"):
        cfg = compose("simulate", overrides=["instrument.image_size=32"])
    node = OmegaConf.to_container(cfg.simulator, resolve=True)
    node["compile"] = False
    return node


def _module(sim_cfg, **kwargs) -> LensDataModule:
    defaults = {"batch_size": 8, "batches_per_epoch": 4, "val_size": 16, "test_size": 16}
    return LensDataModule(sim_cfg, **{**defaults, **kwargs})


def test_training_batches_differ_across_ranks_epochs_and_batches_and_repeat_for_the_same_key(sim_cfg):
    dm = _module(sim_cfg)
    draws = {}
    for rank in (0, 1):
        data = ParameterBatches(dm.simulator, 8, seed=0, length=4, rank=rank)
        for key in [(0, 0), (0, 1), (1, 0)]:
            draws[rank, key] = data[key]["params"]["theta_E"]
    values = [tuple(v.tolist()) for v in draws.values()]
    assert len(set(values)) == len(values), "two ranks/epochs/batches drew the same lenses"
    again = ParameterBatches(dm.simulator, 8, seed=0, length=4, rank=1)[(1, 0)]["params"]["theta_E"]
    torch.testing.assert_close(again, draws[1, (1, 0)], rtol=0, atol=0)


def test_validation_and_test_sets_are_fixed_whatever_the_seed_and_batch_size(sim_cfg):
    a, b = _module(sim_cfg, seed=0), _module(sim_cfg, seed=123, batch_size=5)
    for loader in ("val_dataloader", "test_dataloader"):
        lenses_a = [batch["params"]["theta_E"] for batch in getattr(a, loader)()]
        lenses_b = [batch["params"]["theta_E"] for batch in getattr(b, loader)()]
        assert [len(x) for x in lenses_a] == [8, 8] and [len(x) for x in lenses_b] == [5, 5, 5, 1]
        torch.testing.assert_close(torch.cat(lenses_a), torch.cat(lenses_b), rtol=0, atol=0)
    val = torch.cat([batch["params"]["theta_E"] for batch in a.val_dataloader()])
    test = torch.cat([batch["params"]["theta_E"] for batch in a.test_dataloader()])
    assert not torch.isin(val, test).any()


def test_epoch_sampler_resumes_mid_epoch():
    done = [0]
    sampler = EpochSampler(5, lambda: done[0])
    sampler.set_epoch(3)
    assert list(sampler) == [(3, i) for i in range(5)]
    done[0] = 2
    assert list(sampler) == [(3, 2), (3, 3), (3, 4)]


def test_rendering_happens_after_transfer_and_matches_the_simulator(sim_cfg):
    dm = _module(sim_cfg)
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"params", "noise_seeds"}, "loaders must ship parameters, not images"
    out = dm.on_after_batch_transfer(batch, 0)
    assert out["image"].shape == (8, 1, 32, 32) and out["image"].device == batch["noise_seeds"].device
    expected = dm.simulator.render(batch["params"], noise=True, noise_seeds=batch["noise_seeds"])
    torch.testing.assert_close(out["image"], expected, rtol=0, atol=0)


def test_prior_moments_and_input_normalisation(sim_cfg):
    dm = _module(sim_cfg)
    scaler = dm.target_scaler()
    assert scaler.names == ("theta_E", "e1", "e2", "center_x", "center_y")
    assert scaler.mean[0] == pytest.approx(1.25, abs=5e-3)
    assert scaler.std[3] == pytest.approx(0.4 / 12**0.5, rel=0.02)
    normalizer = dm.input_normalizer()
    assert normalizer.softening == pytest.approx(0.01)  # the quickstart background rms
    images = torch.cat([dm.on_after_batch_transfer(b, 0)["image"] for b in dm.val_dataloader()])
    x = normalizer(images)
    assert abs(float(x.mean())) < 0.3 and 0.7 < float(x.std()) < 1.3


def test_file_datamodule_reads_a_simulated_dataset(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lenscnn.cli.simulate",
            "n=40",
            "preview=0",
            "instrument.image_size=32",
            f"paths.log_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (path,) = tmp_path.glob("simulate/runs/*/lenses.h5")
    dm = FileLensDataModule(str(path), batch_size=8, val_fraction=0.2, test_fraction=0.2)
    assert dm.image_size == (32, 32) and dm.pixel_scale == pytest.approx(0.08)
    assert dm.simulator_config["instrument"]["name"] == "quickstart"
    sizes = {name: len(s) for name, s in dm.sets.items()}
    assert sizes == {"train": 24, "val": 8, "test": 8}
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 1, 32, 32) and batch["params"]["theta_E"].shape == (8,)
    assert dm.target_scaler().names[0] == "theta_E"

    # under DDP every rank trains on its own share of each epoch's permutation
    shares = []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        shares.append(torch.cat([b["params"]["theta_E"] for b in dm.train_dataloader()]))
    assert len(shares[0]) == len(shares[1]) == 8
    assert not set(shares[0].tolist()) & set(shares[1].tolist())
