"""Seeded lens streams: the endless training stream and the fixed validation and test sets.

Seeding (what makes runs comparable and resumable):

* training batch ``i`` of epoch ``e`` on rank ``r`` is drawn from
  ``SeedSequence([seed, r, e, i])``: no two ranks, epochs or batches share lenses, the
  stream does not depend on the number of dataloader workers, and a run resumed from a
  checkpoint (even mid-epoch) continues exactly the stream it would have drawn;
* the validation and test sets are drawn whole from ``SeedSequence([VAL_SEED])`` and
  ``SeedSequence([TEST_SEED])``: identical for every run, architecture, batch size and rank,
  so a sweep compares models on the same lenses. Under DDP each rank evaluates one
  contiguous block of them (:func:`shard_bounds`) and torchmetrics sums the metric
  states over the ranks, so the metrics are those of the whole set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lenscnn.sim import Simulator
from lenscnn.sim.func import draw_seeds

#: Seeds of the fixed sets; changing them changes every published number.
VAL_SEED = 20_170_830  # Hezaveh et al. 2017, Nature 548, 555 (published 2017-08-30)
TEST_SEED = 20_171_120  # Perreault Levasseur et al. 2017, ApJL 850, L7


def shard_bounds(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(start, stop)`` of rank ``rank``'s contiguous block of ``size`` items split over ``world_size``
    ranks; blocks differ in length by at most one and together cover every item once."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    return rank * size // world_size, (rank + 1) * size // world_size


def batch_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from ``numpy.random.SeedSequence(key)`` (independent streams)."""
    state = np.random.SeedSequence(list(key)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class ParameterBatches(Dataset):
    """The training stream: item ``(epoch, index)`` is a whole batch of parameters and noise seeds."""

    def __init__(self, simulator: Simulator, batch_size: int, seed: int, length: int, rank: int = 0):
        self.prior = simulator.prior
        self.batch_size, self.seed, self.length, self.rank = batch_size, seed, length, rank

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        key = key if isinstance(key, tuple) else (key,)
        generator = batch_generator(self.seed, self.rank, *key)
        params = self.prior.sample(self.batch_size, generator)
        return {"params": params, "noise_seeds": draw_seeds(self.batch_size, generator)}


class FixedLenses(Dataset):
    """A fixed set of ``size`` lenses (parameters and noise seeds) served in batches of ``batch_size``.

    With ``world_size > 1`` only rank ``rank``'s contiguous block of the set is served; the
    set itself does not depend on the rank or the number of ranks. ``split`` (``val`` or
    ``test``) chooses the held-out galaxies of a galaxy-source library.
    """

    def __init__(
        self,
        simulator: Simulator,
        size: int,
        seed: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        split: str = "test",
    ):
        generator = batch_generator(seed)
        params = simulator.prior.sample(size, generator, split=split)
        noise_seeds = draw_seeds(size, generator)
        start, stop = shard_bounds(size, rank, world_size)
        self.params = {k: v[start:stop] for k, v in params.items()}
        self.noise_seeds = noise_seeds[start:stop]
        self.size, self.batch_size = stop - start, batch_size

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return {"params": {k: v[part] for k, v in self.params.items()}, "noise_seeds": self.noise_seeds[part]}


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys; starts mid-epoch after a resume.

    ``batches_done`` reports how many batches of the current epoch a resumed run has
    already trained on (Lightning restores that count from the checkpoint).
    """

    def __init__(self, length: int, batches_done: Callable[[], int]):
        self.length, self.batches_done, self.epoch = length, batches_done, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in range(self.batches_done(), self.length):
            yield (self.epoch, index)
