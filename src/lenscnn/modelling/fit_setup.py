"""What one lens-model fit starts from: :class:`FitSetup`, lenstronomy's keyword arguments of the lens model
to fit to one image, with what lenscnn knows of them (the lens model they were made for, the parameters the
network predicts, the free sky level, how the source was started).

:func:`lenscnn.modelling.kwargs.lens_model_kwargs` writes the keyword arguments as one dict whose ``lenscnn``
record holds the rest (the format of ``lenscnn-predict``'s ``lenstronomy/<image>.json``);
:meth:`FitSetup.from_kwargs` reads it, :meth:`FitSetup.as_kwargs` writes it back. A :class:`FitSetup` is
picklable: it goes to the worker processes that fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lenscnn.modelling.kwargs import JOINTS, KWARGS, seed_source, with_arrays
from lenscnn.sim.lens_model import LensModel


@dataclass(frozen=True)
class SourceSeed:
    """How the source of a setup was started where its lens model maps the arcs
    (:func:`lenscnn.modelling.kwargs.seed_source`), so that a start drawn elsewhere seeds its source the
    same way.

    Attributes:
        noise_rms: the noise of the image [counts/s/px]: pixels brighter than 3 of it are the arcs.
        pixel_scale: the image's pixel size [arcsec/px].
    """

    noise_rms: float
    pixel_scale: float


@dataclass(frozen=True, eq=False)  # compared by identity: its kwargs hold numpy arrays
class FitSetup:
    """A lens-model fit of one image as lenstronomy's ``FittingSequence`` runs it, and the start of its PSO.

    Attributes:
        kwargs: lenstronomy's keyword arguments by name, as
            :func:`lenscnn.modelling.kwargs.lens_model_kwargs` writes them, the pixel-grid transform and the
            PSF kernel as numpy arrays: ``kwargs_model`` (the profile lists); ``kwargs_lens``,
            ``kwargs_source`` and ``kwargs_lens_light`` (one dict per component, in the lens model's order; a
            free sky level is the last lens light), the start of the fit, with their ``*_sigma`` (the PSO's
            steps), ``*_fixed`` (keywords held fixed), ``*_lower`` and ``*_upper`` (bounds);
            ``kwargs_constraints`` (keywords tied to another component's); ``kwargs_pixel_grid``,
            ``kwargs_data`` (without ``image_data``), ``kwargs_psf`` and ``kwargs_numerics``. lenstronomy's
            units: positions and lengths [arcsec] from the image centre, angles [rad], amplitudes
            [counts/s/arcsec^2].
        lens_model: the lens model the kwargs were made for (maps their keywords to lenscnn's parameter names).
        network: the names of the parameters whose start and step are the network's mean and sigma (those it
            predicts with a sigma > 0), in the lens model's order.
        sky: whether the last lens light is a free sky level (lenstronomy's ``UNIFORM``,
            :func:`lenscnn.modelling.kwargs.sky_level`).
        source_seed: how the (first) source was started where the lens model maps the arcs; ``None``: it
            starts at the prior's mean.
    """

    kwargs: dict[str, Any]
    lens_model: LensModel
    network: tuple[str, ...] = ()
    sky: bool = False
    source_seed: SourceSeed | None = None

    @classmethod
    def from_kwargs(cls, setup: Mapping[str, Any]) -> FitSetup:
        """The fit of a :func:`lenscnn.modelling.kwargs.lens_model_kwargs` setup (after
        :func:`lenscnn.modelling.kwargs.seed_source` or read from its JSON): its ``lenscnn`` record as
        attributes, its lists as arrays (:func:`lenscnn.modelling.kwargs.with_arrays`)."""
        record = setup["lenscnn"]
        seed = record.get("source_seed")
        return cls(
            kwargs={key: value for key, value in with_arrays(setup).items() if key != "lenscnn"},
            lens_model=LensModel.from_dict(record["lens_model"]),
            network=tuple(record["network"]),
            sky=bool(record["sky"]),
            source_seed=None if not seed else SourceSeed(float(seed["noise_rms"]), float(seed["pixel_scale"])),
        )

    def as_kwargs(self) -> dict[str, Any]:
        """The setup as :func:`lenscnn.modelling.kwargs.lens_model_kwargs` writes it: the kwargs and the
        ``lenscnn`` record that the functions of :mod:`lenscnn.modelling.kwargs` read."""
        record: dict[str, Any] = {
            "lens_model": self.lens_model.to_dict(),
            "network": list(self.network),
            "sky": self.sky,
        }
        if self.source_seed is not None:
            record["source_seed"] = {
                "noise_rms": self.source_seed.noise_rms,
                "pixel_scale": self.source_seed.pixel_scale,
            }
        return {**self.kwargs, "lenscnn": record}

    def reseeded_source(self, image: np.ndarray, mask: np.ndarray | None) -> FitSetup:
        """This setup with its source started again where its lens maps the arcs of ``image`` (counts/s per
        pixel; ``mask``: ``True`` where a pixel counts), seeded as :attr:`source_seed` records (a start drawn
        elsewhere maps them elsewhere); unchanged when its source was not seeded."""
        if self.source_seed is None:
            return self
        noise_rms, pixel_scale = self.source_seed.noise_rms, self.source_seed.pixel_scale
        return FitSetup.from_kwargs(seed_source(self.as_kwargs(), image, noise_rms, pixel_scale, mask))

    def sampled(self, name: str) -> tuple[float, float, float, float] | None:
        """``(start, step, lower, upper)`` of parameter ``name`` where the fit samples it (the component of
        any role whose keyword of that name has a step: a tied centre may be sampled on a lens light);
        ``None`` when it is held fixed."""
        for role, key in KWARGS.items():
            for i, c in enumerate(self.lens_model.of_role(role)):
                for keyword, parameter in c.parameters.items():
                    steps, fixed = self.kwargs[f"{key}_sigma"][i], self.kwargs[f"{key}_fixed"][i]
                    if parameter == name and keyword in steps and keyword not in fixed:
                        return (
                            float(self.kwargs[key][i][keyword]),
                            float(steps[keyword]),
                            float(self.kwargs[f"{key}_lower"][i][keyword]),
                            float(self.kwargs[f"{key}_upper"][i][keyword]),
                        )
        return None

    def free_keywords(self, role: str) -> list[list[Any]]:
        """lenstronomy's ``[[index, [keyword, ...]], ...]`` of the nonlinear keywords the fit samples in the
        components of ``role``: those with a step, neither held fixed nor set by a constraint from another
        component (a lens centre on the lens light), amplitudes (solved linearly) left out. The lists
        ``FittingSequence.update_settings`` takes to hold them fixed for a stage of the fit, or to free them."""
        key = KWARGS[role]
        constraints = self.kwargs["kwargs_constraints"]
        followers = {  # (component index, keyword) set from another component's
            (index, keyword)
            for (_, to), joint in JOINTS.items()
            if to == role
            for _, index, keywords in constraints.get(joint, [])
            for keyword in keywords
        }
        lists = [
            [i, [k for k in steps if k not in fixed and k != "amp" and (i, k) not in followers]]
            for i, (steps, fixed) in enumerate(
                zip(self.kwargs[f"{key}_sigma"], self.kwargs[f"{key}_fixed"], strict=True)
            )
        ]
        return [entry for entry in lists if entry[1]]

    def network_sigma(self, name: str) -> float | None:
        """The network's sigma of parameter ``name`` (the step the fit starts it with), ``None`` when the
        network does not predict it."""
        if name not in self.network:
            return None
        sampled = self.sampled(name)
        return None if sampled is None else sampled[1]

    def fixed_names(self, role: str) -> set[str]:
        """Names of the parameters of ``role`` that the fit holds fixed (does not sample)."""
        fixed = self.kwargs[f"{KWARGS[role]}_fixed"]
        return {
            name
            for i, c in enumerate(self.lens_model.of_role(role))
            for keyword, name in c.own.items()
            if keyword in fixed[i]
        }
