"""The parameter vocabulary: complete for what the priors draw, and in lenstronomy's terms."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lenscnn.params import LENS, PARAMETERS, SERSIC, SHEAR, ordered, parameter, unit
from lenscnn.sim.prior import Prior
from tests.helpers import CONF_DIR, compose_config


def lenstronomy_param_names(profile: str) -> list[str]:
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    if profile in ("SIE", "SHEAR", "EPL", "MULTIPOLE"):
        return LensModel([profile]).lens_model.func_list[0].param_names
    return LightModel([profile]).func_list[0].param_names


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "prior").glob("*.yaml")))
def test_every_parameter_a_shipped_prior_draws_is_in_the_vocabulary(name):
    spec = OmegaConf.to_container(compose_config("train", [f"prior={name}"]).prior, resolve=True)
    drawn = Prior(spec).sample(4, torch.Generator().manual_seed(0))
    # the common names are listed; other components' <component>_<keyword> resolve through the registry
    assert [n for n in drawn if parameter(n).label == n] == []


def test_profile_keywords_are_lenstronomys():
    for p in PARAMETERS.values():
        if p.profile:
            assert p.keyword in lenstronomy_param_names(p.profile), p
    assert list(LENS) == lenstronomy_param_names("SIE")
    assert list(SHEAR) == lenstronomy_param_names("SHEAR")[:2]
    assert set(SERSIC) < set(lenstronomy_param_names("SERSIC_ELLIPSE"))


def test_units_labels_and_order():
    assert [unit(n) for n in LENS] == ["arcsec", "", "", "arcsec", "arcsec"]
    assert unit("source_R_sersic") == "arcsec" and unit("source_phi_G") == "rad"
    assert parameter("theta_E").plot_unit == '"' and parameter("e1").plot_unit == ""
    assert parameter("theta_E").label == r"$\theta_E$"
    assert parameter("not_a_parameter").label == "not_a_parameter" and unit("not_a_parameter") == ""
    assert unit("neighbour_phi_G") == "rad" and parameter("neighbour_flux_ratio").label.endswith("[neighbour]")
    assert ordered(["zz", "gamma1", "center_y", "theta_E", "aa"]) == ["theta_E", "center_y", "gamma1", "aa", "zz"]


def test_every_registered_profile_keyword_is_lenstronomys():
    """Each registered profile names lenstronomy's profile and its keywords (options and fixed ones too)."""
    from lenscnn.sim.profiles import PROFILES

    for profile in PROFILES.values():
        names = lenstronomy_param_names(profile.name)
        assert set(profile.keyword_names) | set(profile.options) | set(profile.fixed) == set(names), profile.name
