"""Backbones: shapes for any image size, gradients, dropout, coordinate channels, the optional timm wrapper."""

from __future__ import annotations

import inspect
import io
import sys
import types

import pytest
import torch
from torch import nn

from lenscnn.errors import UserError
from lenscnn.models.alexnet import AlexNetV2
from lenscnn.models.ensai_net import EnsaiNet
from lenscnn.models.fast import FastLensNet
from lenscnn.models.inception import InceptionV4
from lenscnn.models.layers import CoordChannels, CoordConv2d, GridPool, fold_batch_norm
from lenscnn.models.overfeat import OverFeat
from lenscnn.models.resnet import Bottleneck, ResNet
from lenscnn.models.timm_backbone import TimmBackbone

# Narrow versions of every family, so the tests stay fast on a CPU.
FAMILIES: dict[str, tuple[type[nn.Module], dict]] = {
    "fast": (FastLensNet, {"width": 0.5, "stem": (5, 2), "widths": (16, 32, 64, 128), "blocks": (0, 1, 1, 0)}),
    "fast_patchify": (FastLensNet, {"width": 0.5, "stem": (4, 4), "widths": (32, 64, 128), "blocks": (1, 1, 0)}),
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
def test_folding_batch_norm_keeps_the_outputs_of_every_family(family: str) -> None:
    model = build(family)
    generator = torch.Generator().manual_seed(2)
    for m in model.modules():  # running statistics far from the initial (0, 1), as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.5, generator=generator)
            m.running_var.uniform_(0.2, 3.0, generator=generator)
            m.weight.data.uniform_(0.5, 1.5, generator=generator)
            m.bias.data.normal_(0.0, 0.3, generator=generator)
    model.eval()
    x = torch.randn(4, 1, 64, 64, generator=generator)
    with torch.no_grad():
        expected = model(x)
        norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        folded = fold_batch_norm(model)
        left = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert left < norms or norms == 0  # overfeat and alexnet have none
    assert not any(m.training for m in folded.modules())


def test_folding_batch_norm_refuses_a_model_in_training() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(build("fast"))


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


@pytest.mark.parametrize(("kernel", "stride"), [(5, 2), (4, 4), (3, 1)])
def test_coord_conv_equals_appending_coordinate_channels(kernel: int, stride: int) -> None:
    """CoordConv2d is the convolution of the image with the coordinate channels appended: same parameters,
    same outputs and gradients (to float32 rounding)."""
    torch.manual_seed(0)
    padding = 0 if kernel == stride else kernel // 2
    fused = CoordConv2d(3, 8, kernel, stride, padding=padding)
    plain = nn.Conv2d(3, 8, kernel, stride, padding=padding)
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(4, 1, 32, 24, generator=torch.Generator().manual_seed(1))
    out, reference = fused(x), plain(CoordChannels()(x))
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    (out * reference.detach()).sum().backward()
    (reference * reference.detach()).sum().backward()
    torch.testing.assert_close(fused.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fused.bias.grad, plain.bias.grad, rtol=1e-4, atol=1e-4)


def test_grid_pool_passes_a_map_of_its_size_and_pools_any_other() -> None:
    pool, reference = GridPool((4, 4)), nn.AdaptiveAvgPool2d((4, 4))
    x = torch.randn(2, 3, 4, 4)
    assert pool(x) is x
    y = torch.randn(2, 3, 8, 12)
    torch.testing.assert_close(pool(y), reference(y), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("stem", "image_size", "message"),
    [((4, 4), (64, 62), "multiples of 4"), ((2, 4), 64, "kernel >= stride"), ((0, 1), 64, "kernel >= stride")],
    ids=str,
)
def test_bad_fast_stems_are_user_errors(stem, image_size, message) -> None:
    with pytest.raises(UserError, match=message):
        FastLensNet(5, image_size, stem=stem)


def test_fast_checkpoints_without_a_stem_keep_the_5x5_stride_2_stem() -> None:
    """Checkpoints of the older quickstart and survey nets name no stem: they build, and load, as trained."""
    net = FastLensNet(5, 64)
    conv = net.features[0][0]
    assert (conv.kernel_size, conv.stride, conv.padding, conv.in_channels) == ((5, 5), (2, 2), (2, 2), 3)
    assert [name for name, _ in net.named_parameters()][:2] == ["features.0.0.weight", "features.0.1.weight"]


@pytest.mark.parametrize("cls", [FastLensNet, OverFeat, AlexNetV2, EnsaiNet, InceptionV4, ResNet, TimmBackbone])
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


# -- the ResNet stem sized for the image ---------------------------------------------------------


def resnet_stem(model: ResNet) -> str:
    """``imagenet`` if the first convolution is the 7x7 stride-2 one, ``small`` for the 3x3 stride-1 one."""
    conv = first_conv(model)
    return {((7, 7), (2, 2)): "imagenet", ((3, 3), (1, 1)): "small"}[(conv.kernel_size, conv.stride)]


@pytest.mark.parametrize(
    ("image_size", "settings", "expected"),
    [
        (64, {}, "small"),
        (127, {}, "small"),
        (128, {}, "imagenet"),
        (192, {}, "imagenet"),
        ((120, 256), {}, "small"),  # the short side decides
        ((128, 256), {"stem": "auto"}, "imagenet"),
        (192, {"stem": "small"}, "small"),
        (64, {"stem": "imagenet"}, "imagenet"),
        (192, {"small_input_stem": True}, "small"),  # the older switch, as checkpoints written before stem have it
        (64, {"small_input_stem": False}, "imagenet"),
        (192, {"stem": "small", "small_input_stem": True}, "small"),
        (192, {"small_input_stem": None}, "imagenet"),
    ],
    ids=str,
)
def test_resnet_stem_follows_the_image_size_unless_chosen(image_size, settings, expected) -> None:
    model = ResNet(5, image_size, depth=18, width=4, **settings)
    assert model.stem_kind == expected
    assert resnet_stem(model) == expected
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    assert model(torch.randn(1, 1, *size)).shape == (1, 5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"stem": "large"}, r"ResNet stem must be one of \['auto', 'small', 'imagenet'\], got 'large'"),
        ({"stem": "imagenet", "small_input_stem": True}, "ResNet stem=imagenet contradicts small_input_stem=true"),
        ({"small_input_stem": "yes"}, "ResNet small_input_stem must be true, false or null, got 'yes'"),
    ],
)
def test_bad_resnet_stems_are_user_errors(settings, message) -> None:
    with pytest.raises(UserError, match=message):
        ResNet(5, 64, depth=18, width=4, **settings)


