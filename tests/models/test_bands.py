"""Bands in the networks: a model trained on a multi-band instrument takes one input channel per band, scales
each band by its own noise, keeps its bands in its checkpoint, and refuses images of other bands in one line;
single-band models and their checkpoints are as before."""

from __future__ import annotations

import math

import pytest
import torch

from lenscnn.data.normalization import InputNormalizer
from lenscnn.errors import UserError
from lenscnn.models.checkpoint import load_regressor
from lenscnn.models.ensemble import Ensemble
from lenscnn.models.regressor import LensRegressor
from tests.helpers import TINY_FAST

TARGETS = {"names": ["theta_E", "e1"], "mean": [1.0, 0.0], "std": [0.4, 0.1]}
FOUR = ["VIS", "Y", "J", "H"]


def per_band_normalizer() -> dict:
    images = torch.randn(64, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * torch.tensor(
        [0.01, 0.1, 0.1, 0.1]
    ).view(1, 4, 1, 1)
    return InputNormalizer.fit(images, [0.01, 0.1, 0.1, 0.1]).to_dict()


def regressor(**changes) -> LensRegressor:
    settings = {
        "net": {"name": "fast", "width": 0.25},
        "targets": TARGETS,
        "input_normalization": per_band_normalizer(),
        "image_size": (32, 32),
        "bands": FOUR,
        **changes,
    }
    return LensRegressor(**settings)


def test_each_band_is_scaled_by_its_own_noise():
    """Fitted on bands of different noise, each band's stretched pixels come out standardised; a single band's
    record stays three numbers (its checkpoints unchanged)."""
    rms = torch.tensor([0.01, 0.1, 0.3]).view(1, 3, 1, 1)
    images = torch.randn(256, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * rms
    normalizer = InputNormalizer.fit(images, [0.01, 0.1, 0.3])
    scaled = normalizer(images.float())
    for k in range(3):
        assert float(scaled[:, k].mean()) == pytest.approx(0.0, abs=1e-4)
        assert float(scaled[:, k].std()) == pytest.approx(1.0, abs=1e-3)
    assert InputNormalizer.from_dict(normalizer.to_dict()) == normalizer
    single = InputNormalizer.fit(images[:, :1], 0.01).to_dict()
    assert all(isinstance(v, float) for v in single.values())
    with pytest.raises(UserError, match="2 softenings for 3 bands"):
        InputNormalizer.fit(images, [0.01, 0.1])


def test_a_multi_band_model_takes_a_channel_per_band_and_refuses_others():
    model = regressor().eval()
    out = model(torch.rand(2, 4, 32, 32))
    assert out.shape[0] == 2 and torch.isfinite(out).all()
    with pytest.raises(UserError, match=r"the model takes 4 band\(s\) \(VIS, Y, J, H\); the images have 1"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(UserError, match="model.net.in_channels=1, but the images have 4 band"):
        regressor(net={"name": "fast", "width": 0.25, "in_channels": 1})
    with pytest.raises(UserError, match=r"input_normalization scales 4 band\(s\), the model takes 1"):
        regressor(bands=None)


def test_ensemble_members_must_share_their_bands():
    four = regressor()
    other = regressor(bands=["VIS", "Y", "J", "K"])
    with pytest.raises(UserError, match="ensemble members differ in bands"):
        Ensemble([four, other])
    assert Ensemble([four, regressor()]).bands == tuple(FOUR)


def test_training_on_euclid_bands_keeps_them_in_the_checkpoint(hydra_run):
    """``lenscnn-train instrument=euclid colours=survey_euclid``: a four-channel network, per-band input
    scaling, the bands and colours in the checkpoint, which loads back as that model."""
    overrides = ["instrument=euclid", "prior=survey", "colours=survey_euclid", *TINY_FAST]
    cfg, summary = hydra_run(overrides)
    checkpoint = torch.load(summary.best_checkpoint, weights_only=True, map_location="cpu")
    hp = checkpoint["hyper_parameters"]
    assert hp["bands"] == FOUR
    assert hp["input_normalization"]["softening"] == [0.0071, 0.095, 0.095, 0.095]
    assert set(hp["simulator"]["colours"]) >= {"source", "lens_light"}
    model = load_regressor(summary.best_checkpoint)
    assert model.bands == tuple(FOUR)
    assert all(math.isfinite(v) for v in summary.test.values())
