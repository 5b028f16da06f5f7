"""LensDataModule: simulated lenses drawn on the fly and rendered on the model's device.

The data loaders yield only parameters (a few numbers per lens, drawn on the CPU) and
per-image noise seeds; :meth:`LensDataModule.on_after_batch_transfer` renders the images
on the device the model runs on, so a GPU run never ships images from host to device.

Seeding (the training stream and the fixed validation and test sets) is in
:mod:`lenscnn.data.streams`; ``docs/architecture.md`` explains it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from lenscnn.data.normalization import InputNormalizer, TargetScaler
from lenscnn.data.streams import TEST_SEED, VAL_SEED, EpochSampler, FixedLenses, ParameterBatches
from lenscnn.errors import UserError
from lenscnn.params import LENS
from lenscnn.sim import Simulator

MOMENTS_SEED = 1_234_567
MOMENTS_SAMPLES = 200_000


def check_same_stream(saved: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Refuse to resume a run whose training stream (seed, batch size, epoch length) changed."""
    changed = {k: (v, current.get(k)) for k, v in saved.items() if current.get(k) != v}
    if changed:
        detail = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
        raise UserError(f"resume: the training stream changed ({detail}); resume with the run's data settings")


class StreamLoader(DataLoader):
    """The training loader: resumable, because its position is the run's optimizer steps.

    The position is read by :class:`EpochSampler` (a loader runs ahead of training by its
    prefetch, so it cannot count for itself); its state identifies the stream, so that a
    mid-epoch resume with changed data settings is refused.
    """

    def state_dict(self) -> dict[str, int]:
        dataset = self.dataset
        return {"seed": dataset.seed, "batches_per_epoch": dataset.length, "batch_size": dataset.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        check_same_stream(state, self.state_dict())


def _with_galaxy_split(config: Mapping[str, Any], simulator: Simulator) -> dict[str, Any]:
    """The simulator config, with the train/val/test split of every galaxy library recorded in
    ``prior.<component>.galaxies.split`` (so a checkpoint says which galaxies it never saw)."""
    config = copy.deepcopy(dict(config))
    for name, galaxies in simulator.prior.galaxy_samplers.items():
        config["prior"][name]["galaxies"]["split"] = galaxies.split_record()
    return config


class LensDataModule(LightningDataModule):
    """Endless simulated training stream plus fixed validation and test sets.

    Args:
        simulator: the ``data.simulator`` config node (instrument, prior, dtype, compile).
        targets: parameters the network predicts, in output order.
        batch_size: lenses per batch (per process).
        batches_per_epoch: training batches that make one "epoch" of the endless stream.
        val_size, test_size: lenses in the fixed validation and test sets.
        seed: seed of the training stream (the run's ``seed``).
        num_workers: dataloader workers drawing parameters (rendering stays on the device).
        input_softening: asinh softening of the input normalisation [counts/s]; default the
            instrument's background rms.
    """

    def __init__(
        self,
        simulator: Mapping[str, Any] | DictConfig,
        targets: Sequence[str] = LENS,
        batch_size: int = 128,
        batches_per_epoch: int = 200,
        val_size: int = 1024,
        test_size: int = 2048,
        seed: int = 0,
        num_workers: int = 0,
        input_softening: float | None = None,
    ):
        super().__init__()
        if isinstance(simulator, DictConfig):
            simulator = OmegaConf.to_container(simulator, resolve=True)
        for name, value in (("batch_size", batch_size), ("batches_per_epoch", batches_per_epoch)):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"data.{name} must be a positive integer, got {value!r}")
        for name, value in (("val_size", val_size), ("test_size", test_size)):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"data.{name} must be a positive integer, got {value!r}")
        self.simulator = Simulator.from_config(simulator)
        self.simulator_config = _with_galaxy_split(simulator, self.simulator)
        self.targets = list(targets)
        unknown = [t for t in self.targets if t not in self.simulator.prior.names]
        if unknown:
            raise UserError(
                f"data.targets {unknown} are not drawn by the prior; choose from {self.simulator.prior.names}"
            )
        self.batch_size, self.batches_per_epoch = batch_size, batches_per_epoch
        self.val_size, self.test_size = val_size, test_size
        self.seed, self.num_workers = seed, num_workers
        self.input_softening = input_softening
        self._device_simulator: Simulator | None = None

    # -- what the model needs to know -------------------------------------------------

    @property
    def image_size(self) -> tuple[int, int]:
        return self.simulator.instrument.image_size

    @property
    def bands(self) -> list[str] | None:
        """The instrument's band names, one image channel each; ``None`` for a single band."""
        names = self.simulator.instrument.band_names
        return list(names) if len(names) > 1 else None

    @property
    def pixel_scale(self) -> float:
        return self.simulator.instrument.pixel_scale

    def target_scaler(self) -> TargetScaler:
        """Prior moments of the targets from a large fixed-seed sample."""
        params = self.simulator.prior.sample(MOMENTS_SAMPLES, torch.Generator().manual_seed(MOMENTS_SEED))
        return TargetScaler.from_params(params, self.targets)

    def input_normalizer(self) -> InputNormalizer:
        """Input normalisation fitted once on a fixed-seed sample of noisy images (rendered
        uncompiled, with the data's instrument, prior and observation: no second galaxy-library load)."""
        reference = self.simulator
        simulator = Simulator(
            reference.instrument,
            reference.prior,
            observation=reference.observation.spec if reference.observation is not None else None,
            colours=self.simulator_config.get("colours"),
            dtype=reference.dtype,
            chunk_size=reference.chunk_size,
        )
        images, _ = simulator.sample(256, torch.Generator().manual_seed(MOMENTS_SEED))
        if self.bands is not None:  # each band softened at its own noise
            rms = [b.background_rms or float(images[:, k].std()) for k, b in enumerate(simulator.instrument.bands)]
            return InputNormalizer.fit(images, [self.input_softening or r for r in rms])
        softening = self.input_softening or simulator.instrument.background_rms or float(images.std())
        return InputNormalizer.fit(images, softening)

    # -- loaders ----------------------------------------------------------------------

    def _position(self) -> tuple[int, int]:
        """``(epoch, index)`` of the next training batch: the batches trained so far (optimizer
        steps times gradient accumulation) in epochs of the trainer's batches per epoch."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0
        per_epoch = min(int(trainer.num_training_batches), self.batches_per_epoch)
        return divmod(trainer.global_step * trainer.accumulate_grad_batches, max(1, per_epoch))

    def _loader(
        self, dataset: Dataset, sampler: Sampler | None = None, cls: type[DataLoader] = DataLoader
    ) -> DataLoader:
        return cls(
            dataset,
            batch_size=None,
            sampler=sampler,
            generator=torch.Generator(),  # iterators must not draw from (and shift) the global RNG
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _rank_and_world_size(self) -> tuple[int, int]:
        """This process's global rank and the number of ranks (``(0, 1)`` without a trainer)."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _fixed_set(self, size: int, seed: int, split: str) -> FixedLenses:
        rank, world_size = self._rank_and_world_size()
        if size < world_size:
            raise UserError(f"data.{split}_size={size} is smaller than the {world_size} processes that share it")
        return FixedLenses(self.simulator, size, seed, self.batch_size, rank, world_size, split=split)

    def train_dataloader(self) -> DataLoader:
        rank, _ = self._rank_and_world_size()
        dataset = ParameterBatches(self.simulator, self.batch_size, self.seed, self.batches_per_epoch, rank=rank)
        return self._loader(dataset, EpochSampler(self.batches_per_epoch, self._position), StreamLoader)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._fixed_set(self.val_size, VAL_SEED, "val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._fixed_set(self.test_size, TEST_SEED, "test"))

    # -- checkpointed state -----------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "batches_per_epoch": self.batches_per_epoch, "batch_size": self.batch_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        check_same_stream(state_dict, self.state_dict())

    # -- rendering on the device ------------------------------------------------------

    def _simulator_on(self, device: torch.device) -> Simulator:
        if self._device_simulator is None or self._device_simulator.device != device:
            self._device_simulator = self.simulator.to(device)
        return self._device_simulator

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Render the batch's images where the batch now is (the model's device); a batch with
        images (a file's) or an image tensor (the model's ``example_input_array``) passes as it is."""
        if not isinstance(batch, dict) or "image" in batch:
            return batch
        simulator = self._simulator_on(batch["noise_seeds"].device)
        with torch.no_grad():
            images = simulator.render(batch["params"], noise=True, noise_seeds=batch["noise_seeds"])
        return {"image": images, "params": batch["params"]}
