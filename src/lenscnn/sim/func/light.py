"""Surface-brightness profiles (pure, batched, differentiable).

Conventions follow lenstronomy's ``SERSIC_ELLIPSE`` light profile: ``amp`` is the
surface brightness at the half-light radius, ``R_sersic`` is the half-light radius of
the product-average (circularised) radius, and the ellipticity ``(e1, e2)`` is the
complex ellipticity of ``lenscnn.sim.func.ellipticity``.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: lenstronomy's floor on radii [arcsec] (``SersicUtil._smoothing``); it keeps the cusp of
#: the profile finite and differentiable.
SERSIC_SMOOTHING = 1e-4

#: lenstronomy sets the profile to zero beyond this many half-light radii.
SERSIC_MAX_R_FRAC = 1000.0


def sersic_b_n(n_sersic: Tensor) -> Tensor:
    """The Sersic ``b_n`` in lenstronomy's approximation ``1.9992 n - 0.3271``."""
    return (1.9992 * n_sersic - 0.3271).clamp(min=1e-5)


def elliptical_radius(x: Tensor, y: Tensor, e1: Tensor, e2: Tensor, center_x: Tensor, center_y: Tensor) -> Tensor:
    """Product-average elliptical radius ``sqrt(q x'^2 + y'^2 / q)`` [arcsec].

    Written directly in ``(e1, e2)`` (lenstronomy's ``transform_e1e2_product_average``), so no
    angle is needed and the round case has no special point.
    """
    dx, dy = x - center_x, y - center_y
    norm = torch.sqrt((1.0 - e1 * e1 - e2 * e2).abs().clamp(min=1e-6))
    x_ = ((1.0 - e1) * dx - e2 * dy) / norm
    y_ = (-e2 * dx + (1.0 + e1) * dy) / norm
    return torch.sqrt(x_ * x_ + y_ * y_)


def sersic_profile(
    x: Tensor,
    y: Tensor,
    amp: Tensor,
    R_sersic: Tensor,
    n_sersic: Tensor,
    e1: Tensor,
    e2: Tensor,
    center_x: Tensor | float = 0.0,
    center_y: Tensor | float = 0.0,
) -> Tensor:
    """Elliptical Sersic surface brightness at ``(x, y)``.

    ``I = amp * exp(-b_n [(R / R_sersic)^(1/n) - 1])``.

    Args:
        x, y: positions [arcsec] (source-plane positions for a lensed source).
        amp: surface brightness at the half-light radius [counts/s/arcsec^2].
        R_sersic: half-light radius [arcsec]. n_sersic: Sersic index (dimensionless).
        e1, e2: complex ellipticity. center_x, center_y: centre [arcsec].

    Returns:
        Surface brightness [counts/s/arcsec^2], broadcast shape of the inputs.
    """
    radius = elliptical_radius(x, y, e1, e2, center_x, center_y).clamp(min=SERSIC_SMOOTHING)
    ratio = radius / R_sersic.clamp(min=SERSIC_SMOOTHING)
    # (R / R_s)^(1/n) through exp/log: one transcendental fewer than pow, same value.
    exponent = -sersic_b_n(n_sersic) * (torch.exp(torch.log(ratio) / n_sersic) - 1.0)
    return torch.where(ratio <= SERSIC_MAX_R_FRAC, amp * torch.exp(exponent), 0.0)
