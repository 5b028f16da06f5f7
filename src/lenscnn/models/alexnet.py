"""AlexNet-v2-like network, one of the four networks of Hezaveh, Perreault Levasseur & Marshall (2017)."""

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


class AlexNetV2(nn.Module):
    """AlexNet v2 with a fully connected regression head.

    AlexNet v2 is the single-tower AlexNet of Krizhevsky (2014, "One weird trick for
    parallelizing convolutional neural networks", arXiv:1404.5997), in the layout of TF-slim's
    ``alexnet_v2``: five convolutions with 64, 192, 384, 384, 256 channels (kernels 11, 5, 3, 3, 3;
    first stride 4; ReLU), overlapping 3x3 stride-2 max-pooling after the first, second and
    fifth, then two fully connected layers of 4096 units with dropout. Hezaveh, Perreault
    Levasseur & Marshall (2017, Nature 548, 555, Methods) used an AlexNet-v2-like network as one
    member of their four-network ensemble.

    Adapted here: ``in_channels`` input channels (1 for a single-band image) plus optional
    coordinate channels; any image size of at least 32 pixels: the first layer has the
    original's stride 4 and 11x11 kernel when the short image side is >= 192 pixels, stride 2
    and 7x7 from 96 pixels and stride 1 and 5x5 below, so the last feature map keeps at least
    about 6 pixels along the short side; "same" padding in convolutions and pools; dropout
    (probability ``dropout``) on the inputs of the fully connected layers; position-preserving
    head that pools to a 6x6 grid (as torchvision's AlexNet) and flattens it instead of
    classifying. All channel and unit counts are multiplied by ``width``.
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
        widths = [scale_channels(c, width) for c in (64, 192, 384, 384, 256)]
        self.features = five_conv_features(channels, widths, stride, pool=lambda: nn.MaxPool2d(3, 2, padding=1))
        hidden = (scale_channels(4096, width), scale_channels(4096, width))
        self.head = RegressionHead(widths[-1], num_outputs, grid=6, hidden=hidden, dropout=dropout)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` images to ``(B, num_outputs)`` outputs."""
        return self.head(self.features(self.coords(x)))
