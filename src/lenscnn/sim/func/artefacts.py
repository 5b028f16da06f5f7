"""What a detector and the sky add to an image: sky residuals, cosmic rays, hot pixels, masks.

Pure, batched functions. Random layouts (where a cosmic ray lands, how long it is) are pure
functions of a per-image int64 seed and a counter, through :func:`counter_uniform`, like the
Gaussian noise: the same on every device and in every chunking, and nothing to store.
Coordinates as :func:`lenscnn.sim.func.grid.pixel_grid`: pixel ``(i, j)`` is row ``i``, column ``j``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lenscnn.sim.func.noise import counter_uniform

#: Uniform deviates used per hit (start x, start y, angle, length, amplitude).
DEVIATES_PER_HIT = 5


def sky_background(pedestal: Tensor, gradient_x: Tensor, gradient_y: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """A residual sky level ``pedestal + gradient_x x + gradient_y y`` [counts/s per pixel] on the
    pixel centres ``(x, y)`` [arcsec] ``(H, W)``; parameters ``(B, 1, 1)``, gradients in counts/s per
    pixel per arcsec."""
    return pedestal + gradient_x * x + gradient_y * y


def _hit_deviates(seed: Tensor, slots: int, counter_offset: int, dtype: torch.dtype) -> Tensor:
    """``(B, slots, DEVIATES_PER_HIT)`` uniforms for ``slots`` hits per image; ``seed`` ``(B, 1, 1)``."""
    counter = torch.arange(slots * DEVIATES_PER_HIT, device=seed.device).view(slots, DEVIATES_PER_HIT)
    return counter_uniform(seed, counter + counter_offset, dtype)


def streaks(
    seed: Tensor,
    count: Tensor,
    slots: int,
    shape: tuple[int, int],
    length: tuple[float, float],
    amplitude: tuple[float, float],
    counter_offset: int,
) -> Tensor:
    """Cosmic-ray hits (or, with ``length = (0, 0)``, hot pixels): ``(B, H, W)`` counts/s per pixel.

    Image ``b`` gets ``count[b]`` (``(B,)``, at most ``slots``) straight tracks, each starting at a
    uniformly random point of the image, at a uniform angle, ``length`` [pixels] long (uniform in
    the range; 0: one pixel) and of a constant per-track level drawn log-uniformly in ``amplitude``
    [counts/s per pixel, ``(B,)`` pairs or numbers]. Tracks are rasterised by sampling one point per
    pixel of length; where tracks overlap the brighter wins.
    """
    height, width = shape
    dtype = count.dtype
    u = _hit_deviates(seed, slots, counter_offset, dtype)  # (B, S, 5)
    n = count.shape[0]
    steps = math.ceil(length[1]) + 1
    track_length = length[0] + (length[1] - length[0]) * u[..., 3]  # (B, S)
    angle = math.pi * u[..., 2]
    t = torch.linspace(0.0, 1.0, steps, dtype=dtype, device=count.device)  # (T,)
    col = u[..., 0, None] * width - 0.5 + (track_length * torch.cos(angle))[..., None] * t
    row = u[..., 1, None] * height - 0.5 + (track_length * torch.sin(angle))[..., None] * t
    low, high = (torch.as_tensor(a, dtype=dtype, device=count.device).reshape(-1, 1) for a in amplitude)
    level = torch.exp(torch.log(low) + (torch.log(high) - torch.log(low)) * u[..., 4])  # (B, S)
    i, j = row.round().long(), col.round().long()
    active = torch.arange(slots, device=count.device) < count[:, None]  # (B, S)
    inside = (i >= 0) & (i < height) & (j >= 0) & (j < width) & active[..., None]
    values = torch.where(inside, level[..., None], 0.0).reshape(n, -1)
    index = (i.clamp(0, height - 1) * width + j.clamp(0, width - 1)).reshape(n, -1)
    out = torch.zeros(n, height * width, dtype=dtype, device=count.device)
    return out.scatter_reduce(1, index, values, reduce="amax").view(n, height, width)


def masked_disks(
    seed: Tensor, count: Tensor, slots: int, shape: tuple[int, int], radius: tuple[float, float], counter_offset: int
) -> Tensor:
    """Boolean masks ``(B, H, W)``: ``count[b]`` disks (at most ``slots``) of radius uniform in
    ``radius`` [pixels] at uniform positions in image ``b`` (bad regions, masked stars, chip gaps)."""
    height, width = shape
    dtype = count.dtype
    u = _hit_deviates(seed, slots, counter_offset, dtype)  # (B, S, 5)
    centre_row = (u[..., 1] * height - 0.5)[..., None, None]
    centre_col = (u[..., 0] * width - 0.5)[..., None, None]
    r = (radius[0] + (radius[1] - radius[0]) * u[..., 3])[..., None, None]
    rows = torch.arange(height, dtype=dtype, device=count.device)[:, None]
    cols = torch.arange(width, dtype=dtype, device=count.device)[None, :]
    inside = (rows - centre_row) ** 2 + (cols - centre_col) ** 2 <= r * r  # (B, S, H, W)
    active = (torch.arange(slots, device=count.device) < count[:, None])[..., None, None]
    return (inside & active).any(dim=1)
