"""Ensemble: mixture statistics, identity for identical members, refusals, MC dropout, safe loading."""

from __future__ import annotations

import pickle

import pytest
import torch

from lenscnn.errors import UserError
from lenscnn.models.checkpoint import load_regressor, read_checkpoint
from lenscnn.models.ensemble import Ensemble
from tests.helpers import perturbed_copy


def images_for(model, n: int = 12, seed: int = 3) -> torch.Tensor:
    from lenscnn.sim import Simulator

    sim = Simulator.from_config({**model.hparams.simulator, "compile": False})
    images, _ = sim.sample(n, generator=torch.Generator().manual_seed(seed))
    return images


def test_ensemble_of_identical_checkpoints_equals_the_single_model(tiny_checkpoint):
    model = load_regressor(tiny_checkpoint)
    images = images_for(model)
    with torch.inference_mode():
        single = model.predict_physical(images)
    one = Ensemble.from_checkpoints([tiny_checkpoint]).predict(images)
    four = Ensemble.from_checkpoints([tiny_checkpoint] * 4).predict(images)
    for prediction in (one, four):
        torch.testing.assert_close(prediction.mean, single["mean"], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(prediction.sigma, single["sigma"], rtol=1e-6, atol=1e-7)
    assert one.epistemic is None
    torch.testing.assert_close(four.epistemic, torch.zeros_like(four.mean), atol=1e-6, rtol=0)


def test_mixture_mean_and_variance_of_different_members(tiny_checkpoint, tmp_path):
    other = tmp_path / "other.ckpt"
    perturbed_copy(tiny_checkpoint, other)
    a, b = load_regressor(tiny_checkpoint), load_regressor(other)
    images = images_for(a)
    with torch.inference_mode():
        pa, pb = a.predict_physical(images), b.predict_physical(images)
    ensemble = Ensemble.from_checkpoints([tiny_checkpoint, other]).predict(images)
    mean = (pa["mean"] + pb["mean"]) / 2
    aleatoric = (pa["sigma"] ** 2 + pb["sigma"] ** 2) / 2
    epistemic = ((pa["mean"] - mean) ** 2 + (pb["mean"] - mean) ** 2) / 2
    assert not torch.allclose(pa["mean"], pb["mean"])
    torch.testing.assert_close(ensemble.mean, mean)
    torch.testing.assert_close(ensemble.sigma, torch.sqrt(aleatoric + epistemic))
    torch.testing.assert_close(ensemble.epistemic, epistemic.sqrt())


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"pixel_scale": 0.1}, "pixel scale"),
        ({"image_size": [48, 48]}, "image size"),
        ({"input_normalization": {"softening": 1.0, "offset": 0.0, "scale": 1.0}}, "input normalisation"),
    ],
)
def test_mismatched_members_are_refused(tiny_checkpoint, tmp_path, change, what):
    other = tmp_path / "other.ckpt"
    perturbed_copy(tiny_checkpoint, other, 1.0, **change)
    if "image_size" in change:  # the fast CNN's head depends on the image size: build a fitting one
        checkpoint = read_checkpoint(other)
        from lenscnn.models.regressor import LensRegressor

        checkpoint["state_dict"] = LensRegressor(**checkpoint["hyper_parameters"]).state_dict()
        torch.save(checkpoint, other)
    with pytest.raises(UserError, match=f"differ in {what}"):
        Ensemble.from_checkpoints([tiny_checkpoint, other])


def test_members_with_other_targets_are_refused(tiny_checkpoint, tmp_path):
    checkpoint = read_checkpoint(tiny_checkpoint)
    targets = dict(checkpoint["hyper_parameters"]["targets"])
    targets["names"] = [targets["names"][1], targets["names"][0], *targets["names"][2:]]
    other = tmp_path / "other.ckpt"
    perturbed_copy(tiny_checkpoint, other, 1.0, targets=targets)
    with pytest.raises(UserError, match="differ in targets"):
        Ensemble.from_checkpoints([tiny_checkpoint, other])


def test_mc_dropout_adds_epistemic_spread_and_needs_dropout(tiny_checkpoint, tmp_path):
    ensemble = Ensemble.from_checkpoints([tiny_checkpoint])
    images = images_for(ensemble.reference)
    deterministic = ensemble.predict(images)
    torch.manual_seed(0)
    sampled = ensemble.predict(images, mc_samples=16)
    assert sampled.epistemic is not None and bool((sampled.epistemic > 0).all())
    assert not torch.allclose(sampled.mean, deterministic.mean)
    torch.testing.assert_close(sampled.sigma.square(), sampled.aleatoric.square() + sampled.epistemic.square())
    # dropout is switched off again afterwards, and batch norm never left eval mode
    assert not any(m.training for m in ensemble.modules())
    torch.testing.assert_close(ensemble.predict(images).mean, deterministic.mean)

    checkpoint = read_checkpoint(tiny_checkpoint)
    checkpoint["hyper_parameters"]["net"] = {**checkpoint["hyper_parameters"]["net"], "dropout": 0.0}
    no_dropout = tmp_path / "no_dropout.ckpt"
    torch.save(checkpoint, no_dropout)
    with pytest.raises(UserError, match="needs dropout"):
        Ensemble.from_checkpoints([no_dropout]).predict(images, mc_samples=4)


class Payload:
    """Stands for any object a malicious pickle could carry."""

    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("content", ["pickle", "truncated", "garbage", "not_lenscnn"])
def test_unsafe_or_broken_checkpoints_are_refused(tiny_checkpoint, tmp_path, content, capsys):
    bad = tmp_path / "bad.ckpt"
    if content == "pickle":
        checkpoint = read_checkpoint(tiny_checkpoint)
        checkpoint["extra"] = Payload()
        torch.save(checkpoint, bad)
        message = "weights-only"
    elif content == "truncated":
        bad.write_bytes(tiny_checkpoint.read_bytes()[:5000])
        message = "not a readable PyTorch checkpoint"
    elif content == "garbage":
        bad.write_bytes(pickle.dumps({"a": 1}, protocol=2) * 3)
        message = "not a readable PyTorch checkpoint|weights-only"
    else:
        torch.save({"weights": torch.zeros(3)}, bad)
        message = "not a lenscnn checkpoint"
    with pytest.raises(UserError, match=message):
        load_regressor(bad)
    assert "this must never run" not in capsys.readouterr().out