def forward_flops(model: nn.Module, size: int) -> int:
    """FLOPs of one image through ``model`` (counted on the meta device: no arithmetic is done)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.empty(1, 1, size, size, device="meta"))
    return counter.get_total_flops()


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_the_automatic_stem_cuts_resnet_flops_at_192_px_at_least_8_fold(depth) -> None:
    """The shipped ResNets (width 64) on 192 x 192 images, against the small-input stem they had before."""
    with torch.device("meta"):
        auto, small = (ResNet(10, 192, depth=depth, stem=stem) for stem in ("auto", "small"))
    assert forward_flops(small, 192) >= 8 * forward_flops(auto, 192)
    with torch.device("meta"):
        assert forward_flops(ResNet(10, 64, depth=depth), 64) == forward_flops(
            ResNet(10, 64, depth=depth, stem="small"), 64
        )


@pytest.mark.parametrize(
    ("net", "image_size", "expected"),
    [
        ({"small_input_stem": True}, 128, "small"),  # a checkpoint of the older configs: kept whatever the size
        ({"stem": "small", "small_input_stem": None}, 192, "small"),
        ({"stem": "imagenet"}, 64, "imagenet"),
        ({"stem": "auto", "small_input_stem": None}, 128, "imagenet"),
        ({}, 64, "small"),
    ],
    ids=str,
)
def test_resnet_checkpoints_keep_their_stem(net, image_size, expected) -> None:
    """A checkpoint of a ResNet with an explicit (or automatic) stem loads with that stem and its weights."""
    from lenscnn.models.checkpoint import model_from_checkpoint
    from lenscnn.models.regressor import LensRegressor
    from tests.fuzzing import tiny_hparams

    hparams = tiny_hparams(net={"name": "resnet", "depth": 18, "width": 4, **net}, image_size=[image_size] * 2)
    torch.manual_seed(0)
    model = LensRegressor(**hparams)
    buffer = io.BytesIO()
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, buffer)
    buffer.seek(0)
    loaded = model_from_checkpoint(torch.load(buffer, weights_only=True))
    assert loaded.net.stem_kind == resnet_stem(loaded.net) == expected
    assert dict(loaded.hparams["net"]) == dict(hparams["net"])
    images = torch.randn(2, 1, image_size, image_size, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(loaded(images), model.eval()(images))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=resnet18", "instrument=hst_ensai"], "imagenet"),
        (["model=resnet50", "instrument=quickstart"], "small"),
        (["model=resnet34", "instrument=hst_ensai", "model.net.stem=small"], "small"),
        (["model=resnet18", "instrument=hst_ensai", "model.net.small_input_stem=true"], "small"),  # the older key
        (["model=resnet18", "instrument=quickstart", "model.net.small_input_stem=false"], "imagenet"),
    ],
    ids=str,
)
def test_resnet_configs_choose_the_stem_by_image_size(overrides, expected) -> None:
    from omegaconf import OmegaConf

    from lenscnn.models import build_backbone
    from tests.helpers import compose_config

    cfg = compose_config("train", overrides)
    size = cfg.instrument.image_size
    with torch.device("meta"):
        net = build_backbone(OmegaConf.to_container(cfg.model.net, resolve=True), 10, (size, size))
    assert net.stem_kind == expected
