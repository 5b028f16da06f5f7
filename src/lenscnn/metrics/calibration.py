"""Coverage of predicted Gaussian intervals, and a per-target scale that calibrates them.

A prediction ``mu +- sigma`` is calibrated if the central interval ``mu +- z_p sigma`` (``z_p``
the two-sided Gaussian quantile of level ``p``: 1.0 for 68.27%, 1.96 for 95%) holds the truth
for a fraction ``p`` of lenses. Networks trained with a Gaussian NLL are often over- or under-
confident on held-out data; one factor ``s`` per target, ``sigma -> s sigma``, fitted on the
validation set, fixes most of that (a temperature scaling for regression, cf. Kuleshov et al.
2018; Levi et al. 2022).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

#: Nominal levels reported everywhere (the 1-sigma and 2-sigma-ish intervals astronomers quote).
LEVELS = (0.68, 0.95)


def gaussian_quantile(level: float | Tensor) -> Tensor:
    """Half-width ``z_p`` of the central Gaussian interval holding a fraction ``level``."""
    level = torch.as_tensor(level, dtype=torch.float64)
    return torch.special.ndtri(0.5 + level / 2)


def coverage(residual: Tensor, sigma: Tensor, level: float) -> Tensor:
    """Fraction of rows with ``|residual| <= z_level * sigma``, per target; inputs ``(N, T)``."""
    z = gaussian_quantile(level).to(residual)
    return (residual.abs() <= z * sigma).to(torch.float64).mean(0)


def calibration_curve(residual: Tensor, sigma: Tensor, levels: Sequence[float] | Tensor) -> Tensor:
    """Empirical coverage ``(L, T)`` at each nominal level (the reliability diagram)."""
    return torch.stack([coverage(residual, sigma, float(p)) for p in levels])


def fit_sigma_scale(residual: Tensor, sigma: Tensor, levels: Sequence[float] = LEVELS) -> Tensor:
    """The factor ``s`` per target that makes ``s * sigma`` best match the nominal ``levels``.

    For a level ``p`` the factor that gives exactly coverage ``p`` is the ``p``-quantile of
    ``|residual| / sigma`` divided by ``z_p``. With several levels (heavy tails make them
    disagree), ``s`` is chosen among these exact factors for levels 0.50 ... 0.99 as the one that
    minimises the summed squared coverage error over ``levels``. For Gaussian residuals every
    level gives the same ``s``.

    Args:
        residual: ``truth - mean`` ``(N, T)``. sigma: predicted standard deviations ``(N, T)``.
    Returns:
        ``(T,)`` scale factors.
    """
    ratio = (residual.abs() / sigma).to(torch.float64)
    grid = torch.linspace(0.5, 0.99, 50, dtype=torch.float64)
    candidates = torch.quantile(ratio, grid, dim=0) / gaussian_quantile(grid)[:, None]  # (50, T)
    errors = torch.zeros_like(candidates)
    for k in range(candidates.shape[0]):
        scaled = sigma.to(torch.float64) * candidates[k]
        for p in levels:
            errors[k] += (coverage(residual.to(torch.float64), scaled, p) - p).square()
    best = errors.argmin(0)
    return candidates.gather(0, best[None]).squeeze(0).clamp(min=1e-6)
