"""Lenses with known truth to evaluate on: a fixed simulated set, or a file from ``lenscnn-simulate``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lenscnn.data.streams import TEST_SEED, VAL_SEED, FixedLenses
from lenscnn.errors import UserError
from lenscnn.io.fits import read_lens_dataset_fits
from lenscnn.io.hdf5 import read_lens_dataset
from lenscnn.sim import Simulator

#: The fixed sets of :class:`lenscnn.data.LensDataModule`, by name.
SPLIT_SEEDS = {"val": VAL_SEED, "test": TEST_SEED}


@dataclass
class EvaluationSet:
    """``size`` lenses of ``image_size`` pixels at ``pixel_scale`` arcsec/pixel with true parameters.

    Either simulated on demand (``simulator`` and ``lenses``: parameters and noise seeds, rendered
    batch by batch on the evaluation device) or read from a file (``images`` and ``params``).
    """

    description: str
    image_size: tuple[int, int]
    pixel_scale: float
    size: int
    simulator: Simulator | None = None
    lenses: FixedLenses | None = None
    images: Tensor | None = None
    params: Mapping[str, Tensor] | None = None

    def batches(self, batch_size: int, device: torch.device) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
        """``(images (B, 1, H, W), {name: (B,)})`` on ``device``."""
        if self.simulator is not None:
            simulator = self.simulator.to(device)
            for start in range(0, self.size, batch_size):
                part = slice(start, start + batch_size)
                params = {k: v[part].to(device) for k, v in self.lenses.params.items()}
                seeds = self.lenses.noise_seeds[part].to(device)
                with torch.no_grad():
                    images = simulator.render(params, noise=True, noise_seeds=seeds)
                yield images, params
            return
        for start in range(0, self.size, batch_size):
            part = slice(start, start + batch_size)
            yield self.images[part].to(device), {k: v[part].to(device) for k, v in self.params.items()}

    def check_geometry(self, image_size: tuple[int, int], pixel_scale: float) -> None:
        """Refuse a set whose images a model of ``image_size`` and ``pixel_scale`` cannot read."""
        if tuple(self.image_size) != tuple(image_size) or abs(self.pixel_scale / pixel_scale - 1) > 1e-6:
            raise UserError(
                f'{self.description}: {self.image_size[0]}x{self.image_size[1]} px at {self.pixel_scale}"/px, '
                f'but the model reads {image_size[0]}x{image_size[1]} px at {pixel_scale}"/px; '
                "evaluate on data with the model's geometry"
            )


def simulated_set(
    simulator_config: Mapping[str, Any], split: str, size: int, prior: str | None = None
) -> EvaluationSet:
    """The fixed ``split`` (``val`` or ``test``) set of ``size`` lenses that training used for this
    simulator config (same seeds as :class:`lenscnn.data.LensDataModule`, so identical lenses;
    with a galaxy-source library, the galaxies of that split). ``prior`` names the prior in
    the description (``None``: the one the model was trained on)."""
    if split not in SPLIT_SEEDS:
        raise UserError(f"split={split!r}; choose one of {list(SPLIT_SEEDS)}")
    if not isinstance(size, int) or size < 1:
        raise UserError(f"{split}_size must be a positive integer, got {size!r}")
    simulator = Simulator.from_config({**simulator_config, "compile": False})
    lenses = FixedLenses(simulator, size, SPLIT_SEEDS[split], size, split=split)
    instrument = simulator.instrument
    name = simulator_config.get("instrument", {}).get("name", "simulated")
    return EvaluationSet(
        f"simulated {split} set ({size} lenses, instrument {name}, prior {prior or 'as trained'})",
        tuple(instrument.image_size),
        float(instrument.pixel_scale),
        size,
        simulator=simulator,
        lenses=lenses,
    )


def file_set(path: str | Path) -> EvaluationSet:
    """Lenses with true parameters from an HDF5 or FITS file written by ``lenscnn-simulate``."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        images, params, attrs = read_lens_dataset(path)
    elif suffix in (".fits", ".fit", ".fz"):
        images, params, attrs = read_lens_dataset_fits(path)
    else:
        raise UserError(f"dataset={path}: expected an .h5/.hdf5 or .fits file from lenscnn-simulate")
    if "pixel_scale" not in attrs:
        raise UserError(f"{path}: no 'pixel_scale' attribute [arcsec/pixel]; write the file with lenscnn-simulate")
    if not params:
        raise UserError(f"{path}: holds no true parameters to score against; write the file with lenscnn-simulate")
    if not np.all(np.isfinite(images)):
        raise UserError(f"{path}: images contain NaN or infinite pixels; remove or repair those lenses")
    images_t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).reshape(-1, 1, *images.shape[-2:])
    return EvaluationSet(
        f"{path} ({images_t.shape[0]} lenses)",
        tuple(images_t.shape[-2:]),
        float(attrs["pixel_scale"]),
        images_t.shape[0],
        images=images_t,
        params={k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in params.items()},
    )
