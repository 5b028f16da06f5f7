"""A small, fast CNN for CPU training (the quickstart default).

Built for throughput on a couple of CPU cores: a strided 5x5 stem halves the resolution
at once, so only few channels ever run at full resolution; channels double as the
resolution halves; the head flattens a small spatial grid instead of global-average
pooling, and the input carries coordinate channels, so the network knows *where* the
lens is (the centre targets need it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def coordinate_channels(batch: int, height: int, width: int, like: Tensor) -> Tensor:
    """``(batch, 2, H, W)``: x and y of each pixel centre scaled to [-1, 1] (x along columns)."""
    ys = torch.linspace(-1.0, 1.0, height, dtype=like.dtype, device=like.device)
    xs = torch.linspace(-1.0, 1.0, width, dtype=like.dtype, device=like.device)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))
    return grid.unsqueeze(0).expand(batch, -1, -1, -1)


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class FastLensNet(nn.Module):
    """Strided CNN with coordinate channels and a flattened head.

    Args:
        num_outputs: network outputs (set by the loss: T, 2T or T + T(T+1)/2).
        image_size: ``(H, W)`` or an int.
        in_channels: image channels (1 for a single band).
        dropout: dropout before the last layer (also used for MC dropout).
        widths: channels after the stem and after each further stride-2 stage.
        blocks: extra stride-1 convolutions per stage (after the stem, the stages).
        head_grid: side of the spatial grid the head flattens.
        hidden: width of the fully connected layer.
        coord_channels: append x, y coordinate channels to the input.
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
        head_grid: int = 4,
        hidden: int = 256,
        coord_channels: bool = True,
        width: float = 1.0,
    ):
        super().__init__()
        widths = [max(4, round(w * width)) for w in widths]
        hidden = max(8, round(hidden * width))
        if len(blocks) != len(widths):
            raise ValueError(f"blocks ({len(blocks)}) and widths ({len(widths)}) need one entry per stage")
        self.coord_channels = coord_channels
        c = in_channels + (2 if coord_channels else 0)
        layers: list[nn.Module] = [conv_bn_relu(c, widths[0], stride=2, kernel=5)]
        c = widths[0]
        for stage, (width, extra) in enumerate(zip(widths, blocks, strict=True)):
            if stage > 0:
                layers.append(conv_bn_relu(c, width, stride=2))
                c = width
            layers += [conv_bn_relu(c, c) for _ in range(extra)]
        layers.append(nn.AdaptiveAvgPool2d(head_grid))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * head_grid * head_grid, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_outputs),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.coord_channels:
            x = torch.cat([x, coordinate_channels(x.shape[0], x.shape[-2], x.shape[-1], x)], dim=1)
        return self.head(self.features(x))
