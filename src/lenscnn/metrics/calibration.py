"""Coverage of predicted Gaussian intervals, and the per-target recalibration of sigma.

A prediction ``mu +- sigma`` is calibrated if the central interval ``mu +- z_p sigma`` (``z_p``
the two-sided Gaussian quantile of level ``p``: 1.0 for 68.27%, 1.96 for 95%) holds the truth
for a fraction ``p`` of lenses. Networks trained with a Gaussian NLL are often over- or under-
confident on held-out data. One factor ``s`` per target, ``sigma -> s sigma``, fitted on the
validation set, fixes most of that (a temperature scaling for regression, cf. Kuleshov et al.
2018; Levi et al. 2022). When the network's sigma also ranks the lenses too timidly (its hard
lenses' errors grow faster than their sigma), a power law in sigma fixes that as well:

    sigma -> s * sigma * (sigma / pivot) ** (power - 1)

per target, ``pivot`` the median validation sigma (so ``s`` is still the factor at a typical
lens and ``power = 1`` is the plain scale), fitted by :func:`fit_sigma_calibration`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

#: Nominal levels reported everywhere (the 1-sigma and 2-sigma-ish intervals astronomers quote).
LEVELS = (0.68, 0.95)
#: Levels of the reliability diagram (5%, 10%, ..., 95%).
CURVE_LEVELS = tuple(round(0.05 * k, 2) for k in range(1, 20))
#: Exponents the power-law fit tries (0.5 ... 2.5 in steps of 0.025).
POWERS = tuple(round(0.5 + 0.025 * k, 3) for k in range(81))


class SigmaCalibration(NamedTuple):
    """Per-target ``(T,)`` tensors of ``sigma -> scale * sigma * (sigma / pivot) ** (power - 1)``;
    ``pivot`` is in the target's unit, ``scale`` and ``power`` are dimensionless."""

    scale: Tensor
    power: Tensor
    pivot: Tensor

    @classmethod
    def identity(cls, n_targets: int) -> SigmaCalibration:
        """The calibration that leaves sigma as it is."""
        one = torch.ones(n_targets, dtype=torch.float64)
        return cls(one, one.clone(), one.clone())

    def apply(self, sigma: Tensor) -> Tensor:
        """Calibrated ``(N, T)`` sigma (exactly ``scale * sigma`` where ``power`` is 1)."""
        scale, power, pivot = (v.to(sigma) for v in self)
        return scale * sigma * (sigma / pivot) ** (power - 1)

    def by_target(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        """``{"sigma_scale": {target: value}, "sigma_power": ..., "sigma_pivot": ...}``, as calibration
        records and ``metrics.json`` store it."""
        return {
            f"sigma_{key}": {n: float(v) for n, v in zip(names, values, strict=True)}
            for key, values in zip(self._fields, self, strict=True)
        }

    def invert(self, calibrated: Tensor) -> Tensor:
        """The sigma :meth:`apply` maps to ``calibrated``."""
        scale, power, pivot = (v.to(calibrated) for v in self)
        return pivot * (calibrated / (scale * pivot)) ** (1 / power)


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


def _coverage_errors(ratio: Tensor, factors: Tensor, levels: Sequence[float]) -> Tensor:
    """Summed squared coverage error ``(K, T)`` over ``levels`` of the intervals ``factors[k] *
    sigma`` given ``ratio = |residual| / sigma`` ``(N, T)``."""
    z = gaussian_quantile(torch.tensor(list(levels), dtype=torch.float64))
    ordered = ratio.T.contiguous().sort(dim=1).values  # (T, N)
    bounds = factors.T[:, :, None] * z  # (T, K, L)
    inside = torch.searchsorted(ordered, bounds.reshape(len(ordered), -1), right=True)
    covered = inside.reshape(bounds.shape).to(torch.float64) / ratio.shape[0]
    return (covered - z.new_tensor(list(levels))).square().sum(-1).T


def _best_scale(residual: Tensor, sigma: Tensor, levels: Sequence[float]) -> tuple[Tensor, Tensor]:
    """:func:`fit_sigma_scale`'s factors ``(T,)`` and their summed squared coverage errors ``(T,)``."""
    ratio = (residual.abs() / sigma).to(torch.float64)
    grid = torch.linspace(0.5, 0.99, 50, dtype=torch.float64)
    candidates = torch.quantile(ratio, grid, dim=0) / gaussian_quantile(grid)[:, None]  # (50, T)
    errors = _coverage_errors(ratio, candidates, levels)
    best = errors.argmin(0)
    return candidates.gather(0, best[None]).squeeze(0).clamp(min=1e-6), errors.gather(0, best[None]).squeeze(0)


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
    return _best_scale(residual, sigma, levels)[0]


def fit_sigma_calibration(
    residual: Tensor, sigma: Tensor, levels: Sequence[float] = LEVELS, powers: Sequence[float] = POWERS
) -> SigmaCalibration:
    """The power law per target (:class:`SigmaCalibration`) whose calibrated intervals best match
    the nominal ``levels`` (least summed squared coverage error).

    For each exponent of ``powers`` the scale is :func:`fit_sigma_scale`'s for the sigma the power
    law maps to (at scale 1); the exponent with the smallest error wins. ``powers=(1.0,)`` gives the
    plain scale.

    Args:
        residual: ``truth - mean`` ``(N, T)``. sigma: predicted standard deviations ``(N, T)``, > 0.
    """
    residual, sigma = residual.to(torch.float64), sigma.to(torch.float64)
    pivot = sigma.median(0).values
    exponents = torch.tensor(list(powers), dtype=torch.float64)[:, None].expand(-1, len(pivot))  # (P, T)
    unit = torch.ones_like(pivot)
    fits = [_best_scale(residual, SigmaCalibration(unit, p, pivot).apply(sigma), levels) for p in exponents]
    scales, errors = (torch.stack(parts) for parts in zip(*fits, strict=True))  # (P, T) each
    best = errors.argmin(0, keepdim=True)
    scale, power = scales.gather(0, best).squeeze(0), exponents.gather(0, best).squeeze(0)
    return SigmaCalibration(scale, power, pivot)
