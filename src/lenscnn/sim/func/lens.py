"""Deflection angles of the lens mass models (pure, batched, differentiable).

All angles are in arcsec. Inputs broadcast against each other: typically ``x, y`` are
image-plane grids of shape ``(H, W)`` and the parameters have shape ``(B, 1, 1)``.
Conventions follow lenstronomy's ``SIE`` and ``SHEAR`` profiles exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lenscnn.sim.func.ellipticity import ellipticity_to_phi_q

#: Core radius [arcsec] of lenstronomy's SIE (``SIE._s_scale``); it keeps the deflection
#: finite and differentiable at the lens centre and is far below any pixel scale.
SIE_CORE = 1e-10

#: Below this value of ``sqrt(1 - q**2)`` the deflection uses a Taylor series in it, so the
#: profile stays accurate (and differentiable) as the lens becomes round (``q -> 1``).
_ROUND_LIMIT = 1e-2


def _odd_ratio(k: Tensor, u: Tensor, hyperbolic: bool) -> Tensor:
    """``atan(k u) / k`` (or ``atanh`` when ``hyperbolic``), accurate for ``k -> 0`` (``|k u| < 1``).

    Below :data:`_ROUND_LIMIT` the Taylor series ``u (1 -+ (k u)^2 / 3 + (k u)^4 / 5)`` is used.
    """
    small = k < _ROUND_LIMIT
    k_safe = torch.where(small, torch.ones_like(k), k)
    ku2 = (k * u) ** 2
    sign = 1.0 if hyperbolic else -1.0
    series = u * (1.0 + sign * ku2 / 3.0 + ku2 * ku2 / 5.0)
    exact = (torch.atanh if hyperbolic else torch.atan)(k_safe * u) / k_safe
    return torch.where(small, series, exact)


def sie_deflection(
    x: Tensor,
    y: Tensor,
    theta_E: Tensor,
    e1: Tensor,
    e2: Tensor,
    center_x: Tensor | float = 0.0,
    center_y: Tensor | float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Deflection ``(alpha_x, alpha_y)`` [arcsec] of a singular isothermal ellipsoid.

    Args:
        x, y: image-plane positions [arcsec].
        theta_E: Einstein radius [arcsec], lenstronomy's convention (the radius of the
            circle with the same area as the critical curve, i.e. the product-average
            of the major and minor axes).
        e1, e2: complex ellipticity of the convergence (see ``ellipticity``).
        center_x, center_y: lens centre [arcsec].

    The convergence is ``kappa = b / (2 sqrt(q^2 (s^2 + x'^2) + y'^2))`` in the frame
    ``(x', y')`` aligned with the major axis, with ``b = theta_E sqrt(q)`` and a core
    ``s = SIE_CORE / sqrt(q)`` (Kormann et al. 1994; Keeton 2001). The deflection stays
    finite at the centre and accurate as ``q -> 1``.
    """
    phi, q = ellipticity_to_phi_q(e1, e2)
    cos_phi, sin_phi = torch.cos(phi), torch.sin(phi)
    dx, dy = x - center_x, y - center_y
    x_major = cos_phi * dx + sin_phi * dy
    y_major = -sin_phi * dx + cos_phi * dy

    b = theta_E * torch.sqrt(q)
    s = SIE_CORE / torch.sqrt(q)
    q2 = q * q
    psi = torch.sqrt(q2 * (s * s + x_major * x_major) + y_major * y_major)
    k = torch.sqrt((1.0 - q2).clamp(min=1e-30))  # clamp > 0: finite gradient for round lenses
    alpha_major = b * _odd_ratio(k, x_major / (psi + s), hyperbolic=False)
    alpha_minor = b * _odd_ratio(k, y_major / (psi + q2 * s), hyperbolic=True)
    return (
        cos_phi * alpha_major - sin_phi * alpha_minor,
        sin_phi * alpha_major + cos_phi * alpha_minor,
    )


def shear_deflection(
    x: Tensor,
    y: Tensor,
    gamma1: Tensor,
    gamma2: Tensor,
    ra_0: Tensor | float = 0.0,
    dec_0: Tensor | float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Deflection [arcsec] of an external shear ``(gamma1, gamma2)`` about ``(ra_0, dec_0)``.

    lenstronomy's ``SHEAR``: potential ``psi = gamma1 (x^2 - y^2) / 2 + gamma2 x y``.
    """
    dx, dy = x - ra_0, y - dec_0
    return gamma1 * dx + gamma2 * dy, gamma2 * dx - gamma1 * dy
