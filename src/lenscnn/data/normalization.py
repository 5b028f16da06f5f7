"""Target standardisation and network input normalisation.

Both are explicit, plain numbers saved in a checkpoint's hyperparameters (as
:meth:`to_dict`), so a trained model needs nothing else to be used later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from lenscnn.errors import UserError


@dataclass(frozen=True)
class TargetScaler:
    """Standardise targets with the prior's moments: ``z = (value - mean) / std`` per target.

    Attributes:
        names: target names in network output order (e.g. ``theta_E e1 e2 center_x center_y``).
        mean, std: prior mean and standard deviation of each target, in physical units.
    """

    names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_params(cls, params: Mapping[str, Tensor], names: Sequence[str]) -> TargetScaler:
        """Moments estimated from a large prior sample ``params`` (``{name: Tensor[n]}``)."""
        missing = [n for n in names if n not in params]
        if missing:
            raise UserError(f"targets {missing} are not simulated parameters; choose from {sorted(params)}")
        mean = tuple(float(params[n].double().mean()) for n in names)
        std = tuple(float(params[n].double().std()) for n in names)
        fixed = [n for n, s in zip(names, std, strict=True) if not s > 0]
        if fixed:
            raise UserError(f"targets {fixed} are fixed by the prior (zero spread); remove them from data.targets")
        return cls(tuple(names), mean, std)

    @classmethod
    def from_dict(cls, d: Mapping) -> TargetScaler:
        return cls(tuple(d["names"]), tuple(d["mean"]), tuple(d["std"]))

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    def stack(self, params: Mapping[str, Tensor]) -> Tensor:
        """Physical targets ``(B, T)`` from a parameter mapping."""
        return torch.stack([params[n] for n in self.names], dim=-1)


@dataclass(frozen=True)
class InputNormalizer:
    """Network input from an image in counts/s per pixel: ``(asinh(image / softening) - offset) / scale``.

    ``asinh`` compresses the bright arcs and keeps the noise linear, so images of very
    different brightness reach the network on a similar scale. ``softening`` [counts/s] is
    the level where the stretch turns logarithmic; ``offset`` and ``scale`` standardise the
    result (estimated once from a fixed simulated sample and then frozen). Images of several bands
    ``(B, C, H, W)`` are scaled band by band: then each is a tuple of ``C`` numbers (a band's own
    noise sets its softening).
    """

    softening: float | tuple[float, ...]
    offset: float | tuple[float, ...]
    scale: float | tuple[float, ...]

    @classmethod
    def fit(cls, images: Tensor, softening: float | Sequence[float]) -> InputNormalizer:
        """Fitted on ``images`` ``(N, C, H, W)``: one number each for one band (``softening`` a number), one per
        band for several (``softening`` a number per band)."""
        values = [softening] if isinstance(softening, (int, float)) else list(softening)
        if not all(isinstance(v, (int, float)) and v > 0 and math.isfinite(v) for v in values):
            raise UserError(f"input normalisation softening must be > 0, got {softening}")
        if isinstance(softening, (int, float)):
            stretched = torch.asinh(images.double() / softening)
            return cls(softening, float(stretched.mean()), float(stretched.std().clamp(min=1e-12)))
        if len(values) != images.shape[1]:
            raise UserError(f"input normalisation: {len(values)} softenings for {images.shape[1]} bands")
        stretched = torch.asinh(images.double() / torch.tensor(values, dtype=torch.float64).view(1, -1, 1, 1))
        per_band = stretched.transpose(0, 1).flatten(1)
        offset = tuple(per_band.mean(dim=1).tolist())
        return cls(tuple(values), offset, tuple(per_band.std(dim=1).clamp(min=1e-12).tolist()))

    @classmethod
    def from_dict(cls, d: Mapping) -> InputNormalizer:
        def number(value: Any) -> float | tuple[float, ...]:
            return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else float(value)

        return cls(number(d["softening"]), number(d["offset"]), number(d["scale"]))

    @property
    def bands(self) -> int:
        """How many bands it scales (1 for numbers)."""
        return len(self.softening) if isinstance(self.softening, tuple) else 1

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def __call__(self, images: Tensor) -> Tensor:
        if not isinstance(self.softening, tuple):
            return (torch.asinh(images / self.softening) - self.offset) / self.scale
        softening, offset, scale = (
            torch.tensor(v, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
            for v in (self.softening, self.offset, self.scale)
        )
        return (torch.asinh(images / softening) - offset) / scale
