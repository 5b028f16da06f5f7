"""Deflection of a circular multipole perturbation (pure, batched, differentiable).

lenstronomy's ``MULTIPOLE`` profile (``Multipole``; Xu et al. 2013, arXiv:1307.4220, appendix B3).
All angles are in arcsec. Inputs broadcast against each other: typically ``x, y`` are
image-plane grids of shape ``(H, W)`` and the parameters have shape ``(B, 1, 1)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Smallest radius [arcsec] in the logarithm of the ``m = 1`` multipole (lenstronomy's floor).
M1_MIN_RADIUS = 1e-6

#: Floor on ``r^2`` [arcsec^2] when normalising the direction ``(x, y) / r``; at the centre itself
#: the polar angle is 0, as numpy's ``arctan2(0, 0)`` in lenstronomy.
_TINY_RADIUS2 = 1e-30


def multipole_deflection(
    x: Tensor,
    y: Tensor,
    m: int,
    a_m: Tensor,
    phi_m: Tensor,
    center_x: Tensor | float = 0.0,
    center_y: Tensor | float = 0.0,
    r_E: Tensor | float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Deflection ``(alpha_x, alpha_y)`` [arcsec] of a multipole of order ``m`` about ``(center_x, center_y)``.

    Args:
        x, y: image-plane positions [arcsec].
        m: multipole order, an integer ``>= 1`` (e.g. 3, or 4 for discy/boxy isodensity contours).
        a_m: multipole strength [arcsec] (for ``m >= 2`` the deflection has modulus ``~ a_m``
            everywhere; lenstronomy's convention, ``a_m / theta_E`` is the relative amplitude).
        phi_m: orientation [rad], counter-clockwise from the +x axis.
        center_x, center_y: centre [arcsec].
        r_E: normalising radius [arcsec] of the logarithm in the ``m = 1`` potential; unused for ``m >= 2``.

    In polar coordinates ``(r, theta)`` about the centre the potential is
    ``psi = r a_m / (1 - m^2) cos(m (theta - phi_m))`` for ``m >= 2`` and
    ``psi = r log(r / r_E) a_m / 2 cos(theta - phi_m)`` for ``m = 1`` (``r`` floored at
    :data:`M1_MIN_RADIUS`). The deflection for ``m >= 2`` depends on ``theta`` only; at the
    centre ``theta = 0``, as in lenstronomy, so the deflection is finite there.
    """
    if m < 1:
        raise ValueError(f"multipole order m must be an integer >= 1, got {m}")
    dx, dy = x - center_x, y - center_y
    r2 = dx * dx + dy * dy
    r = torch.sqrt(r2.clamp(min=_TINY_RADIUS2))
    at_centre = r2 == 0
    cos_t = torch.where(at_centre, 1.0, dx / r)
    sin_t = torch.where(at_centre, 0.0, dy / r)

    if m == 1:
        cos_delta = cos_t * torch.cos(phi_m) + sin_t * torch.sin(phi_m)  # cos(theta - phi_m)
        log_r = torch.log(r.clamp(min=M1_MIN_RADIUS) / r_E)
        half_a = 0.5 * a_m
        return (
            half_a * (torch.cos(phi_m) * log_r + cos_delta * cos_t),
            half_a * (torch.sin(phi_m) * log_r + cos_delta * sin_t),
        )

    cos_mt, sin_mt = cos_t, sin_t  # cos(m theta), sin(m theta) by m - 1 rotations by theta
    for _ in range(m - 1):
        cos_mt, sin_mt = cos_mt * cos_t - sin_mt * sin_t, sin_mt * cos_t + cos_mt * sin_t
    cos_mp, sin_mp = torch.cos(m * phi_m), torch.sin(m * phi_m)
    cos_delta = cos_mt * cos_mp + sin_mt * sin_mp  # cos(m (theta - phi_m))
    m_sin_delta = m * (sin_mt * cos_mp - cos_mt * sin_mp)  # m sin(m (theta - phi_m))
    amplitude = a_m / (1 - m * m)
    return (
        amplitude * (cos_t * cos_delta + sin_t * m_sin_delta),
        amplitude * (sin_t * cos_delta - cos_t * m_sin_delta),
    )
