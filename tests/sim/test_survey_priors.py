"""The survey priors: prior=realistic_neighbour draws prior=realistic's lenses (same seed, same lenses) with one
close neighbour added; prior=survey composes and draws extended, bright lens light, neighbours and stars."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lenscnn.sim import Simulator
from lenscnn.sim.lens_streams import draw_lenses
from lenscnn.sim.prior import Prior
from tests.helpers import compose_config

#: Half the side of the 5.12" quickstart field [arcsec].
HALF_FIELD = 2.56


def composed(prior: str) -> tuple[Prior, dict]:
    """The prior a training run with ``prior=<prior>`` draws from (Hydra-composed), and its simulator config."""
    cfg = compose_config("train", [f"prior={prior}", "data.simulator.compile=false"])
    simulator = OmegaConf.to_container(cfg.data.simulator, resolve=True)
    return Prior(simulator["prior"]), simulator


@pytest.mark.parametrize("seed", [0, 7])
def test_realistic_neighbour_draws_the_realistic_lenses_plus_a_neighbour(seed):
    realistic, _ = composed("realistic")
    neighbour, _ = composed("realistic_neighbour")
    assert neighbour.names[: len(realistic.names)] == realistic.names  # drawn first, in the same order
    base, _ = draw_lenses(realistic, (seed,), 0, 256, split="test")
    params, _ = draw_lenses(neighbour, (seed,), 0, 256, split="test")
    for name, value in base.items():
        assert torch.equal(params[name], value), name
    added = set(params) - set(base)
    assert added == {f"neighbour_{k}" for k in ("amp", "flux_ratio", "R_sersic", "n_sersic", "e1", "e2")} | {
        f"neighbour_{k}" for k in ("center_x", "center_y", "galaxy", "phi_G", "flip")
    }
    # always present, within 2" of the lens, 0.3-3 times the source's flux, half of them library galaxies
    assert (params["neighbour_amp"] > 0).all()
    assert ((params["neighbour_flux_ratio"] >= 0.3) & (params["neighbour_flux_ratio"] <= 3.0)).all()
    for axis in "xy":
        offset = params[f"neighbour_center_{axis}"] - params[f"center_{axis}"]
        assert offset.abs().max() <= 2.0 + 1e-6 and offset.abs().max() > 1.5
    assert 0.35 < (params["neighbour_galaxy"] >= 0).float().mean() < 0.65


def test_realistic_neighbour_images_are_the_realistic_images_plus_the_neighbour():
    """Same lenses, noise-free: the images differ by the neighbour's (non-negative) light only."""
    _, spec = composed("realistic_neighbour")
    _, base_spec = composed("realistic")
    with_neighbour, without = Simulator.from_config(spec), Simulator.from_config(base_spec)
    params, _ = draw_lenses(with_neighbour.prior, (3,), 0, 16, split="test")
    difference = with_neighbour.render(params, noise=False) - without.render(params, noise=False)
    assert (difference >= -1e-4 * without.render(params, noise=False).amax()).all()
    assert (difference.sum((-3, -2, -1)) > 0).all()


def test_survey_prior_draws_extended_bright_lens_light_neighbours_and_stars():
    prior, spec = composed("survey")
    assert prior.lens_model.kwargs_model() == {
        "lens_model_list": ["SIE", "SHEAR"],
        "source_light_model_list": ["SERSIC_ELLIPSE"],
        "lens_light_model_list": 4 * ["SERSIC_ELLIPSE"] + ["GAUSSIAN"],
    }
    assert set(prior.galaxy_samplers) == {"source", "neighbour"}
    params, _ = draw_lenses(prior, (0,), 0, 4096, split="test")
    assert set(params) == set(prior.names)
    # lens light: half-light radii up to 4", lens-to-source flux ratios in the >> 100 regime
    assert params["lens_light_2_R_sersic"].max() >= 3.0
    ratio = params["lens_light_flux_ratio"] + params["lens_light_2_flux_ratio"]
    assert (ratio > 100).float().mean() > 0.1 and ratio.max() > 500
    # absent fractions (amp 0) as configured
    for component, absent in (("lens_light", 0.3), ("lens_light_2", 0.4), ("neighbour", 0.5), ("neighbour_2", 0.7)):
        assert abs((params[f"{component}_amp"] == 0).float().mean() - absent) < 0.03, component
    # neighbours and stars inside the field, some of them
    for component, share in (("neighbour", 0.85), ("neighbour_2", 0.6)):  # of those present: within +-2.5", +-3"
        present = params[f"{component}_amp"] > 0
        x, y = (params[f"{component}_center_{axis}"][present] for axis in "xy")
        assert ((x.abs() < HALF_FIELD) & (y.abs() < HALF_FIELD)).float().mean() > share, component
    star_inside = (params["star_center_x"].abs() < HALF_FIELD) & (params["star_center_y"].abs() < HALF_FIELD)
    assert abs(star_inside.float().mean() - (HALF_FIELD / 4.0) ** 2) < 0.03  # centres drawn in +-4"
    assert ((params["star_sigma"] >= 0.04) & (params["star_sigma"] <= 0.06)).all()
    # and it renders
    sim = Simulator.from_config(spec)
    images, drawn = sim.sample(16, sim.make_generator(0), split="test")
    assert images.shape == (16, 1, 64, 64) and torch.isfinite(images).all()
    assert set(drawn) == set(prior.names)
