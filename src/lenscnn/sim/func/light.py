"""Surface-brightness profiles (pure, batched, differentiable).

Conventions follow lenstronomy's ``SERSIC_ELLIPSE`` light profile: ``amp`` is the
surface brightness at the half-light radius, ``R_sersic`` is the half-light radius of
the product-average (circularised) radius, and the ellipticity ``(e1, e2)`` is the
complex ellipticity of ``lenscnn.sim.func.ellipticity``. lenstronomy's round ``GAUSSIAN``
(:func:`gaussian_profile`) takes its total flux as ``amp`` instead.
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


def sersic_total_flux(amp: Tensor, R_sersic: Tensor, n_sersic: Tensor) -> Tensor:
    """Total flux [counts/s] of an elliptical Sersic profile of :func:`sersic_profile`.

    ``F = 2 pi n R^2 amp e^b b^(-2n) Gamma(2n)`` with lenstronomy's ``b_n``; the ellipticity
    does not change it (the product-average radius keeps areas), as in lenstronomy's
    ``LightModel.total_flux``.
    """
    b_n = sersic_b_n(n_sersic)
    log_flux = b_n - 2.0 * n_sersic * torch.log(b_n) + torch.lgamma(2.0 * n_sersic)
    return 2.0 * torch.pi * n_sersic * R_sersic * R_sersic * amp * torch.exp(log_flux)


def gaussian_profile(
    x: Tensor,
    y: Tensor,
    amp: Tensor,
    sigma: Tensor,
    center_x: Tensor | float = 0.0,
    center_y: Tensor | float = 0.0,
) -> Tensor:
    """Round Gaussian surface brightness at ``(x, y)`` (lenstronomy's ``GAUSSIAN`` light profile).

    ``I = amp / (2 pi sigma^2) * exp(-r^2 / (2 sigma^2))``: ``amp`` is the total flux.

    The profile is sampled at ``(x, y)``, as lenstronomy samples it, not integrated over pixels:
    a ``sigma`` well below the (sub-)pixel size gives a pixel sum that depends on where the centre
    falls within a pixel.

    Args:
        x, y: positions [arcsec].
        amp: total flux [counts/s]. sigma: standard deviation [arcsec] in each direction.
        center_x, center_y: centre [arcsec].

    Returns:
        Surface brightness [counts/s/arcsec^2], broadcast shape of the inputs.
    """
    dx, dy = x - center_x, y - center_y
    inverse_variance = 1.0 / (sigma * sigma)
    return (0.5 / torch.pi) * amp * inverse_variance * torch.exp(-0.5 * (dx * dx + dy * dy) * inverse_variance)


def interpolated_profile(
    x: Tensor,
    y: Tensor,
    stamps: Tensor,
    amp: Tensor,
    center_x: Tensor,
    center_y: Tensor,
    phi_G: Tensor,
    scale: Tensor,
    flip: Tensor | None = None,
) -> Tensor:
    """Surface brightness of pixelated galaxies (lenstronomy's ``INTERPOL`` light profile), batched.

    Each of the ``B`` stamps is bilinearly interpolated at its own positions: ``x, y`` are
    rotated by ``phi_G`` about ``(center_x, center_y)`` and divided by ``scale``, so that
    stamp pixel ``(row i, column j)`` of an ``S_r x S_c`` stamp sits at
    ``(j - (S_c - 1) / 2, i - (S_r - 1) / 2) * scale`` before the rotation, and the profile
    falls linearly to zero over one pixel outside the stamp (lenstronomy pads with a
    zero border). ``flip`` (``1``: mirror the stamp's columns) adds parity to the random
    orientations of a training set; lenstronomy has no flip, so pass a flipped stamp there.

    Args:
        x, y: positions [arcsec], broadcasting to ``(B, H, W)`` (source-plane positions
            for a lensed source).
        stamps: ``(B, S_r, S_c)`` surface brightness per stamp pixel [per arcsec^2 when
            multiplied by ``amp``], one stamp per image.
        amp: brightness scale, ``(B, 1, 1)``; the total flux is
            ``amp * stamps.sum((-2, -1)) * scale**2`` [counts/s].
        center_x, center_y: position of the stamp centre [arcsec], ``(B, 1, 1)``.
        phi_G: rotation [rad] of the stamp, counter-clockwise, ``(B, 1, 1)``.
        scale: size of one stamp pixel [arcsec], ``(B, 1, 1)``.
        flip: ``(B, 1, 1)`` with values 0 or 1, or ``None``.

    Returns:
        Surface brightness [counts/s/arcsec^2], shape ``(B, H, W)``.
    """
    dx, dy = x - center_x, y - center_y
    cos, sin = torch.cos(phi_G), torch.sin(phi_G)
    column = (cos * dx + sin * dy) / scale
    row = (cos * dy - sin * dx) / scale
    if flip is not None:
        column = torch.where(flip > 0.5, -column, column)
    column, row = torch.broadcast_tensors(column, row)
    n_rows, n_columns = stamps.shape[-2:]
    # grid_sample with align_corners=True: -1 and +1 are the centres of the outermost pixels
    grid = torch.stack((column * (2.0 / (n_columns - 1)), row * (2.0 / (n_rows - 1))), dim=-1)
    values = torch.nn.functional.grid_sample(
        stamps[:, None].to(grid.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return amp * values[:, 0]
