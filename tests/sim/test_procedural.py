"""Procedural source galaxies: the library conventions, drawn the same from a name on every run, the families
(the training ones and the held-out chain family), their substructure, lensed images against lenstronomy's
INTERPOL, and a prior drawing them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy import ndimage

import tests.sim.test_galaxy_sources as galaxy_sources
from lenscnn.errors import UserError
from lenscnn.sim import Simulator
from lenscnn.sim.galaxies import load_library, procedural
from lenscnn.sim.galaxies.library import half_light_radius, join_libraries
from lenscnn.sim.galaxies.procedural import FAMILIES, galaxy_stamp, procedural_library
from tests.helpers import compose_config, load_conf


@pytest.fixture(scope="module")
def library():
    return procedural_library(FAMILIES, per_family=12)


def test_stamps_follow_the_library_conventions_and_depend_only_on_their_name(library):
    size = library.stamp_size
    for stamp, r_half in zip(library.images, library.r_half, strict=True):
        assert stamp.min() >= 0 and stamp.sum() == pytest.approx(1.0, abs=1e-5)
        centroid = ndimage.center_of_mass(stamp.astype(np.float64))
        assert centroid == pytest.approx(((size - 1) / 2, (size - 1) / 2), abs=1e-3)
        assert 2 <= r_half <= 12 and r_half == pytest.approx(half_light_radius(stamp), rel=1e-6)
        assert stamp[:2].sum() + stamp[-2:].sum() < 0.01  # the galaxy fits its stamp
    # the native pixel scale gives every galaxy HST's resolution: a 0.25" half-light radius
    assert library.r_half * library.pixel_scale == pytest.approx(np.full(len(library), 0.25))
    assert np.array_equal(galaxy_stamp("procedural-spiral-0007"), galaxy_stamp("procedural-spiral-0007"))
    assert not np.allclose(galaxy_stamp("procedural-spiral-0007"), galaxy_stamp("procedural-spiral-0008"))


def test_families_have_the_substructure_of_real_sources(library):
    """Clumpy discs and spirals have several light peaks (clumps, arms), compact galaxies one dominant core,
    chains several blobs; a smooth Sersic source has one peak."""

    def peaks(stamp: np.ndarray) -> int:
        local = (stamp == ndimage.maximum_filter(stamp, size=5)) & (stamp > 0.03 * stamp.max())
        return ndimage.label(local)[1]  # a flat top of equal pixels is one peak

    counts = {f: [peaks(s) for s, n in zip(library.images, library.names, strict=True) if f in n] for f in FAMILIES}
    assert np.median(counts["clumpy"]) >= 3 and np.median(counts["spiral"]) >= 2 and np.median(counts["chain"]) >= 2
    core = [s.max() / s.sum() for s, n in zip(library.images, library.names, strict=True) if "compact" in n]
    clumpy = [s.max() / s.sum() for s, n in zip(library.images, library.names, strict=True) if "clumpy" in n]
    assert np.median(core) > 1.5 * np.median(clumpy)
    y, x = np.mgrid[:64, :64] - 31.5
    assert peaks(np.exp(-np.hypot(x, y / 0.7) / 4.0)) == 1


def test_procedural_specs_choose_families_and_refuse_unknown_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("LENSCNN_CACHE", str(tmp_path))
    monkeypatch.setattr(procedural, "PER_FAMILY", 10)  # 200 galaxies per family in use
    held_out = load_library("procedural:chain", size=32)
    assert len(held_out) == 10 and all(n.startswith("procedural-chain-") for n in held_out.names)
    assert held_out.stamp_size == 32 and list(tmp_path.glob("procedural_v*_chain_10x32px.h5"))
    with pytest.raises(UserError, match="procedural galaxy families \\['spirals'\\]: choose among clumpy, spiral"):
        load_library("procedural:spirals")


def test_lensed_procedural_galaxies_match_lenstronomy(rng, lens_params, make_sim, small_instrument, tmp_path):
    """A clumpy, a spiral and a compact galaxy lensed by the simulator equal lenstronomy's INTERPOL images."""
    path = tmp_path / "procedural.h5"
    procedural_library(FAMILIES, per_family=6).save(path)  # the first three: clumpy galaxies
    # (one of each family: test_families_have_the_substructure_of_real_sources; the fit is the same kernel)
    galaxy_sources.test_lensed_galaxy_image_matches_lenstronomy(
        rng, lens_params, make_sim, small_instrument, path, tmp_path
    )


