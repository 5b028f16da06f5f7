"""What every image of a ``lenscnn-refine`` run is fitted with, built once from the configs of the model that
made the predictions: the lens model, the observation (grid and PSF), the prior's parameter moments."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lenscnn.errors import UserError
from lenscnn.modelling.inputs import fit_kernel
from lenscnn.modelling.kwargs import fitted_model, observation_kwargs, parameter_moments
from lenscnn.modelling.settings import Budget
from lenscnn.params import parameter
from lenscnn.preparation.pipeline import Preparation
from lenscnn.preparation.psf import read_psf
from lenscnn.sim import Instrument
from lenscnn.sim.lens_model import LensModel
from lenscnn.sim.prior_config import lens_model_of
from lenscnn.sim.profiles import PROFILES


@dataclass(frozen=True)
class FitConfiguration:
    """The fit of every image: ``model`` the lens model to fit, ``observation`` its lenstronomy grid, PSF and
    numerics (:func:`lenscnn.modelling.kwargs.observation_kwargs`), ``moments`` the prior's mean and spread
    per parameter (where what the network does not predict starts, with which step), ``instrument`` the
    pixel grid, PSF and noise the images are prepared on."""

    model: LensModel
    observation: dict[str, Any]
    moments: dict[str, tuple[float, float]]
    instrument: Instrument

    @classmethod
    def build(
        cls,
        instrument: Mapping[str, Any],
        prior: Mapping[str, Any],
        preparation: Preparation,
        *,
        shear: bool,
        lens_light: bool | int,
    ) -> FitConfiguration:
        """From an ``instrument`` and a ``prior`` config (the network's), the fitted model is the prior's with
        the ``shear`` switch and ``lens_light`` components on the lens centre, neighbours and stars dropped
        (:func:`lenscnn.modelling.kwargs.fitted_model`). The PSF is the inputs' where the preparation knows it:
        the ``psf`` file's kernel resampled to the instrument's pixels (at most the image's size), or a
        Gaussian of ``psf_fwhm``; else the instrument's. An image whose file carries its PSF (``psf=auto`` or
        an HDU) is fitted with that one (:func:`lenscnn.modelling.inputs.load_images`)."""
        instrument = dict(instrument)
        if preparation.psf_file is None and preparation.psf_fwhm is not None:
            instrument["psf"] = {"type": "gaussian", "fwhm": preparation.psf_fwhm}
        grid = Instrument.from_config(instrument)
        kernel = None if preparation.psf_file is None else fit_kernel(*read_psf(preparation.psf_file), grid)
        model = fitted_model(lens_model_of(prior), shear=shear, lens_light=lens_light)
        return cls(model, observation_kwargs(grid, kernel), parameter_moments(prior), grid)

    def check_predictions(self, predictions: Mapping[tuple[str, str], Mapping[str, float]]) -> None:
        """Refuse predictions of mass parameters the lens model to fit lacks (an EPL's ``gamma`` with an SIE
        prior): the fit would silently drop them. A shear is the ``shear`` switch's to drop."""
        fittable = set(fitted_model(self.model, shear=True, lens_light=False).names)
        predicted = {n for values in predictions.values() for n in values if not n.endswith("_sigma")}
        missing = sorted(
            n
            for n in predicted - fittable
            if parameter(n).profile in PROFILES and PROFILES[parameter(n).profile].kind == "mass"
        )
        if missing:
            lenses = self.model.kwargs_model()["lens_model_list"]
            raise UserError(
                f"the predictions hold {missing}, which the lens model of this prior ({lenses}) lacks; "
                "give the prior the network was trained with (e.g. prior=epl for gamma)"
            )


def check_installed(budget: Budget) -> None:
    """Refuse to start without lenstronomy (and emcee for an MCMC): both are the ``fit`` extra."""
    needed = ["lenstronomy", *(["emcee"] if budget.mcmc_run > 0 else [])]
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"lenscnn-refine needs {' and '.join(missing)}: pip install 'lenscnn[fit]'")
