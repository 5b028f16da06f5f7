"""Pixel grids in lenstronomy's convention.

Pixel (row ``i``, column ``j``) of an ``H x W`` image has its centre at
``x = (j - (W - 1) / 2) * pixel_scale``, ``y = (i - (H - 1) / 2) * pixel_scale`` [arcsec];
arrays are displayed with ``origin="lower"``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pixel_grid(
    height: int,
    width: int,
    pixel_scale: float,
    supersampling: int = 1,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Coordinates ``(x, y)`` [arcsec] of the (sub-)pixel centres, each ``(H*s, W*s)``.

    With ``supersampling = s`` each pixel is split into ``s x s`` sub-pixels whose centres
    are placed regularly inside it; averaging ``s x s`` blocks of a profile evaluated on
    this grid gives lenstronomy's supersampled pixel value.
    """
    offsets = (torch.arange(supersampling, dtype=torch.float64) + 0.5) / supersampling - 0.5

    def axis(n: int) -> Tensor:
        centres = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        return ((centres[:, None] + offsets[None, :]).reshape(-1) * pixel_scale).to(dtype)

    y, x = torch.meshgrid(axis(height), axis(width), indexing="ij")
    return x.contiguous().to(device), y.contiguous().to(device)


def downsample(image: Tensor, supersampling: int) -> Tensor:
    """Average ``s x s`` blocks of the last two axes (undo the supersampled grid)."""
    if supersampling == 1:
        return image
    *batch, h, w = image.shape
    s = supersampling
    return image.reshape(*batch, h // s, s, w // s, s).mean(dim=(-3, -1))
