"""Inception-v4-like network, one of the four networks of Hezaveh, Perreault Levasseur & Marshall (2017).

Block layouts follow Szegedy et al. (2017), Figures 3-8; each builder returns the block and the
number of channels it outputs. ``c`` scales a channel count by the width multiplier.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lenscnn.errors import UserError
from lenscnn.models.layers import (
    RegressionHead,
    as_image_size,
    conv_block,
    coord_input,
    init_weights,
    scale_channels,
    stem_stride,
)

Scale = Callable[[int], int]


class Branches(nn.Module):
    """Parallel branches applied to the same input; outputs concatenated along channels."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, 2, padding=1)


def _avg_pool() -> nn.AvgPool2d:
    return nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)


def stem(in_channels: int, c: Scale, stride: int) -> tuple[nn.Module, int]:
    """Figure 3; downsamples by ``stride * 4``."""
    return nn.Sequential(
        conv_block(in_channels, c(32), 3, stride),
        conv_block(c(32), c(32), 3),
        conv_block(c(32), c(64), 3),
        Branches(_pool(), conv_block(c(64), c(96), 3, 2)),
        Branches(
            nn.Sequential(conv_block(c(64) + c(96), c(64), 1), conv_block(c(64), c(96), 3)),
            nn.Sequential(
                conv_block(c(64) + c(96), c(64), 1),
                conv_block(c(64), c(64), (7, 1)),
                conv_block(c(64), c(64), (1, 7)),
                conv_block(c(64), c(96), 3),
            ),
        ),
        Branches(conv_block(2 * c(96), c(192), 3, 2), _pool()),
    ), c(192) + 2 * c(96)


def inception_a(in_channels: int, c: Scale) -> tuple[nn.Module, int]:
    """Figure 4."""
    return Branches(
        nn.Sequential(_avg_pool(), conv_block(in_channels, c(96), 1)),
        conv_block(in_channels, c(96), 1),
        nn.Sequential(conv_block(in_channels, c(64), 1), conv_block(c(64), c(96), 3)),
        nn.Sequential(conv_block(in_channels, c(64), 1), conv_block(c(64), c(96), 3), conv_block(c(96), c(96), 3)),
    ), 4 * c(96)


def reduction_a(in_channels: int, c: Scale) -> tuple[nn.Module, int]:
    """Figure 7 with Inception-v4's k, l, m, n = 192, 224, 256, 384; halves the feature map."""
    return Branches(
        _pool(),
        conv_block(in_channels, c(384), 3, 2),
        nn.Sequential(
            conv_block(in_channels, c(192), 1), conv_block(c(192), c(224), 3), conv_block(c(224), c(256), 3, 2)
        ),
    ), in_channels + c(384) + c(256)


def inception_b(in_channels: int, c: Scale) -> tuple[nn.Module, int]:
    """Figure 5."""
    return Branches(
        nn.Sequential(_avg_pool(), conv_block(in_channels, c(128), 1)),
        conv_block(in_channels, c(384), 1),
        nn.Sequential(
            conv_block(in_channels, c(192), 1), conv_block(c(192), c(224), (1, 7)), conv_block(c(224), c(256), (7, 1))
        ),
        nn.Sequential(
            conv_block(in_channels, c(192), 1),
            conv_block(c(192), c(192), (1, 7)),
            conv_block(c(192), c(224), (7, 1)),
            conv_block(c(224), c(224), (1, 7)),
            conv_block(c(224), c(256), (7, 1)),
        ),
    ), c(128) + c(384) + 2 * c(256)


def reduction_b(in_channels: int, c: Scale) -> tuple[nn.Module, int]:
    """Figure 8; halves the feature map."""
    return Branches(
        _pool(),
        nn.Sequential(conv_block(in_channels, c(192), 1), conv_block(c(192), c(192), 3, 2)),
        nn.Sequential(
            conv_block(in_channels, c(256), 1),
            conv_block(c(256), c(256), (1, 7)),
            conv_block(c(256), c(320), (7, 1)),
            conv_block(c(320), c(320), 3, 2),
        ),
    ), in_channels + c(192) + c(320)


def inception_c(in_channels: int, c: Scale) -> tuple[nn.Module, int]:
    """Figure 6."""

    def split(channels: int) -> Branches:
        return Branches(conv_block(channels, c(256), (1, 3)), conv_block(channels, c(256), (3, 1)))

    return Branches(
        nn.Sequential(_avg_pool(), conv_block(in_channels, c(256), 1)),
        conv_block(in_channels, c(256), 1),
        nn.Sequential(conv_block(in_channels, c(384), 1), split(c(384))),
        nn.Sequential(
            conv_block(in_channels, c(384), 1),
            conv_block(c(384), c(448), (1, 3)),
            conv_block(c(448), c(512), (3, 1)),
            split(c(512)),
        ),
    ), 6 * c(256)


class InceptionV4(nn.Module):
    """A reduced Inception-v4 with a regression head.

    Inception-v4 (Szegedy, Ioffe, Vanhoucke & Alemi 2017, "Inception-v4, Inception-ResNet and
    the Impact of Residual Connections on Learning", AAAI): a stem, 4 Inception-A blocks,
    Reduction-A, 7 Inception-B blocks, Reduction-B, 3 Inception-C blocks (convolutions with
    BatchNorm and ReLU), then average pooling, dropout and the output layer. Hezaveh, Perreault
    Levasseur & Marshall (2017, Nature 548, 555, Methods) used an Inception-v4-like network as
    one member of their four-network ensemble.

    Adapted here: ``blocks`` gives the numbers of Inception-A, -B and -C blocks (default
    ``(1, 1, 1)``; the paper's ``(4, 7, 3)`` is allowed); ``in_channels`` input channels (1 for
    a single-band image) plus optional coordinate channels; any image size of at least 32
    pixels: "same" padding everywhere (feature maps of ``ceil(n / stride)`` pixels), and the
    first convolution has stride 2 when the short image side is >= 128 pixels (stride 1 below),
    so the last feature map keeps at least 4 pixels along the short side; position-preserving
    head that pools to a 4x4 grid, flattens it, applies dropout (probability ``dropout``) and
    the linear output layer. All channel counts are multiplied by ``width``.
    """

    def __init__(
        self,
        num_outputs: int,
        image_size: tuple[int, int] | int,
        in_channels: int = 1,
        dropout: float = 0.0,
        *,
        blocks: tuple[int, int, int] = (1, 1, 1),
        width: float = 1.0,
        coord_channels: bool = True,
    ) -> None:
        super().__init__()
        stride = stem_stride(as_image_size(image_size), later_downsampling=16, min_feature=4, max_stride=2)
        self.coords, channels = coord_input(in_channels, coord_channels)

        def c(n: int) -> int:
            return scale_channels(n, width)

        if len(blocks) != 3 or min(blocks) < 0:
            raise UserError(f"blocks must be three non-negative counts (Inception-A, -B, -C), got {blocks}")
        n_a, n_b, n_c = blocks
        module, channels = stem(channels, c, stride)
        layers: list[nn.Module] = [module]
        for build in [*[inception_a] * n_a, reduction_a, *[inception_b] * n_b, reduction_b, *[inception_c] * n_c]:
            module, channels = build(channels, c)
            layers.append(module)
        self.features = nn.Sequential(*layers)
        self.head = RegressionHead(channels, num_outputs, grid=4, dropout=dropout)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` images to ``(B, num_outputs)`` outputs."""
        return self.head(self.features(self.coords(x)))
