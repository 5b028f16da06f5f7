"""A prior config (:mod:`lenscnn.sim.prior`) read without drawing from it and without loading its galaxy
libraries: the lens model it declares (:func:`lens_model_of`) and the config less its galaxies
(:func:`without_galaxies`). For the prior stored with a checkpoint, an HDF5 or a FITS file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lenscnn.sim.lens_model import LensModel
from lenscnn.sim.prior import Prior


def without_galaxies(prior_spec: Mapping[str, Any]) -> dict[str, Any]:
    """The prior config with every component's ``galaxies`` removed: the same lens model and Sersic
    envelopes, drawn without loading a galaxy library."""
    return {
        name: {k: v for k, v in section.items() if k != "galaxies"} if isinstance(section, Mapping) else section
        for name, section in prior_spec.items()
    }


def lens_model_of(prior_spec: Mapping[str, Any]) -> LensModel:
    """The lens model of a prior config (e.g. a checkpoint's), without loading its galaxy libraries:
    which profiles make the image, in lenstronomy's terms. Priors written before lens models were
    declared (``lens``, ``shear``, ``source``, ``lens_light`` sections) read as SIE (+ SHEAR) +
    SERSIC_ELLIPSE (+ SERSIC_ELLIPSE)."""
    return Prior(without_galaxies(prior_spec)).lens_model
