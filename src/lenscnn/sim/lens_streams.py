"""Seeded lens streams: the lenses of a seed, drawn in blocks on the CPU, the same whatever range they are
drawn in (what :class:`lenscnn.sim.simulator.Simulator` draws from, and the training stream and fixed sets of
:mod:`lenscnn.data.streams`).

Lens ``i`` of the stream ``key`` (its parameters, nuisances and noise seed) is drawn in block ``i // BLOCK``
from :func:`key_generator` ``(*key, i // BLOCK)``, so it does not depend on how many lenses are drawn, in which
chunks, or on which device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lenscnn.sim import func
from lenscnn.sim.colours import Colours
from lenscnn.sim.observation import Observation
from lenscnn.sim.prior import Prior

#: Lenses of a seeded stream are drawn in blocks of this many: block ``k`` of the stream ``key``
#: is drawn whole from :func:`key_generator` ``(*key, k)``, so lens ``i`` of a stream does not
#: depend on how many lenses are drawn, in which chunks, or on which device. 128 is the shipped
#: training batch size: such a batch is one whole block, the batch the shipped ensemble was
#: trained on (changing BLOCK changes every training stream, the fixed sets and their metrics).
BLOCK = 128

#: Last element of the key of a block's observation draws (``key_generator(*key, k, OBSERVATION_KEY)``):
#: a stream of its own, so adding nuisances changes neither the lenses nor their noise seeds.
OBSERVATION_KEY = 1
#: Last element of the key of a block's colour draws (:mod:`lenscnn.sim.colours`): the same lenses, noise seeds
#: and nuisances in one band or several.
COLOUR_KEY = 2


def key_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from ``numpy.random.SeedSequence(key)``: distinct keys give
    independent streams."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def draw_lenses(
    prior: Prior,
    key: tuple[int, ...],
    start: int,
    stop: int,
    split: str = "train",
    dtype: torch.dtype = torch.float32,
    observation: Observation | None = None,
    colours: Colours | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """Lenses ``start .. stop-1`` of the seeded stream ``key``: ``({name: Tensor[stop - start]}, noise_seeds)``
    on the CPU (noise seeds int64, for :meth:`Simulator.render`).

    The stream is a sequence of blocks of :data:`BLOCK` lenses; block ``k`` is drawn whole, on the
    CPU, from ``key_generator(*key, k)``: first its parameters (``prior.sample(BLOCK, ...)``),
    then its noise seeds. Lens ``i`` is therefore the same whatever range it is drawn in. ``split``
    picks the galaxies of a galaxy-source library. The ``observation``'s nuisances of the block come
    from ``key_generator(*key, k, OBSERVATION_KEY)``: the same lenses and noise seeds with or without them; so
    do the ``colours`` of a multi-band instrument, from ``key_generator(*key, k, COLOUR_KEY)``.
    """
    if not 0 <= start <= stop:
        raise ValueError(f"lenses {start}..{stop}: need 0 <= start <= stop")
    first, last = start // BLOCK, -(-stop // BLOCK)
    blocks = []
    for k in range(first, max(last, first + 1)):  # an empty range still has every parameter name
        generator = key_generator(*key, k)
        params = prior.sample(BLOCK, generator, "cpu", dtype, split=split)
        seeds = func.draw_seeds(BLOCK, generator)
        if observation is not None:
            params.update(observation.sample(BLOCK, key_generator(*key, k, OBSERVATION_KEY), "cpu", dtype))
        if colours is not None:
            params.update(colours.sample(BLOCK, key_generator(*key, k, COLOUR_KEY), "cpu", dtype))
        blocks.append((params, seeds))
    cut = slice(start - first * BLOCK, stop - first * BLOCK)
    if len(blocks) == 1:
        params, seeds = blocks[0]
        return {k: v[cut] for k, v in params.items()}, seeds[cut]
    params = {k: torch.cat([b[0][k] for b in blocks])[cut] for k in blocks[0][0]}
    return params, torch.cat([b[1] for b in blocks])[cut]


class LensStream:
    """The lenses of one seed, in order (what :meth:`Simulator.make_generator` returns).

    :meth:`Simulator.sample` and :meth:`Simulator.sample_params` given a stream draw its next
    lenses (parameters and noise seeds, see :func:`draw_lenses`) and advance :attr:`position`:
    lens ``i`` of a seed is the same whatever the number of lenses drawn, the chunks they are
    drawn in and the device (parameters are drawn on the CPU; the Gaussian noise is
    counter-based). Exact Poisson noise, and the noise of :meth:`Simulator.render` given a
    stream, come from :attr:`generator`, a ``torch.Generator`` on the device seeded with ``seed``
    (reproducible for the same draws on the same device only).
    """

    def __init__(self, seed: int, device: torch.device | str = "cpu"):
        self.key = (int(seed),)
        self.position = 0
        self.generator = torch.Generator(device=device).manual_seed(int(seed))

    def draw(
        self,
        prior: Prior,
        n: int,
        split: str = "train",
        dtype: torch.dtype = torch.float32,
        observation: Observation | None = None,
        colours: Colours | None = None,
    ) -> tuple[dict[str, Tensor], Tensor]:
        """The next ``n`` lenses (CPU parameters and noise seeds); advances the stream."""
        drawn = draw_lenses(prior, self.key, self.position, self.position + n, split, dtype, observation, colours)
        self.position += n
        return drawn


def torch_generator(generator: torch.Generator | LensStream | None) -> torch.Generator | None:
    """The ``torch.Generator`` to draw noise from: a stream's :attr:`LensStream.generator`, or ``generator``."""
    return generator.generator if isinstance(generator, LensStream) else generator
