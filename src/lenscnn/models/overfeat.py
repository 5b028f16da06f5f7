"""OverFeat-like network, one of the four networks of Hezaveh, Perreault Levasseur & Marshall (2017)."""

from __future__ import annotations

from torch import nn

from lenscnn.models.five_conv import FiveConvNet


class OverFeat(FiveConvNet):
    """The "fast" OverFeat feature extractor with a fully connected regression head.

    OverFeat (Sermanet et al. 2014, "OverFeat: Integrated Recognition, Localization and
    Detection using Convolutional Networks", ICLR; fast model, Table 1): five convolutions with
    96, 256, 512, 1024, 1024 channels (kernels 11, 5, 3, 3, 3; ReLU), 2x2 max-pooling after the
    first, second and fifth, then fully connected layers of 3072 and 4096 units with dropout.
    Hezaveh, Perreault Levasseur & Marshall (2017, Nature 548, 555, Methods) used an
    OverFeat-like network as one member of their four-network ensemble.

    Adapted as :class:`FiveConvNet` describes: the stem's stride follows the image size, "same"
    padding in the convolutions, and the head pools to a 6x6 grid (the original's final map for
    231-pixel inputs) and flattens it instead of classifying.
    """

    CHANNELS = (96, 256, 512, 1024, 1024)
    HIDDEN = (3072, 4096)

    @staticmethod
    def pool() -> nn.Module:
        return nn.MaxPool2d(2, 2)
