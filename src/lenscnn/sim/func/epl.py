"""Deflection of the elliptical power-law (EPL) mass profile (pure, batched, differentiable).

lenstronomy's ``EPL`` profile (Tessore & Metcalf 2015, arXiv:1507.01819), evaluated with the
hypergeometric series of their eq. (23) truncated at a fixed number of terms, so the cost is
data-independent and the function compiles, runs on any device and has exact gradients.

All angles are in arcsec. Inputs broadcast against each other: typically ``x, y`` are
image-plane grids of shape ``(H, W)`` and the parameters have shape ``(B, 1, 1)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lenscnn.sim.func.ellipticity import ellipticity_to_phi_q

#: Smallest elliptical radius ``R = sqrt(q^2 x'^2 + y'^2)`` [arcsec], lenstronomy's floor in
#: ``EPLMajorAxis.derivatives``: it keeps the deflection finite at the lens centre, where it is 0.
EPL_MIN_RADIUS = 1e-9


def epl_terms(q_min: float, tolerance: float = 1e-10) -> int:
    """Number of terms of the angular series for a relative truncation error below ``tolerance``.

    The ``n``-th term of the series ``Omega / e^{i phi} = sum_n a_n e^{2 i n phi}`` has
    ``|a_n| <= f^n`` with ``f = (1 - q) / (1 + q)`` (for slopes ``gamma < 3``), and the sum has
    modulus at least ``1 / (1 + f)``, so stopping after ``N`` terms changes the deflection by at
    most ``f^N / (1 - f) * (1 + f) = f^N / q`` of its modulus. The bound is largest at the
    smallest axis ratio; the returned ``N`` makes it at most ``tolerance`` for every ``q >= q_min``.
    It is conservative: the actual error is smaller by a factor ``~ N^{-(3 - gamma)}``.
    """
    if not 0.0 < q_min <= 1.0:
        raise ValueError(f"q_min must be in (0, 1], got {q_min}")
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
    f = (1.0 - q_min) / (1.0 + q_min)
    if f == 0.0:
        return 1
    return max(1, math.ceil(math.log(tolerance * q_min) / math.log(f)))


#: Default number of series terms: relative truncation error below 1e-10 for axis ratios
#: ``q >= 0.3`` (40 terms). Pass ``epl_terms(q_min)`` for flatter lenses or a looser tolerance.
EPL_TERMS = epl_terms(0.3)


def _series_coefficients(t: Tensor, f: Tensor, terms: int) -> Tensor:
    """Coefficients ``a_n = -f (2n - (2 - t)) / (2n + (2 - t)) a_{n-1}``, ``a_0 = 1``, stacked on a new last axis."""
    n = torch.arange(1, terms, dtype=t.dtype, device=t.device)
    t, f = t.unsqueeze(-1), f.unsqueeze(-1)
    ratios = -f * (2.0 * n - (2.0 - t)) / (2.0 * n + (2.0 - t))
    return torch.cat([ratios.new_ones((*ratios.shape[:-1], 1)), torch.cumprod(ratios, dim=-1)], dim=-1)


def epl_deflection(
    x: Tensor,
    y: Tensor,
    theta_E: Tensor,
    gamma: Tensor,
    e1: Tensor,
    e2: Tensor,
    center_x: Tensor | float = 0.0,
    center_y: Tensor | float = 0.0,
    terms: int = EPL_TERMS,
) -> tuple[Tensor, Tensor]:
    """Deflection ``(alpha_x, alpha_y)`` [arcsec] of an elliptical power-law mass profile.

    Args:
        x, y: image-plane positions [arcsec].
        theta_E: Einstein radius [arcsec], lenstronomy's convention (circularised, as for the SIE).
        gamma: logarithmic slope of the 3D density, ``rho ~ r^-gamma``; 2 is isothermal (the SIE).
        e1, e2: complex ellipticity of the convergence (see ``ellipticity``).
        center_x, center_y: lens centre [arcsec].
        terms: number of terms of the angular series, see :func:`epl_terms` (default: relative
            truncation error below 1e-10 for ``q >= 0.3``).

    In the frame ``(x', y')`` of the major axis the convergence is
    ``kappa = (2 - t) / 2 * (b / R)^t`` with ``R = sqrt(q^2 x'^2 + y'^2)``, ``t = gamma - 1`` and
    ``b = theta_E sqrt(q)``. With ``Z = q x' + i y' = R e^{i phi}`` the complex deflection is
    (Tessore & Metcalf 2015, eqs. 22-23)

        ``alpha = 2 b / (1 + q) (b / R)^(t - 1) e^{i phi} 2F1(1, t/2; 2 - t/2; -f e^{2 i phi})``

    with ``f = (1 - q) / (1 + q)``. The hypergeometric function is the series
    ``sum_n a_n e^{2 i n phi}``, ``a_n = -f (2n - (2 - t)) / (2n + (2 - t)) a_{n-1}``, summed with
    Clenshaw's recurrence on real tensors (two tensor operations per term). A round lens
    (``f = 0``) keeps only ``a_0 = 1``; ``R`` is floored at :data:`EPL_MIN_RADIUS` as in lenstronomy.
    """
    if terms < 1:
        raise ValueError(f"terms must be at least 1, got {terms}")
    phi, q = ellipticity_to_phi_q(e1, e2)
    cos_phi, sin_phi = torch.cos(phi), torch.sin(phi)
    dx, dy = x - center_x, y - center_y
    qx = torch.addcmul(q * cos_phi * dx, q * sin_phi, dy)  # Z = q x' + i y', x' along the major axis
    y_major = torch.addcmul(cos_phi * dy, sin_phi, dx, value=-1.0)
    qx2, y2 = qx * qx, y_major * y_major
    R2 = (qx2 + y2).clamp(min=EPL_MIN_RADIUS**2)
    two_cos_2phi = (qx2 - y2) / (0.5 * R2)

    # Clenshaw: b_n = a_n + 2 cos(2 phi) b_{n+1} - b_{n+2} from b_terms = b_{terms+1} = 0 down to b_1;
    # the series is a_0 - b_2 + e^{2 i phi} b_1 (a_0 = 1).
    t = gamma - 1.0
    a = _series_coefficients(t, (1.0 - q) / (1.0 + q), terms)
    b1 = b2 = torch.zeros_like(a[..., 0])
    for n in range(terms - 1, 0, -1):
        b1, b2 = torch.addcmul(a[..., n] - b2, two_cos_2phi, b1), b1
    # Z * series = q x' (1 - b_2 - b_1 + 2 cos(2 phi) b_1) + i y' (1 - b_2 + b_1 + 2 cos(2 phi) b_1)
    common = torch.addcmul(1.0 - b2, two_cos_2phi, b1)

    # alpha = 2 b^t / (1 + q) R^(-t) Z * series, with b = theta_E sqrt(q)
    log_prefactor = torch.log(2.0 / (1.0 + q)) + t * torch.log(theta_E * torch.sqrt(q))
    scale = torch.exp(torch.addcmul(log_prefactor, torch.log(R2), t, value=-0.5))
    alpha_major = scale * qx * (common - b1)
    alpha_minor = scale * y_major * (common + b1)
    return (
        torch.addcmul(cos_phi * alpha_major, sin_phi, alpha_minor, value=-1.0),
        torch.addcmul(sin_phi * alpha_major, cos_phi, alpha_minor),
    )
