"""``lenstronomy/<image>.json`` of ``lenscnn-predict formats=[csv,lenstronomy]``: per image the
lenstronomy keyword arguments of a fit at the network's estimate (:mod:`lenscnn.modelling.kwargs`), for
the lens model of the network's prior."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

from lenscnn.errors import UserError
from lenscnn.io.atomic import StagedDirectory
from lenscnn.io.cutouts import image_stem
from lenscnn.modelling.kwargs import lens_model_kwargs, observation_kwargs, parameter_moments
from lenscnn.models.ensemble import Ensemble
from lenscnn.sim import Instrument


class Estimate(Protocol):
    """A network's estimate for one image (e.g. :class:`lenscnn.evaluation.cutouts.CutoutResult`): its
    ``label`` and the ``mean`` and ``sigma`` (``None`` without uncertainties) per target of the model."""

    label: str
    mean: np.ndarray
    sigma: np.ndarray | None


class LenstronomyWriter(StagedDirectory):
    """Writes one lenstronomy JSON per image (:func:`lenscnn.modelling.kwargs.lens_model_kwargs`) into a
    temporary directory that becomes ``directory`` only when every image succeeded."""

    def __init__(self, directory: Path, ensemble: Ensemble):
        config = ensemble.simulator_config
        if not config:
            raise UserError("formats=[...,lenstronomy] needs the model's simulator config, which its checkpoint lacks")
        super().__init__(directory)
        self.names = ensemble.target_names
        self.observation = observation_kwargs(Instrument.from_config(config["instrument"]))
        self.lens_model = ensemble.lens_model
        self.moments = parameter_moments(config["prior"])

    def write(self, estimate: Estimate) -> None:
        """``<image>.json`` of one image's estimate (its label, mean and sigma per target)."""
        label = estimate.label
        values = dict(zip(self.names, estimate.mean.tolist(), strict=True))
        sigmas = None if estimate.sigma is None else dict(zip(self.names, estimate.sigma.tolist(), strict=True))
        setup = lens_model_kwargs(values, sigmas, self.observation, self.moments, self.lens_model)
        path = self.staging / f"{image_stem(label)}.json"
        if path.exists():
            raise UserError(f"{label}: two input images share the output name {path.name}; rename one of them")
        path.write_text(json.dumps({"image": label, **setup}, indent=1))
