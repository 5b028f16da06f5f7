"""Einstein radius of a singular isothermal sphere from its velocity dispersion."""

from __future__ import annotations

import math

import torch
from torch import Tensor

SPEED_OF_LIGHT_KMS = 299_792.458
ARCSEC_PER_RADIAN = 180.0 / math.pi * 3600.0


def sis_einstein_radius(sigma_v: Tensor, distance_ratio: Tensor) -> Tensor:
    """``theta_E = 4 pi (sigma_v / c)^2 D_ls / D_s`` in arcsec.

    Args:
        sigma_v: line-of-sight velocity dispersion [km/s].
        distance_ratio: ``D_ls / D_s``, ratio of angular-diameter distances lens-source
            and observer-source (dimensionless).
    """
    return 4.0 * math.pi * (sigma_v / SPEED_OF_LIGHT_KMS) ** 2 * distance_ratio * ARCSEC_PER_RADIAN


def bilinear_lookup(
    table: Tensor, u: Tensor, v: Tensor, u_range: tuple[float, float], v_range: tuple[float, float]
) -> Tensor:
    """Bilinear interpolation of ``table[i, j]`` sampled on regular grids of ``u`` (rows) and ``v`` (columns).

    Points outside the grid are clamped to its edges; a range of zero width (a fixed
    value, whose table rows or columns are all equal) maps to the first row or column.
    Pure tensor code, so a table built once on the host is evaluated on the device the
    samples live on.
    """
    nu, nv = table.shape

    def index(t: Tensor, t_range: tuple[float, float], n: int) -> Tensor:
        width = t_range[1] - t_range[0]
        if width == 0:
            return torch.zeros_like(t)
        return ((t - t_range[0]) / width * (n - 1)).clamp(0, n - 1)

    fu, fv = index(u, u_range, nu), index(v, v_range, nv)
    i0 = fu.floor().long().clamp(max=nu - 2)
    j0 = fv.floor().long().clamp(max=nv - 2)
    wu, wv = fu - i0, fv - j0
    t00, t01 = table[i0, j0], table[i0, j0 + 1]
    t10, t11 = table[i0 + 1, j0], table[i0 + 1, j0 + 1]
    return (1 - wu) * ((1 - wv) * t00 + wv * t01) + wu * ((1 - wv) * t10 + wv * t11)
