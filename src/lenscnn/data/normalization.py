"""Target standardisation and network input normalisation.

Both are explicit, plain numbers saved in a checkpoint's hyperparameters (as
:meth:`to_dict`), so a trained model needs nothing else to be used later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

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
    result (estimated once from a fixed simulated sample and then frozen).
    """

    softening: float
    offset: float
    scale: float

    @classmethod
    def fit(cls, images: Tensor, softening: float) -> InputNormalizer:
        if not softening > 0 or not math.isfinite(softening):
            raise UserError(f"input normalisation softening must be > 0, got {softening}")
        stretched = torch.asinh(images.double() / softening)
        return cls(softening, float(stretched.mean()), float(stretched.std().clamp(min=1e-12)))

    @classmethod
    def from_dict(cls, d: Mapping) -> InputNormalizer:
        return cls(float(d["softening"]), float(d["offset"]), float(d["scale"]))

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, images: Tensor) -> Tensor:
        return (torch.asinh(images / self.softening) - self.offset) / self.scale