def test_a_prior_draws_procedural_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("LENSCNN_CACHE", str(tmp_path))
    monkeypatch.setattr(procedural, "PER_FAMILY", 20)
    prior = load_conf("prior", "realistic")
    prior["source"]["galaxies"] = {"library": "procedural", "fraction": 1.0}
    simulator = Simulator.from_config({"instrument": load_conf("instrument", "quickstart"), "prior": prior})
    images, params = simulator.sample(16, simulator.make_generator(3))
    assert torch.isfinite(images).all() and (params["source_galaxy"] >= 0).all()
    library = simulator.prior.galaxy_samplers["source"].library
    assert {n.split("-")[1] for n in library.names} == {"clumpy", "spiral", "compact"}  # the chains held out


def test_joined_libraries_keep_every_galaxy_and_its_split(tmp_path, monkeypatch):
    """``a+b`` (prior=space's ``hudf+procedural``) holds both libraries' galaxies in order, each in the split its
    name gives it; libraries of other stamp sizes are refused."""
    monkeypatch.setenv("LENSCNN_CACHE", str(tmp_path))
    monkeypatch.setattr(procedural, "PER_FAMILY", 10)
    chain, compact = load_library("procedural:chain", 32), load_library("procedural:compact", 32)
    joined = load_library("procedural:chain+procedural:compact", 32)
    assert joined.names == chain.names + compact.names
    assert np.array_equal(joined.images, np.concatenate([chain.images, compact.images]))
    assert np.array_equal(joined.split, np.concatenate([chain.split, compact.split]))
    assert np.array_equal(joined.r_half, np.concatenate([chain.r_half, compact.r_half]))
    with pytest.raises(UserError, match="different sizes \\[16, 32\\]"):
        join_libraries([chain, load_library("procedural:chain", 16)])
    joined.save(tmp_path / "chain+compact.h5")  # a file whose name holds a + is a file
    assert load_library(str(tmp_path / "chain+compact.h5")).names == joined.names


def test_the_space_prior_draws_real_and_procedural_sources_on_the_space_grid(tmp_path, monkeypatch):
    """experiment=space: theta_E 0.3-3" on an 8" grid of 0.1" pixels, sources from HUDF and the training families."""
    monkeypatch.setenv("LENSCNN_CACHE", str(tmp_path))
    monkeypatch.setattr(procedural, "PER_FAMILY", 20)
    cfg = compose_config("train", ["experiment=space", "data.simulator.compile=false"])
    spec = OmegaConf.to_container(cfg.data.simulator, resolve=True)
    spec["prior"]["source"]["galaxies"]["library"] = "procedural"  # hudf is joined as test_joined_libraries shows
    instrument = spec["instrument"]
    simulator = Simulator.from_config(spec)
    images, params = simulator.sample(64, simulator.make_generator(5))
    assert images.shape == (64, 1, 80, 80) and instrument["image_size"] * instrument["pixel_scale"] >= 8.0
    assert torch.isfinite(images).all()
    assert float(params["theta_E"].min()) >= 0.3 and float(params["theta_E"].max()) <= 3.0
    assert float(params["theta_E"].max()) > 2.0  # beyond the survey prior's 2"
    assert 0.5 < float((params["source_galaxy"] >= 0).double().mean()) < 0.9  # 70% galaxies
