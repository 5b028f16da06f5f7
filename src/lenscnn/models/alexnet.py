"""AlexNet-v2-like network, one of the four networks of Hezaveh, Perreault Levasseur & Marshall (2017)."""

from __future__ import annotations

from torch import nn

from lenscnn.models.five_conv import FiveConvNet


class AlexNetV2(FiveConvNet):
    """AlexNet v2 with a fully connected regression head.

    AlexNet v2 is the single-tower AlexNet of Krizhevsky (2014, "One weird trick for
    parallelizing convolutional neural networks", arXiv:1404.5997), in the layout of TF-slim's
    ``alexnet_v2``: five convolutions with 64, 192, 384, 384, 256 channels (kernels 11, 5, 3, 3, 3;
    first stride 4; ReLU), overlapping 3x3 stride-2 max-pooling after the first, second and
    fifth, then two fully connected layers of 4096 units with dropout. Hezaveh, Perreault
    Levasseur & Marshall (2017, Nature 548, 555, Methods) used an AlexNet-v2-like network as one
    member of their four-network ensemble.

    Adapted as :class:`FiveConvNet` describes: the stem's stride follows the image size, "same"
    padding in convolutions and pools, and the head pools to a 6x6 grid (as torchvision's
    AlexNet) and flattens it instead of classifying.
    """

    CHANNELS = (64, 192, 384, 384, 256)
    HIDDEN = (4096, 4096)

    @staticmethod
    def pool() -> nn.Module:
        return nn.MaxPool2d(3, 2, padding=1)
