"""The layout AlexNet v2 and OverFeat share: five ReLU convolutions, three poolings, a fully
connected regression head (Hezaveh, Perreault Levasseur & Marshall 2017 used both)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from lenscnn.models.layers import (
    RegressionHead,
    as_image_size,
    conv_block,
    coord_input,
    init_weights,
    scale_channels,
    stem_stride,
)


def five_conv_features(
    in_channels: int, channels: tuple[int, ...], stride: int, pool: Callable[[], nn.Module]
) -> nn.Sequential:
    """A ``2 stride + 3`` pixel stem with ``stride``, pool, 5x5, pool, three 3x3, pool; five ReLU
    convolutions with ``channels`` outputs, no BatchNorm."""
    c1, c2, c3, c4, c5 = channels
    return nn.Sequential(
        conv_block(in_channels, c1, 2 * stride + 3, stride, batch_norm=False),
        pool(),
        conv_block(c1, c2, 5, batch_norm=False),
        pool(),
        conv_block(c2, c3, 3, batch_norm=False),
        conv_block(c3, c4, 3, batch_norm=False),
        conv_block(c4, c5, 3, batch_norm=False),
        pool(),
    )


class FiveConvNet(nn.Module):
    """Five-convolution network with a position-preserving fully connected head.

    Subclasses set :attr:`CHANNELS` (five convolution widths), :attr:`HIDDEN` (two fully
    connected layers) and :meth:`pool`. Any image size of at least 32 pixels: the first layer
    has stride 4 and an 11x11 kernel when the short image side is >= 192 pixels, stride 2 and
    7x7 from 96 pixels and stride 1 and 5x5 below, so the last feature map keeps at least about
    6 pixels along the short side; the head pools to a 6x6 grid and flattens it; dropout
    (probability ``dropout``) on the inputs of the fully connected layers; all channel and unit
    counts multiplied by ``width``; ``in_channels`` input channels plus optional coordinate channels.
    """

    CHANNELS: tuple[int, int, int, int, int]
    HIDDEN: tuple[int, int]

    @staticmethod
    def pool() -> nn.Module:
        raise NotImplementedError

    def __init__(
        self,
        num_outputs: int,
        image_size: tuple[int, int] | int,
        in_channels: int = 1,
        dropout: float = 0.0,
        *,
        width: float = 1.0,
        coord_channels: bool = True,
    ) -> None:
        super().__init__()
        stride = stem_stride(as_image_size(image_size), later_downsampling=8, min_feature=6, max_stride=4)
        self.coords, channels = coord_input(in_channels, coord_channels)
        widths = tuple(scale_channels(c, width) for c in self.CHANNELS)
        self.features = five_conv_features(channels, widths, stride, self.pool)
        hidden = tuple(scale_channels(c, width) for c in self.HIDDEN)
        self.head = RegressionHead(widths[-1], num_outputs, grid=6, hidden=hidden, dropout=dropout)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` images to ``(B, num_outputs)`` outputs."""
        return self.head(self.features(self.coords(x)))
