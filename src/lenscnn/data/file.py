"""FileLensDataModule: a fixed dataset written by ``lenscnn-simulate`` (HDF5)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lenscnn.data.normalization import InputNormalizer, TargetScaler
from lenscnn.errors import UserError, one_line
from lenscnn.io.hdf5 import read_lens_dataset
from lenscnn.params import LENS


class _Lenses(Dataset):
    def __init__(self, images: torch.Tensor, params: dict[str, torch.Tensor]):
        self.images, self.params = images, params

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "params": {k: v[i] for k, v in self.params.items()}}


def check_lenses(path: Path, images: np.ndarray, params: dict, attrs: dict, targets: Sequence[str]) -> None:
    """Refuse a file that cannot train ``targets``: missing or non-finite truth, NaN pixels, no pixel scale."""
    missing = [t for t in targets if t not in params]
    if missing:
        raise UserError(f"{path}: has no parameters {missing}; it has {sorted(params)}")
    if "pixel_scale" not in attrs:
        raise UserError(f"{path}: no 'pixel_scale' attribute [arcsec/pixel]; write the file with lenscnn-simulate")
    if not np.all(np.isfinite(images)):
        raise UserError(f"{path}: images contain NaN or infinite pixels; remove or repair those lenses")
    with np.errstate(over="ignore"):  # values beyond float32's range count as infinite: training is in float32
        bad = [t for t in targets if not np.all(np.isfinite(params[t].astype(np.float32)))]
    if bad:
        raise UserError(f"{path}: parameters {bad} have NaN or infinite values; remove those lenses")


def stored_simulator_config(path: Path, text: str) -> dict[str, Any]:
    """The simulator config a file was written with (its ``config`` attribute, YAML), ``{}`` if empty."""
    try:
        config = yaml.safe_load(text) if text else {}
    except yaml.YAMLError as exc:
        raise UserError(
            f"{path}: the 'config' attribute is not valid YAML ({one_line(exc)}); write it with lenscnn-simulate"
        ) from None
    if not isinstance(config, (dict, type(None))):
        raise UserError(f"{path}: the 'config' attribute is not a YAML mapping of the simulator config")
    return config or {}


def robust_rms(images: torch.Tensor) -> float:
    """The robust rms of the (mostly empty) pixels of ``images``, else their standard deviation."""
    noise = float(1.4826 * (images - images.median()).abs().median())
    return noise if noise > 0 else float(images.std())


def file_bands(bands: Any, channels: int, path: Path) -> list[str] | None:
    """The band names of a file's ``channels`` image channels (its ``bands`` attribute: a list, or JSON in
    HDF5); ``None`` for one channel."""
    if channels == 1:
        return None
    names = json.loads(bands) if isinstance(bands, str) else list(bands or [])
    if len(names) != channels or not all(isinstance(n, str) for n in names):
        raise UserError(f"{path}: {channels} bands need {channels} band names; write the file with lenscnn-simulate")
    return names


class FileLensDataModule(LightningDataModule):
    """Train/validation/test splits of one HDF5 file (a fixed permutation of its lenses).

    Args:
        path: file written by ``lenscnn-simulate``.
        targets: parameters the network predicts, in output order.
        batch_size: lenses per batch. val_fraction, test_fraction: shares of the file.
        split_seed: seed of the permutation that splits the file (fixed: same split every run).
        seed: seed of the training shuffle.
        input_softening: asinh softening [counts/s]; default the robust noise level of the images.
    """

    def __init__(
        self,
        path: str,
        targets: Sequence[str] = LENS,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        seed: int = 0,
        num_workers: int = 0,
        input_softening: float | None = None,
    ):
        super().__init__()
        self.path = Path(path).expanduser()
        images, params, attrs = read_lens_dataset(self.path)
        self.targets = list(targets)
        check_lenses(self.path, images, params, attrs, self.targets)
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise UserError("data.val_fraction and data.test_fraction must be in (0, 1) with a sum below 1")
        n = images.shape[0]
        order = np.random.default_rng(split_seed).permutation(n)
        n_val, n_test = max(1, int(n * val_fraction)), max(1, int(n * test_fraction))
        splits = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
        if len(splits["train"]) < batch_size:
            raise UserError(f"{path}: {len(splits['train'])} training lenses, fewer than data.batch_size={batch_size}")
        images_t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        params_t = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in params.items()}
        self.sets = {
            name: _Lenses(images_t[idx], {k: v[idx] for k, v in params_t.items()}) for name, idx in splits.items()
        }
        self.simulator_config = stored_simulator_config(self.path, attrs.get("config", ""))
        self.image_size = tuple(images.shape[-2:])
        self.bands = file_bands(attrs.get("bands"), images.shape[1], self.path)
        self.pixel_scale = float(attrs["pixel_scale"])
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.input_softening = input_softening

    def target_scaler(self) -> TargetScaler:
        try:
            return TargetScaler.from_params(self.sets["train"].params, self.targets)
        except UserError as exc:
            raise UserError(f"{self.path}: {exc}") from None

    def input_normalizer(self) -> InputNormalizer:
        sample = self.sets["train"].images[:256]
        levels = [self.input_softening or robust_rms(sample[:, k]) for k in range(sample.shape[1])]
        softening = levels if self.bands is not None else levels[0]  # a band's own noise softens it
        try:
            return InputNormalizer.fit(sample, softening)
        except UserError as exc:
            raise UserError(f"{self.path}: {exc} (constant images?); set data.input_softening=<counts/s>") from None

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self.sets[name],
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            drop_last=shuffle,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training lenses; under DDP each rank gets its own share of every epoch's
        permutation (torch's ``DistributedSampler``, seeded by ``seed``; Lightning sets its epoch)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return self._loader("train", shuffle=True)
        sampler = DistributedSampler(
            self.sets["train"], trainer.world_size, trainer.global_rank, shuffle=True, seed=self.seed, drop_last=True
        )
        return DataLoader(
            self.sets["train"],
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
