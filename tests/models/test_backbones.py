"""Backbones: shapes for any image size, gradients, dropout, coordinate channels, the optional timm wrapper."""

from __future__ import annotations

import inspect
import sys
import types

import pytest
import torch
from torch import nn

from lenscnn.errors import UserError
from lenscnn.models.alexnet import AlexNetV2
from lenscnn.models.ensai_net import EnsaiNet
from lenscnn.models.inception import InceptionV4
from lenscnn.models.layers import CoordChannels
from lenscnn.models.overfeat import OverFeat
from lenscnn.models.resnet import Bottleneck, ResNet
from lenscnn.models.timm_backbone import TimmBackbone

# Narrow versions of every family, so the tests stay fast on a CPU.
FAMILIES: dict[str, tuple[type[nn.Module], dict]] = {
    "overfeat": (OverFeat, {"width": 0.125}),
    "alexnet_v2": (AlexNetV2, {"width": 0.125}),
    "ensai_net": (EnsaiNet, {"width": 0.25}),
    "inception_v4": (InceptionV4, {"width": 0.125}),
    "resnet18": (ResNet, {"depth": 18, "width": 8}),
    "resnet50_imagenet_stem": (ResNet, {"depth": 50, "width": 8, "small_input_stem": False}),
}
IMAGE_SIZES = [(64, 64), (48, 80)]


def build(family: str, image_size: tuple[int, int] | int = 64, **kwargs) -> nn.Module:
    cls, narrow = FAMILIES[family]
    torch.manual_seed(0)
    return cls(5, image_size, **{**narrow, **kwargs})


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("image_size", IMAGE_SIZES, ids=str)
@pytest.mark.parametrize("family", FAMILIES)
def test_forward_shape_and_finite_gradients(family: str, image_size: tuple[int, int]) -> None:
    model = build(family, image_size)
    x = torch.randn(2, 1, *image_size, generator=torch.Generator().manual_seed(1))
    y = model(x)
    assert y.shape == (2, 5)
    assert torch.isfinite(y).all()
    y.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("family", FAMILIES)
def test_dropout_is_random_in_training_and_off_in_eval(family: str) -> None:
    model = build(family, dropout=0.5)
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    y1 = model(x)
    torch.manual_seed(2)
    y2 = model(x)
    assert not torch.allclose(y1, y2)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("family", FAMILIES)
def test_head_keeps_position(family: str) -> None:
    """The same point source at two places gives different outputs (no global pooling), with and without coordinates."""
    images = torch.zeros(2, 1, 64, 64)
    images[0, 0, 12, 12] = images[1, 0, 12, 44] = 100.0
    for coord_channels in (True, False):
        model = build(family, coord_channels=coord_channels).eval()
        with torch.no_grad():
            y = model(images)
        assert not torch.allclose(y[0], y[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_coord_channels_feed_the_first_convolution(family: str) -> None:
    assert first_conv(build(family, coord_channels=False)).in_channels == 1
    model = build(family, in_channels=2).eval()
    conv = first_conv(model)
    assert conv.in_channels == 4
    # On an empty image the output depends on the coordinate channels alone.
    empty = torch.zeros(1, 2, 64, 64)
    with torch.no_grad():
        y = model(empty)
        conv.weight[:, 2:] = 0
        assert not torch.allclose(model(empty), y)


def test_coord_channels_values() -> None:
    x = torch.full((2, 1, 3, 4), 7.0)
    out = CoordChannels()(x)
    assert out.shape == (2, 3, 3, 4)
    assert torch.equal(out[:, 0], x[:, 0])
    torch.testing.assert_close(out[:, 1], torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]).expand(2, 3, 4))
    torch.testing.assert_close(out[:, 2], torch.tensor([-1.0, 0.0, 1.0])[:, None].expand(2, 3, 4))


@pytest.mark.parametrize("cls", [OverFeat, AlexNetV2, EnsaiNet, InceptionV4, ResNet, TimmBackbone])
def test_uniform_constructor_signature(cls: type[nn.Module]) -> None:
    params = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in params[:4]] == ["num_outputs", "image_size", "in_channels", "dropout"]
    assert (params[2].default, params[3].default) == (1, 0.0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("image_size", [16, (32, 20)], ids=str)
def test_too_small_images_are_a_user_error(family: str, image_size: int | tuple[int, int]) -> None:
    with pytest.raises(UserError, match="image_size"):
        build(family, image_size)


def test_resnet_depths() -> None:
    def blocks(model: nn.Module) -> int:
        return len(model.stages)

    assert blocks(ResNet(5, 64, depth=18, width=4)) == 8
    assert blocks(ResNet(5, 64, depth=34, width=4)) == 16
    resnet50 = ResNet(5, 64, depth=50, width=4)
    assert blocks(resnet50) == 16
    assert all(isinstance(block, Bottleneck) for block in resnet50.stages)
    with pytest.raises(UserError, match="depth"):
        ResNet(5, 64, depth=20)


def test_inception_block_counts() -> None:
    model = InceptionV4(5, (48, 64), blocks=(2, 0, 1), width=0.125)
    assert model(torch.zeros(1, 1, 48, 64)).shape == (1, 5)
    assert len(model.features) == 1 + 2 + 1 + 0 + 1 + 1
    with pytest.raises(UserError, match="blocks"):
        InceptionV4(5, 64, blocks=(1, 1))


def test_timm_missing_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail even where timm is installed
    with pytest.raises(UserError, match="pip install timm"):
        TimmBackbone(5, 64, model_name="resnet18")


def test_timm_never_loads_pretrained_weights() -> None:
    with pytest.raises(UserError, match="pretrained"):
        TimmBackbone(5, 64, model_name="resnet18", pretrained=True)


def test_timm_model_is_created_from_scratch_with_coordinate_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def create_model(model_name: str, **kwargs) -> nn.Module:
        calls.append((model_name, kwargs))
        return nn.Sequential(
            nn.Conv2d(kwargs["in_chans"], 4, 3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, kwargs["num_classes"]),
        )

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    model = TimmBackbone(5, 64, dropout=0.2, model_name="convnext_atto")
    assert calls == [("convnext_atto", {"pretrained": False, "in_chans": 3, "num_classes": 5, "drop_rate": 0.2})]
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 5)
