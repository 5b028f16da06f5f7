"""Ensai's own 16-convolution network, one of the four networks of Hezaveh, Perreault Levasseur & Marshall (2017)."""

from __future__ import annotations

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

STAGE_CHANNELS = (32, 64, 128, 256)
CONVS_PER_STAGE = 4


class EnsaiNet(nn.Module):
    """A plain network of 16 convolutional layers followed by fully connected layers.

    Hezaveh, Perreault Levasseur & Marshall (2017, "Fast automated analysis of strong
    gravitational lenses with convolutional neural networks", Nature 548, 555, Methods) built an
    ensemble of four networks: OverFeat-like, AlexNet-v2-like, Inception-v4-like and a network
    of their own with 16 convolutional layers. This class is that fourth kind of network: 16
    3x3 convolutions (ReLU, optional BatchNorm) in four stages of four, with 32, 64, 128, 256
    channels; every stage after the first starts with a stride-2 convolution. The head pools
    the last feature map to a 4x4 grid, flattens it and applies a hidden fully connected layer
    of 1024 units and the linear output layer.

    Adapted here (the paper gives the layer count, not every layer): ``in_channels`` input
    channels (1 for a single-band image) plus optional coordinate channels; any image size of at
    least 32 pixels: the first convolution has stride 2 when the short image side is >= 96
    pixels (stride 1 below), so the last feature map keeps at least 6 pixels along the short
    side; dropout (probability ``dropout``) on the inputs of the fully connected layers;
    position-preserving head. All channel and unit counts are multiplied by ``width``.
    """

    def __init__(
        self,
        num_outputs: int,
        image_size: tuple[int, int] | int,
        in_channels: int = 1,
        dropout: float = 0.0,
        *,
        width: float = 1.0,
        batch_norm: bool = True,
        coord_channels: bool = True,
    ) -> None:
        super().__init__()
        first_stride = stem_stride(as_image_size(image_size), later_downsampling=8, min_feature=6, max_stride=2)
        self.coords, channels = coord_input(in_channels, coord_channels)
        layers: list[nn.Module] = []
        for stage, stage_channels in enumerate(STAGE_CHANNELS):
            out_channels = scale_channels(stage_channels, width)
            for i in range(CONVS_PER_STAGE):
                stride = (first_stride if stage == 0 else 2) if i == 0 else 1
                layers.append(conv_block(channels, out_channels, 3, stride, batch_norm=batch_norm))
                channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = RegressionHead(
            channels, num_outputs, grid=4, hidden=(scale_channels(1024, width),), dropout=dropout
        )
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` images to ``(B, num_outputs)`` outputs."""
        return self.head(self.features(self.coords(x)))
