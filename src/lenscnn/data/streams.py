"""Seeded lens streams: the endless training stream and the fixed validation and test sets.

Every set of lenses here is a prefix (or a range) of a seeded lens stream of
:func:`lenscnn.sim.lens_streams.draw_lenses`: lens ``i`` of the stream ``key`` (its parameters and
its noise seed) is drawn in block ``i // BLOCK`` (``BLOCK`` = 128 lenses) from
``SeedSequence([*key, i // BLOCK])``, so it does not depend on how many lenses are drawn, in
which batches, on which device or by how many ranks.

* the training stream of epoch ``e`` on rank ``r`` is the stream ``(seed, r, e)``; batch ``i``
  of size ``B`` is its lenses ``[iB, (i+1)B)`` (with ``B = 128``, block ``i``: drawn from
  ``SeedSequence([seed, r, e, i])``). No two ranks or epochs share lenses, lens ``j`` of an
  epoch is the same for every batch size, the stream does not depend on the number of
  dataloader workers, and a run resumed from a checkpoint (even mid-epoch) continues exactly
  the stream it would have drawn;
* the validation and test sets of ``n`` lenses are the first ``n`` lenses of the streams
  ``(VAL_SEED,)`` and ``(TEST_SEED,)``: identical for every run, architecture, batch size and
  rank, so a sweep compares models on the same lenses, and a larger set extends a smaller one.
  Under DDP each rank draws and evaluates one contiguous block of them (:func:`shard_bounds`)
  and torchmetrics sums the metric states over the ranks, so the metrics are those of the
  whole set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import Dataset, Sampler

from lenscnn.sim import Simulator
from lenscnn.sim.lens_streams import draw_lenses

#: Seeds of the fixed sets; changing them changes every published number.
VAL_SEED = 20_170_830  # Hezaveh et al. 2017, Nature 548, 555 (published 2017-08-30)
TEST_SEED = 20_171_120  # Perreault Levasseur et al. 2017, ApJL 850, L7


def shard_bounds(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(start, stop)`` of rank ``rank``'s contiguous block of ``size`` items split over ``world_size``
    ranks; blocks differ in length by at most one and together cover every item once."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    return rank * size // world_size, (rank + 1) * size // world_size


class ParameterBatches(Dataset):
    """The training stream: item ``(epoch, index)`` is a whole batch of parameters and noise seeds,
    lenses ``[index * batch_size, (index + 1) * batch_size)`` of the stream ``(seed, rank, epoch)``
    (an integer ``index`` alone is a batch of epoch 0)."""

    def __init__(self, simulator: Simulator, batch_size: int, seed: int, length: int, rank: int = 0):
        self.prior, self.observation, self.colours = simulator.prior, simulator.observation, simulator.colours
        self.batch_size, self.seed, self.length, self.rank = batch_size, seed, length, rank

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        start = index * self.batch_size
        params, noise_seeds = draw_lenses(
            self.prior,
            (self.seed, self.rank, epoch),
            start,
            start + self.batch_size,
            observation=self.observation,
            colours=self.colours,
        )
        return {"params": params, "noise_seeds": noise_seeds}


class FixedLenses(Dataset):
    """A fixed set of ``size`` lenses (parameters and noise seeds) served in batches of ``batch_size``:
    the first ``size`` lenses of the stream ``(seed,)``.

    With ``world_size > 1`` only rank ``rank``'s contiguous block of the set is drawn and served;
    the set itself does not depend on the rank, the number of ranks or the batch size, and a
    larger set starts with the lenses of a smaller one. ``split`` (``val`` or ``test``) chooses
    the held-out galaxies of a galaxy-source library.
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
        start, stop = shard_bounds(size, rank, world_size)
        self.params, self.noise_seeds = draw_lenses(
            simulator.prior, (seed,), start, stop, split, observation=simulator.observation, colours=simulator.colours
        )
        self.size, self.batch_size = stop - start, batch_size

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return {"params": {k: v[part] for k, v in self.params.items()}, "noise_seeds": self.noise_seeds[part]}


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys from the run's position in its stream; starts mid-epoch
    after a resume.

    ``position`` returns ``(epoch, index)`` of the next batch to train. The data module computes
    it from the optimizer steps taken (``global_step``, restored exactly from any checkpoint), not
    from Lightning's epoch counters: those are off by one epoch after a resume from a checkpoint
    saved on the last batch of an epoch (``ModelCheckpoint(every_n_train_steps=...)``), which
    would replay the previous epoch's lenses.
    """

    def __init__(self, length: int, position: Callable[[], tuple[int, int]]):
        self.length, self.position = length, position

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.position()
        for index in range(start, self.length):
            yield (epoch, index)
