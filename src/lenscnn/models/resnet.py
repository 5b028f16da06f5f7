"""Residual networks (ResNet-18/34/50) with a position-preserving regression head."""

from __future__ import annotations

from torch import Tensor, nn

from lenscnn.errors import UserError
from lenscnn.models.layers import RegressionHead, as_image_size, conv_block, coord_input, init_weights

#: Stems: ``small`` (one 3x3 stride-1 convolution: the feature map shrinks by 8 in the network), ``imagenet``
#: (7x7 stride-2 convolution and 3x3 stride-2 max-pooling: it shrinks by 32), ``auto`` (by image size).
STEMS = ("auto", "small", "imagenet")

#: ``stem="auto"`` takes the ImageNet stem for images of at least this many pixels along the short side
#: (192 px: a 6x6 last feature map, 16x fewer FLOPs in the stages), the small-input stem below (64 px: 8x8).
IMAGENET_STEM_MIN_SIZE = 128


def resolve_stem(stem: str, image_size: tuple[int, int], small_input_stem: bool | None = None) -> str:
    """The stem (``small`` or ``imagenet``) a ResNet on ``image_size`` images builds.

    ``stem`` is ``auto`` (``imagenet`` from :data:`IMAGENET_STEM_MIN_SIZE` pixels, else ``small``), ``small``
    or ``imagenet``; the older switch ``small_input_stem`` (``True``: small, ``False``: imagenet; still in
    checkpoints written before ``stem`` existed) decides when it is given, and must agree with an explicit
    ``stem``.
    """
    if stem not in STEMS:
        raise UserError(f"ResNet stem must be one of {list(STEMS)}, got {stem!r}")
    if small_input_stem is not None:
        if not isinstance(small_input_stem, bool):
            raise UserError(f"ResNet small_input_stem must be true, false or null, got {small_input_stem!r}")
        legacy = "small" if small_input_stem else "imagenet"
        if stem not in ("auto", legacy):
            raise UserError(
                f"ResNet stem={stem} contradicts small_input_stem={str(small_input_stem).lower()}; set only stem"
            )
        return legacy
    if stem == "auto":
        return "imagenet" if min(image_size) >= IMAGENET_STEM_MIN_SIZE else "small"
    return stem


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.residual = nn.Sequential(
            conv_block(in_channels, channels, 3, stride),
            conv_block(channels, out_channels, 3, relu=False),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.residual(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, with a shortcut; ResNet-50."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.residual = nn.Sequential(
            conv_block(in_channels, channels, 1),
            conv_block(channels, channels, 3, stride),
            conv_block(channels, out_channels, 1, relu=False),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.residual(x) + self.shortcut(x))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return conv_block(in_channels, out_channels, 1, stride, relu=False)


LAYOUTS: dict[int, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """ResNet-18, -34 or -50 regressing ``num_outputs`` values.

    Residual networks of He, Zhang, Ren & Sun (2016, "Deep Residual Learning for Image
    Recognition", CVPR): a stem, four stages of residual blocks with ``width``, 2, 4 and 8 times
    ``width`` channels (times 4 for the bottleneck blocks of ResNet-50), each stage after the
    first halving the feature map (stride on the 3x3 convolution, as torchvision does).

    Adapted here: ``in_channels`` input channels (1 for a single-band image) plus optional
    coordinate channels; any image size of at least 32 pixels; the stem sized for the image
    (``stem``, :func:`resolve_stem`): by default (``auto``) the ImageNet stem (7x7 stride-2
    convolution and 3x3 stride-2 max-pooling) for images of at least 128 pixels, and below that one
    3x3 stride-1 convolution, as is usual for small images such as CIFAR's (``small``: the feature
    map then shrinks by 8 instead of 32, at 16x the FLOPs of the stages); position-preserving head
    that pools to a 4x4 grid, flattens it and applies a hidden layer of ``8 * width`` units and the
    linear output layer, with dropout (probability ``dropout``) on the inputs of both.

    Args:
        stem: ``auto``, ``small`` or ``imagenet``.
        small_input_stem: the older switch (``True``: ``small``, ``False``: ``imagenet``), read from
            checkpoints that have it; ``None`` (default): ``stem`` decides.
    """

    def __init__(
        self,
        num_outputs: int,
        image_size: tuple[int, int] | int,
        in_channels: int = 1,
        dropout: float = 0.0,
        *,
        depth: int = 18,
        width: int = 64,
        stem: str = "auto",
        small_input_stem: bool | None = None,
        coord_channels: bool = True,
    ) -> None:
        super().__init__()
        #: the stem built: ``small`` or ``imagenet``
        self.stem_kind = resolve_stem(stem, as_image_size(image_size), small_input_stem)
        if depth not in LAYOUTS:
            raise UserError(f"ResNet depth must be one of {sorted(LAYOUTS)}, got {depth}")
        if width < 1:
            raise UserError(f"ResNet width (channels of the first stage) must be a positive integer, got {width}")
        block, counts = LAYOUTS[depth]
        self.coords, channels = coord_input(in_channels, coord_channels)
        if self.stem_kind == "small":
            self.stem = conv_block(channels, width, 3)
        else:
            self.stem = nn.Sequential(conv_block(channels, width, 7, 2), nn.MaxPool2d(3, 2, padding=1))
        stages: list[nn.Module] = []
        channels = width
        for i, count in enumerate(counts):
            stage_channels = width * 2**i
            for j in range(count):
                stages.append(block(channels, stage_channels, stride=2 if i > 0 and j == 0 else 1))
                channels = stage_channels * block.expansion
        self.stages = nn.Sequential(*stages)
        self.head = RegressionHead(channels, num_outputs, grid=4, hidden=(8 * width,), dropout=dropout)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` images to ``(B, num_outputs)`` outputs."""
        return self.head(self.stages(self.stem(self.coords(x))))
