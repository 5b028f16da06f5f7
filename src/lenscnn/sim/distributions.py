"""One-dimensional distributions of simulated parameters: how a prior (:mod:`lenscnn.sim.prior`) or an
observation (:mod:`lenscnn.sim.observation`) config gives one, and drawing from it.

A distribution is configured as a mapping with ``dist`` and its parameters, or as a bare number (``fixed``):

- ``uniform(low, high)``;
- ``normal(mean, std[, low, high])``: a Gaussian, truncated to ``[low, high]`` when bounds are given;
- ``log_uniform(low, high)``: uniform in ``log x``, with ``0 < low``;
- ``fixed(value)``.

Values are in the units of the parameter drawn (:mod:`lenscnn.params`). Draws are made on any device, in
any dtype, from a ``torch.Generator``, without host round-trips (a truncated normal by inverting its CDF).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lenscnn.errors import UserError


def standard_uniform(n: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``n`` independent draws from the uniform distribution on ``[0, 1)``, shape ``(n,)``."""
    return torch.rand(n, generator=generator, device=device, dtype=dtype)


@dataclass(frozen=True)
class Distribution:
    """A one-dimensional distribution, sampled on any device without host round-trips."""

    dist: str
    low: float = -math.inf
    high: float = math.inf
    mean: float = 0.0
    std: float = 1.0
    value: float = 0.0

    @property
    def support(self) -> tuple[float, float]:
        """Smallest interval holding all samples."""
        if self.dist == "fixed":
            return self.value, self.value
        return self.low, self.high

    def sample(self, n: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``n`` independent draws, shape ``(n,)``."""
        if self.dist == "fixed":
            return torch.full((n,), self.value, device=device, dtype=dtype)
        u = standard_uniform(n, generator, device, dtype)
        if self.dist == "uniform":
            return self.low + (self.high - self.low) * u
        if self.dist == "log_uniform":
            return torch.exp(math.log(self.low) + (math.log(self.high) - math.log(self.low)) * u)
        # normal, truncated to [low, high] by inverting the CDF (no rejection loop)
        cdf_low = 0.5 * (1 + math.erf((self.low - self.mean) / (self.std * math.sqrt(2))))
        cdf_high = 0.5 * (1 + math.erf((self.high - self.mean) / (self.std * math.sqrt(2))))
        # keep 2p - 1 strictly inside (-1, 1) in this dtype (1 - 1e-12 rounds to 1 in float32,
        # and erfinv(+-1) is infinite), and rounding from leaving [low, high]
        tiny = max(1e-12, torch.finfo(dtype).eps)
        p = (cdf_low + (cdf_high - cdf_low) * u).clamp(tiny, 1 - tiny)
        return (self.mean + self.std * math.sqrt(2) * torch.erfinv(2 * p - 1)).clamp(self.low, self.high)


def parse_distribution(spec: Any, name: str) -> Distribution:
    """Build a :class:`Distribution` from its config mapping (or a bare number: fixed)."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Distribution("fixed", value=float(spec))
    if not isinstance(spec, Mapping) or "dist" not in spec:
        raise UserError(f"prior '{name}': expected a number or a mapping with 'dist', got {spec!r}")
    spec = dict(spec)
    kind = spec.pop("dist")
    allowed = {
        "uniform": {"low", "high"},
        "log_uniform": {"low", "high"},
        "normal": {"mean", "std", "low", "high"},
        "fixed": {"value"},
    }
    if kind not in allowed:
        raise UserError(f"prior '{name}': unknown dist '{kind}'; use one of {sorted(allowed)}")
    unknown = set(spec) - allowed[kind]
    required = {
        "uniform": {"low", "high"},
        "log_uniform": {"low", "high"},
        "normal": {"mean", "std"},
        "fixed": {"value"},
    }
    missing = required[kind] - set(spec)
    if unknown or missing:
        problem = f"unknown keys {sorted(unknown)}" if unknown else f"missing keys {sorted(missing)}"
        raise UserError(f"prior '{name}': {kind} has {problem}; it takes {sorted(allowed[kind])}")
    try:
        values = {k: float(v) for k, v in spec.items()}
    except (TypeError, ValueError):
        raise UserError(f"prior '{name}': values must be numbers, got {spec!r}") from None
    dist = Distribution(kind, **values)
    low, high = dist.support
    if low > high:
        raise UserError(f"prior '{name}': low ({low}) > high ({high}); swap them")
    if kind == "log_uniform" and low <= 0:
        raise UserError(f"prior '{name}': log_uniform needs 0 < low, got low={low}")
    if kind == "normal" and dist.std <= 0:
        raise UserError(f"prior '{name}': normal needs std > 0, got std={dist.std}")
    return dist


def check_support(dist: Distribution, name: str, low: float, high: float, closed_low: bool = False) -> None:
    """Raise a :class:`UserError` unless every value ``dist`` draws for the prior ``name`` lies in
    ``(low, high]`` (``[low, high]`` when ``closed_low``)."""
    a, b = dist.support
    if (a < low or (a == low and not closed_low)) or b > high:
        bracket = "[" if closed_low else "("
        raise UserError(f"prior '{name}': values must lie in {bracket}{low}, {high}], but the prior allows [{a}, {b}]")
