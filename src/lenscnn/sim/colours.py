"""Colours: the flux of each light component in every band of a multi-band instrument.

A colour is a difference of AB magnitudes, ``m(band) - m(reference)``, the reference being the instrument's
first band (VIS for Euclid, ``i`` for a ``g, r, i`` survey when listed first). A ``colours`` config (``conf/colours/``)
gives each light component of the prior a distribution of its colour in every other band, or names a component
whose colours it shares (a galaxy's bulge and envelope)::

    lens_light: {Y: {dist: uniform, low: -1.2, high: -0.7}, J: ..., H: ...}
    lens_light_2: lens_light
    source: {Y: {dist: uniform, low: -0.3, high: 0.2}, ...}

A component the config does not name is flat in AB (colour 0 in every band). The prior's amplitudes are the
reference band's counts/s; band ``b`` gets ``10**(-0.4 * (colour - (zero_point_b - zero_point_ref)))`` times
as many (:meth:`Colours.weights`). Colours are drawn as parameters named ``colour_<component>_<band>`` from a
stream of their own (:data:`lenscnn.sim.lens_streams.COLOUR_KEY`), so a prior seen in several bands has the same
lenses, and the same reference-band images, as seen in one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lenscnn.errors import UserError
from lenscnn.sim.distributions import Distribution, parse_distribution
from lenscnn.sim.instrument import Instrument


def colour_name(component: str, band: str) -> str:
    """The parameter of ``component``'s colour in ``band``, ``m(band) - m(reference)`` [AB mag]."""
    return f"colour_{component}_{band}"


@dataclass(frozen=True)
class Colours:
    """The colour prior of a multi-band instrument.

    Attributes:
        bands: the instrument's band names, the reference first.
        offsets: ``zero_point_b - zero_point_ref`` per band [mag] (0 where a zero point is not given).
        draws: per drawn component, the distribution of its colour in each band after the reference.
        ties: components that share another's colours, by name.
        components: every light component of the prior, in order (``source`` and ``lens_light`` roles).
    """

    bands: tuple[str, ...]
    offsets: tuple[float, ...]
    draws: Mapping[str, Mapping[str, Distribution]]
    ties: Mapping[str, str]
    components: tuple[str, ...]

    @classmethod
    def from_config(cls, spec: Mapping[str, Any] | None, instrument: Instrument, components: Sequence[str]) -> Colours:
        """Validate a ``colours`` config against the instrument's bands and the prior's light ``components``."""
        spec = dict(spec or {})
        bands = instrument.band_names
        reference = instrument.bands[0].zero_point  # given wherever another band's is (Instrument.from_config)
        offsets = tuple(0.0 if b.zero_point is None else b.zero_point - reference for b in instrument.bands)
        others = set(bands[1:])
        draws: dict[str, dict[str, Distribution]] = {}
        ties: dict[str, str] = {}
        for component, colours in spec.items():
            if component not in components:
                raise UserError(
                    f"colours.{component}: not a light component of the prior; choose from {list(components)}"
                )
            if isinstance(colours, str):
                ties[component] = colours
                continue
            if not isinstance(colours, Mapping) or set(colours) != others:
                given = sorted(colours) if isinstance(colours, Mapping) else colours
                raise UserError(
                    f"colours.{component}: give its colour m(band) - m({bands[0]}) in each of {sorted(others)} "
                    f"(a distribution each), or the name of a component it shares them with; got {given!r}"
                )
            draws[component] = {b: parse_distribution(colours[b], f"colours.{component}.{b}") for b in bands[1:]}
        for component, target in ties.items():
            if target not in draws:
                raise UserError(
                    f"colours.{component}: {target!r} is no component with colours drawn; choose from {sorted(draws)}"
                )
        return cls(bands, offsets, draws, ties, tuple(components))

    @property
    def names(self) -> list[str]:
        """The colour parameters drawn, in order."""
        return [colour_name(c, b) for c, per_band in self.draws.items() for b in per_band]

    def sample(
        self, n: int, generator: torch.Generator | None, device: torch.device | str = "cpu", dtype=torch.float32
    ) -> dict[str, Tensor]:
        """``n`` draws of every colour parameter (:attr:`names`), each ``(n,)`` on ``device``."""
        device = torch.device(device)
        return {
            colour_name(c, b): dist.sample(n, generator, device, dtype)
            for c, per_band in self.draws.items()
            for b, dist in per_band.items()
        }

    def weights(self, component: str, params: Mapping[str, Tensor], like: Tensor) -> Tensor:
        """``component``'s counts/s in each band over those in the reference, ``(B, C, 1, 1)`` for parameters
        of shape ``(B, 1, 1)``, in the dtype and on the device of ``like``."""
        source = self.ties.get(component, component)
        batch = like.shape[0]
        columns = [torch.ones((batch, 1, 1), dtype=like.dtype, device=like.device)]
        for band, offset in zip(self.bands[1:], self.offsets[1:], strict=True):
            if source in self.draws:
                colour = params[colour_name(source, band)].to(like).reshape(batch, 1, 1)
            else:
                colour = torch.zeros((batch, 1, 1), dtype=like.dtype, device=like.device)
            columns.append(10.0 ** (-0.4 * (colour - offset)))
        return torch.stack(columns, dim=1)
