"""Small building blocks shared by the backbones.

Every backbone maps ``(B, in_channels, H, W)`` images to ``(B, num_outputs)`` regression outputs.
Lens-centre parameters need to know *where* things are in the image, so two mechanisms keep
position information up to the output layer:

- :class:`CoordChannels` appends the pixel coordinates as two extra input channels (CoordConv,
  Liu et al. 2018, "An intriguing failing of convolutional neural networks and the CoordConv
  solution"), so even translation-equivariant features can carry absolute position;
- :class:`RegressionHead` pools the last feature map to a small grid (not to 1x1) and flattens
  it into fully connected layers, so the head sees which part of the image each feature came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from lenscnn.errors import UserError

MIN_IMAGE_SIZE = 32


def as_image_size(image_size: tuple[int, int] | Sequence[int] | int) -> tuple[int, int]:
    """``(H, W)`` from an int (square image) or a pair; both sides must be at least 32 pixels."""
    size = tuple(int(s) for s in image_size) if isinstance(image_size, Iterable) else (int(image_size),) * 2
    if len(size) != 2 or min(size) < MIN_IMAGE_SIZE:
        raise UserError(
            f"image_size must be an int or (height, width) of at least {MIN_IMAGE_SIZE} pixels, got {image_size}"
        )
    return size


def scale_channels(channels: int, width: float) -> int:
    """``channels`` scaled by the width multiplier ``width`` (at least one channel)."""
    if width <= 0:
        raise UserError(f"width must be positive, got {width}")
    return max(1, round(channels * width))


def stem_stride(image_size: tuple[int, int], later_downsampling: int, min_feature: int, max_stride: int) -> int:
    """Stride of a network's first layer, chosen from the image size.

    The largest power of two ``<= max_stride`` such that after the first layer and the
    network's ``later_downsampling`` the last feature map still has at least ``min_feature``
    pixels along the short image side: large images are reduced early as in the original
    ImageNet networks, small images keep their resolution.
    """
    stride = max_stride
    while stride > 1 and min(image_size) // (stride * later_downsampling) < min_feature:
        stride //= 2
    return stride


def conv_block(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int = 1,
    *,
    batch_norm: bool = True,
    relu: bool = True,
    padding: bool = True,
    conv: type[nn.Conv2d] = nn.Conv2d,
) -> nn.Sequential:
    """Convolution with "same" padding (output size ``ceil(input / stride)``; without ``padding``, the valid
    positions only), then BatchNorm and ReLU. ``conv`` is the convolution's class (e.g. :class:`CoordConv2d`)."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    pad = (kh // 2, kw // 2) if padding else (0, 0)
    layers: list[nn.Module] = [conv(in_channels, out_channels, (kh, kw), stride, padding=pad, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def fold_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` (in eval mode) with every ``BatchNorm2d`` that follows a convolution in an ``nn.Sequential``
    folded into that convolution's weights and bias (PyTorch's ``fuse_conv_bn_eval``), in place: the same
    outputs up to float rounding for ~15% less time on a CPU. For inference only: the batch statistics are
    gone, so the module cannot be trained as before."""
    if module.training:
        raise ValueError("fold_batch_norm folds the running statistics of a model in eval mode")
    for block in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for k in range(len(block) - 1):
            conv, norm = block[k], block[k + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                block[k], block[k + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity().eval()
    return module


def coordinate_planes(like: Tensor) -> Tensor:
    """The coordinate channels ``(1, 2, H, W)`` of images ``like`` ``(B, C, H, W)`` (their dtype and device):
    ``x`` runs along the columns (first column -1, last column +1) and ``y`` along the rows (first row -1,
    last row +1), the orientation of the pixel grid in ``docs/architecture.md`` (row ``i`` has ``y``
    increasing with ``i``)."""
    h, w = like.shape[-2:]
    ys = torch.linspace(-1.0, 1.0, h, dtype=like.dtype, device=like.device)
    xs = torch.linspace(-1.0, 1.0, w, dtype=like.dtype, device=like.device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y))[None]


class CoordChannels(nn.Module):
    """Append the two coordinate channels ``x, y`` in ``[-1, 1]`` of :func:`coordinate_planes` to the input
    (CoordConv). Works for any image size: ``(B, C, H, W) -> (B, C + 2, H, W)``."""

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        return torch.cat((x, coordinate_planes(x).expand(b, 2, h, w)), dim=1)


class CoordConv2d(nn.Conv2d):
    """A convolution of the image with the two coordinate channels of :class:`CoordChannels` appended, with
    the same parameters (``in_channels`` counts the two), computed as the convolution of the image plus
    the convolution of the coordinate planes alone: a position-dependent bias, the same for every image
    of the batch. The coordinate channels are never concatenated to each image, so the first layer reads
    one channel per pixel instead of three. Equal to :class:`CoordChannels` then ``nn.Conv2d`` up to the
    order of the floating-point sums. Input ``(B, in_channels - 2, H, W)``."""

    def forward(self, x: Tensor) -> Tensor:
        weight_image, weight_coords = self.weight[:, :-2], self.weight[:, -2:]
        out = self._conv_forward(x, weight_image, self.bias)
        return out + self._conv_forward(coordinate_planes(x), weight_coords, None)


def coord_input(in_channels: int, coord_channels: bool) -> tuple[nn.Module, int]:
    """The input module of a backbone and the number of channels its first convolution receives."""
    if coord_channels:
        return CoordChannels(), in_channels + 2
    return nn.Identity(), in_channels


class GridPool(nn.AdaptiveAvgPool2d):
    """Adaptive average pooling to ``output_size`` that passes a feature map already of that size unchanged
    (the same values: each output averages one input pixel), skipping the pooling's forward and backward."""

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) == tuple(self.output_size):
            return x
        return super().forward(x)


class RegressionHead(nn.Sequential):
    """Position-preserving head: adaptive average pooling to ``grid``, flatten, fully connected layers.

    ``hidden`` lists the widths of the hidden layers (ReLU after each); the last layer is linear
    with ``num_outputs`` outputs and no activation. Dropout with probability ``dropout`` acts on
    the input of every fully connected layer. Pooling to a fixed grid makes the number of
    flattened features ``channels * grid_h * grid_w`` independent of the image size.
    """

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        grid: tuple[int, int] | int,
        hidden: Sequence[int] = (),
        dropout: float = 0.0,
    ) -> None:
        gh, gw = (grid, grid) if isinstance(grid, int) else grid
        layers: list[nn.Module] = [GridPool((gh, gw)), nn.Flatten()]
        features = in_channels * gh * gw
        for width in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(features, width), nn.ReLU(inplace=True)]
            features = width
        layers += [nn.Dropout(dropout), nn.Linear(features, num_outputs)]
        super().__init__(*layers)


def init_weights(module: nn.Module) -> None:
    """He initialisation for convolutions (``fan_out``, ReLU), unit scale and zero shift for BatchNorm."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
