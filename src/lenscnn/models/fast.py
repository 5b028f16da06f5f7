"""A small, fast CNN for CPU training (the quickstart default).

Built for throughput on a couple of CPU cores: a strided 5x5 stem halves the resolution
at once, so only few channels ever run at full resolution; channels double as the
resolution halves; the head flattens a small spatial grid instead of global-average
pooling, and the input carries coordinate channels, so the network knows *where* the
lens is (the centre targets need it).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lenscnn.models.layers import RegressionHead, as_image_size, conv_block, coord_input, scale_channels


class FastLensNet(nn.Module):
    """Strided CNN with coordinate channels and a flattened head.

    Args:
        num_outputs: network outputs (set by the loss: T, 2T or T + T(T+1)/2).
        image_size: ``(H, W)`` or an int.
        in_channels: image channels (1 for a single band).
        dropout: dropout in the head (also used for MC dropout).
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
        as_image_size(image_size)
        if len(blocks) != len(widths):
            raise ValueError(f"blocks ({len(blocks)}) and widths ({len(widths)}) need one entry per stage")
        widths = [scale_channels(w, width) for w in widths]
        self.coords, c = coord_input(in_channels, coord_channels)
        layers: list[nn.Module] = [conv_block(c, widths[0], 5, stride=2)]
        c = widths[0]
        for stage, (channels, extra) in enumerate(zip(widths, blocks, strict=True)):
            if stage > 0:
                layers.append(conv_block(c, channels, 3, stride=2))
                c = channels
            layers += [conv_block(c, c, 3) for _ in range(extra)]
        self.features = nn.Sequential(*layers)
        self.head = RegressionHead(c, num_outputs, head_grid, hidden=(scale_channels(hidden, width),), dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(self.coords(x)))
