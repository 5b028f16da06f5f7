"""OverFeat-like network, one of the four networks of Hezaveh, Perreault Levasseur & Marshall (2017)."""

from __future__ import annotations

from torch import Tensor, nn

from lenscnn.models.layers import (
    RegressionHead,
    as_image_size,
    coord_input,
    five_conv_features,
    init_weights,
    scale_channels,
    stem_stride,
)


class OverFeat(nn.Module):
    """The "fast" OverFeat feature extractor with a fully connected regression head.

    OverFeat (Sermanet et al. 2014, "OverFeat: Integrated Recognition, Localization and
    Detection using Convolutional Networks", ICLR; fast model, Table 1): five convolutions with
    96, 256, 512, 1024, 1024 channels (kernels 11, 5, 3, 3, 3; ReLU), 2x2 max-pooling after the
    first, second and fifth, then fully connected layers of 3072 and 4096 units with dropout.
    Hezaveh, Perreault Levasseur & Marshall (2017, Nature 548, 555, Methods) used an
    OverFeat-like network as one member of their four-network ensemble.

    Adapted here: ``in_channels`` input channels (1 for a single-band image) plus optional
    coordinate channels; any image size of at least 32 pixels: the first layer has the
    original's stride 4 and 11x11 kernel when the short image side is >= 192 pixels, stride 2
    and 7x7 from 96 pixels and stride 1 and 5x5 below, so the last feature map keeps at least
    about 6 pixels along the short side; all convolutions use "same" padding; dropout
    (probability ``dropout``) on the inputs of the fully connected layers; position-preserving
    head that pools to a 6x6 grid (the original's final map for 231-pixel inputs) and flattens
    it instead of classifying. All channel and unit counts are multiplied by ``width``.
    """

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
        widths = [scale_channels(c, width) for c in (96, 256, 512, 1024, 1024)]
        self.features = five_conv_features(channels, widths, stride, pool=lambda: nn.MaxPool2d(2, 2))
        hidden = (scale_channels(3072, width), scale_channels(4096, width))
        self.head = RegressionHead(widths[-1], num_outputs, grid=6, hidden=hidden, dropout=dropout)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` images to ``(B, num_outputs)`` outputs."""
        return self.head(self.features(self.coords(x)))
