"""A small, fast CNN for CPU training (the quickstart default).

Built for throughput on a couple of CPU cores: a strided stem reduces the resolution at
once (a 5x5 convolution of stride 2, or a patchifying ``k x k`` convolution of stride ``k`` that
maps each ``k x k`` patch to ``widths[0]`` features), so only few channels ever run at full
resolution; channels double as the resolution halves; the head flattens a small spatial grid instead of global-average
pooling, and the input carries coordinate channels, so the network knows *where* the
lens is (the centre targets need it).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lenscnn.errors import UserError
from lenscnn.models.layers import CoordConv2d, RegressionHead, as_image_size, conv_block, scale_channels


class FastLensNet(nn.Module):
    """Strided CNN with coordinate channels and a flattened head.

    Args:
        num_outputs: network outputs (set by the loss: T, 2T or T + T(T+1)/2).
        image_size: ``(H, W)`` or an int.
        in_channels: image channels (1 for a single band).
        dropout: dropout in the head (also used for MC dropout).
        widths: channels after the stem and after each further stride-2 stage.
        blocks: extra stride-1 convolutions per stage (after the stem, the stages).
        stem: ``(kernel, stride)`` of the first convolution: ``(5, 2)`` (same padding) or a patchifying
            ``(k, k)`` (no padding: one output per ``k x k`` patch; the image sides must be multiples of k).
        head_grid: side of the spatial grid the head flattens.
        hidden: width of the fully connected layer.
        coord_channels: append x, y coordinate channels to the input (of the stem: :class:`CoordConv2d`).
        width: multiplier of all channel counts and of ``hidden`` (for width sweeps).
    """

    def __init__(
        self,
        num_outputs: int,
        image_size: int | Sequence[int],
        in_channels: int = 1,
        dropout: float = 0.0,
        widths: Sequence[int] = (16, 32, 64, 128),
        blocks: Sequence[int] = (0, 1, 1, 0),
        stem: Sequence[int] = (5, 2),
        head_grid: int = 4,
        hidden: int = 256,
        coord_channels: bool = True,
        width: float = 1.0,
    ):
        super().__init__()
        size = as_image_size(image_size)
        if len(blocks) != len(widths):
            raise ValueError(f"blocks ({len(blocks)}) and widths ({len(widths)}) need one entry per stage")
        kernel, stride = (int(v) for v in stem)
        if kernel < 1 or stride < 1 or (stride > 1 and kernel < stride):
            raise UserError(f"model.net.stem must be [kernel, stride] with kernel >= stride >= 1, got {list(stem)}")
        if kernel == stride and any(side % stride for side in size):
            raise UserError(
                f"model.net.stem={list(stem)} patchifies: the image sides {size} must be multiples of {stride} "
                f"(or choose model.net.stem=[5,2])"
            )
        widths = [scale_channels(w, width) for w in widths]
        c, conv = (in_channels + 2, CoordConv2d) if coord_channels else (in_channels, nn.Conv2d)
        layers: list[nn.Module] = [conv_block(c, widths[0], kernel, stride, padding=kernel != stride, conv=conv)]
        c = widths[0]
        for stage, (channels, extra) in enumerate(zip(widths, blocks, strict=True)):
            if stage > 0:
                layers.append(conv_block(c, channels, 3, stride=2))
                c = channels
            layers += [conv_block(c, c, 3) for _ in range(extra)]
        self.features = nn.Sequential(*layers)
        self.head = RegressionHead(c, num_outputs, head_grid, hidden=(scale_channels(hidden, width),), dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
