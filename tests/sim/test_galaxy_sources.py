"""Real-galaxy sources and the realistic prior: the INTERPOL profile and lensed galaxy images against lenstronomy,
splits by galaxy, lens light by flux ratio."""

import copy

import numpy as np
import pytest
import torch
from astropy.io import fits
from lenstronomy.LightModel.light_model import LightModel
from lenstronomy.Util import param_util

from lenscnn.sim import func
from tests.helpers import lenstronomy_kwargs, load_conf


def _stamp(rng: np.random.Generator, shape: tuple[int, int] = (24, 20)) -> np.ndarray:
    """A lumpy, asymmetric galaxy-like stamp (knots on a disc), summing to 1, non-zero up to its edge."""
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(float)
    rows -= (shape[0] - 1) / 2
    cols -= (shape[1] - 1) / 2
    image = np.exp(-np.hypot(cols / 5.0, rows / 3.0))
    for _ in range(5):
        r0, c0 = rng.uniform(-6, 6, 2)
        image += rng.uniform(0.2, 1.0) * np.exp(-((rows - r0) ** 2 + (cols - c0) ** 2) / 2.0)
    return image / image.sum()


def _interpol_sets(rng: np.random.Generator, n: int) -> list[dict]:
    return [
        {
            "amp": rng.uniform(10, 1000),
            "center_x": rng.uniform(-0.3, 0.3),
            "center_y": rng.uniform(-0.3, 0.3),
            "phi_G": rng.uniform(-np.pi, np.pi),
            "scale": rng.uniform(0.01, 0.1),
        }
        for _ in range(n)
    ]


@pytest.mark.parametrize("flip", [False, True])
def test_interpolated_profile_matches_lenstronomy_interpol(rng, flip):
    """Four stamps, each with its own amp, centre, rotation and scale, at positions inside, on and beyond the stamps'
    edges; a flipped stamp equals lenstronomy's INTERPOL of the mirrored stamp."""
    stamps = [_stamp(rng) for _ in range(4)]
    sets = _interpol_sets(rng, 4)
    # within +-16 stamp pixels of each centre: the stamp (+-12 x +-10 pixels), its edge and beyond
    x, y = rng.uniform(-16, 16, (2, 4, 30, 30)) * np.array([s["scale"] for s in sets])[:, None, None]
    x += np.array([s["center_x"] for s in sets])[:, None, None]
    y += np.array([s["center_y"] for s in sets])[:, None, None]
    p = {k: torch.tensor([s[k] for s in sets], dtype=torch.float64).view(-1, 1, 1) for k in sets[0]}
    flips = torch.full((4, 1, 1), float(flip), dtype=torch.float64)
    ours = func.interpolated_profile(
        torch.tensor(x), torch.tensor(y), torch.tensor(np.stack(stamps)), *p.values(), flip=flips
    ).numpy()
    for k, (stamp, s) in enumerate(zip(stamps, sets, strict=True)):
        image = stamp[:, ::-1] if flip else stamp
        reference = LightModel(["INTERPOL"]).surface_brightness(x[k], y[k], [{"image": image, **s}])
        peak = s["amp"] * stamp.max()
        assert (reference > 0).mean() > 0.2 and (reference == 0).mean() > 0.2  # inside and outside the stamp
        np.testing.assert_allclose(ours[k], reference, rtol=0, atol=1e-9 * peak)


def test_sersic_total_flux_matches_lenstronomy(rng):
    for _ in range(10):
        kwargs = {"amp": rng.uniform(1, 500), "R_sersic": rng.uniform(0.05, 2), "n_sersic": rng.uniform(0.5, 6)}
        kwargs.update(e1=0.1, e2=-0.2, center_x=0.0, center_y=0.0)
        (reference,) = LightModel(["SERSIC_ELLIPSE"]).total_flux([kwargs])
        ours = func.sersic_total_flux(
            *(torch.tensor(kwargs[k], dtype=torch.float64) for k in ("amp", "R_sersic")),
            torch.tensor(kwargs["n_sersic"], dtype=torch.float64),
        )
        assert ours.item() == pytest.approx(reference, rel=1e-10)


def _lenstronomy_galaxy_image(p: dict, stamp: np.ndarray, r_half: float, size: int, pixel_scale: float, kernel):
    """lenstronomy's ImageModel of an SIE + shear lensing an INTERPOL galaxy, plus a Sersic lens light."""
    from lenstronomy.Data.pixel_grid import PixelGrid
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel

    origin = -(size - 1) / 2 * pixel_scale
    grid = PixelGrid(
        nx=size, ny=size, transform_pix2angle=np.diag([pixel_scale] * 2), ra_at_xy_0=origin, dec_at_xy_0=origin
    )
    kwargs_lens, _, kwargs_lens_light = lenstronomy_kwargs(p)
    scale = p["source_R_sersic"] / r_half
    flux = func.sersic_total_flux(
        *(torch.tensor(p[f"source_{k}"], dtype=torch.float64) for k in ("amp", "R_sersic", "n_sersic"))
    ).item()
    image = stamp[:, ::-1] if p["source_flip"] else stamp
    kwargs_source = [
        {
            "image": image,
            "amp": flux / scale**2,
            "center_x": p["source_center_x"],
            "center_y": p["source_center_y"],
            "phi_G": p["source_phi_G"],
            "scale": scale,
        }
    ]
    model = ImageModel(
        grid,
        PSF(psf_type="PIXEL", kernel_point_source=kernel),
        LensModel(["SIE", "SHEAR"]),
        LightModel(["INTERPOL"]),
        LightModel(["SERSIC_ELLIPSE"]),
    )
    return model.image(kwargs_lens, kwargs_source, kwargs_lens_light)


def test_lensed_galaxy_image_matches_lenstronomy(rng, lens_params, make_sim, small_instrument, library_file, tmp_path):
    """The Simulator's noiseless image of a lensed library galaxy (size and flux from the Sersic parameters, rotated,
    flipped) with shear and lens light equals lenstronomy's INTERPOL image to 1e-3 of the peak; Sersic sources of a
    mixture are left as they were."""
    from lenscnn.sim.galaxies import GalaxyLibrary

    library = GalaxyLibrary.load(library_file)
    stamps, r_half = library.images, library.r_half
    path = library_file
    size, pixel_scale = 32, 0.08
    kernel = np.outer(*[np.exp(-0.5 * (np.arange(-3, 4) / 1.2) ** 2)] * 2)
    kernel /= kernel.sum()
    fits.PrimaryHDU(kernel).writeto(tmp_path / "psf.fits")
    lenses = []
    for k in range(3):
        p = lens_params(rng)
        p.update(source_galaxy=float(k), source_phi_G=rng.uniform(0, 2 * np.pi), source_flip=float(k % 2))
        lenses.append(p)
    prior = load_conf("prior", "galaxy_galaxy")  # with shear and lens light
    prior["source"]["galaxies"] = {"library": str(path), "fraction": 0.5}
    instrument = {**small_instrument, "image_size": size, "pixel_scale": pixel_scale}
    instrument["psf"] = {"type": "pixel", "path": str(tmp_path / "psf.fits")}
    sim = make_sim(instrument, prior, dtype="float64")
    params = {k: torch.tensor([p[k] for p in lenses], dtype=torch.float64) for k in lenses[0]}
    ours = sim.render(params, noise=False)[:, 0].numpy()
    for k, p in enumerate(lenses):
        reference = _lenstronomy_galaxy_image(p, stamps[k].astype(np.float64), r_half[k], size, pixel_scale, kernel)
        np.testing.assert_allclose(ours[k], reference, rtol=0, atol=1e-3 * reference.max())
    # a Sersic source in the mixture (index -1) renders as before
    params["source_galaxy"][:] = -1
    sersic = sim.render(params, noise=False)[:, 0].numpy()
    without = make_sim(instrument, load_conf("prior", "galaxy_galaxy"), dtype="float64")
    plain = without.render(
        {k: v for k, v in params.items() if not k.startswith("source_g") and k not in ("source_phi_G", "source_flip")},
        noise=False,
    )[:, 0].numpy()
    np.testing.assert_allclose(sersic, plain, rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def library_file(tmp_path_factory):
    """A library of 60 lumpy stamps (names g0..g59), as an HDF5 library file."""
    from lenscnn.sim.galaxies import GalaxyLibrary

    rng = np.random.default_rng(7)
    stamps = np.stack([_stamp(rng, (64, 64)) for _ in range(60)]).astype(np.float32)
    names = tuple(f"g{k}" for k in range(60))
    path = tmp_path_factory.mktemp("library") / "galaxies.h5"
    GalaxyLibrary(stamps, np.full(60, 0.03), rng.uniform(3, 8, 60), names, "test stamps").save(path)
    return path


def _realistic(library_file, fraction: float) -> dict:
    spec = load_conf("prior", "realistic")
    spec["source"]["galaxies"] = {"library": str(library_file), "fraction": fraction}
    return spec


def test_galaxies_are_drawn_from_their_split_only(library_file):
    """Training, validation and test lenses use disjoint galaxies; ``fraction`` of the sources are galaxies; the
    same seed gives the same lenses whatever the fraction (so Sersic and galaxy test sets pair up)."""
    from lenscnn.sim import Prior
    from lenscnn.sim.galaxies import GalaxyLibrary

    library = GalaxyLibrary.load(library_file)
    drawn = {}
    for split in ("train", "val", "test"):
        params = Prior(_realistic(library_file, 0.3)).sample(4000, torch.Generator().manual_seed(1), split=split)
        index = params["source_galaxy"]
        galaxies = index[index >= 0].long().unique().numpy()
        assert set(galaxies) <= set(library.indices(split)), split
        assert len(galaxies) == len(library.indices(split))  # every galaxy of the split is used
        assert abs((index >= 0).float().mean().item() - 0.3) < 0.03
        drawn[split] = set(galaxies)
    assert not (drawn["train"] & drawn["val"]) and not (drawn["train"] & drawn["test"])
    assert not (drawn["val"] & drawn["test"])
    all_galaxies = Prior(_realistic(library_file, 1.0)).sample(500, torch.Generator().manual_seed(2), split="test")
    all_sersic = Prior(_realistic(library_file, 0.0)).sample(500, torch.Generator().manual_seed(2), split="test")
    assert (all_galaxies["source_galaxy"] >= 0).all() and (all_sersic["source_galaxy"] == -1).all()
    for name in ("theta_E", "e1", "center_x", "source_R_sersic", "source_center_y", "lens_light_amp", "gamma1"):
        torch.testing.assert_close(all_galaxies[name], all_sersic[name], rtol=0, atol=0)


def test_lens_light_flux_ratio_absence_and_alignment(library_file):
    """``flux_ratio`` is the lens light's total flux over the source's (lenstronomy's total_flux), ``absent_fraction``
    of the lenses have none, and ``phi: mass`` gives the light the position angle of the mass."""
    from lenscnn.sim import Prior

    params = Prior(_realistic(library_file, 0.5)).sample(4000, torch.Generator().manual_seed(3), dtype=torch.float64)
    p = {k: v.numpy() for k, v in params.items()}
    absent = p["lens_light_amp"] == 0
    expected = load_conf("prior", "realistic")["lens_light"]["absent_fraction"]
    assert abs(absent.mean() - expected) < 0.025 and (p["lens_light_flux_ratio"][absent] == 0).all()
    ratio = p["lens_light_flux_ratio"][~absent]
    assert ratio.min() >= 1.0 and ratio.max() <= 100.0 and 0.5 < np.median(ratio) / 10.0 < 2.0  # log-uniform 1-100
    light, source = LightModel(["SERSIC_ELLIPSE"]), LightModel(["SERSIC_ELLIPSE"])
    for k in np.flatnonzero(~absent)[:20]:
        kw = {n: p[f"lens_light_{n}"][k] for n in ("amp", "R_sersic", "n_sersic", "e1", "e2")}
        kw_s = {n: p[f"source_{n}"][k] for n in ("amp", "R_sersic", "n_sersic", "e1", "e2")}
        flux_light = light.total_flux([{**kw, "center_x": 0, "center_y": 0}])[0]
        flux_source = source.total_flux([{**kw_s, "center_x": 0, "center_y": 0}])[0]
        assert flux_light / flux_source == pytest.approx(p["lens_light_flux_ratio"][k], rel=1e-8)
    phi_mass, _ = param_util.ellipticity2phi_q(p["e1"], p["e2"])
    phi_light, q_light = param_util.ellipticity2phi_q(p["lens_light_e1"], p["lens_light_e2"])
    np.testing.assert_allclose(np.cos(2 * (phi_light - phi_mass)), 1.0, atol=1e-8)
    assert q_light.min() >= 0.6 - 1e-9


def test_training_records_the_galaxy_split_and_warns_of_a_changed_library(library_file, tmp_path, caplog):
    """The datamodule's simulator config (a checkpoint's ``simulator`` hyperparameter) holds the split; a library
    whose split differs is reported."""
    from lenscnn.data import LensDataModule
    from lenscnn.sim import Simulator
    from lenscnn.sim.galaxies import GalaxyLibrary

    instrument = {**load_conf("instrument", "quickstart"), "image_size": 32}
    dm = LensDataModule({"instrument": instrument, "prior": _realistic(library_file, 0.5), "compile": False})
    record = dm.simulator_config["prior"]["source"]["galaxies"]["split"]
    library = GalaxyLibrary.load(library_file)
    assert {k: v["galaxies"] for k, v in record.items()} == {s: len(library.indices(s)) for s in record}
    Simulator.from_config(dm.simulator_config)  # the recorded split checks out
    assert "is not split into the galaxies" not in caplog.text
    changed = tmp_path / "changed.h5"
    GalaxyLibrary(library.images[1:], library.pixel_scale[1:], library.r_half[1:], library.names[1:], "fewer").save(
        changed
    )
    config = copy.deepcopy(dm.simulator_config)
    config["prior"]["source"]["galaxies"]["library"] = str(changed)
    Simulator.from_config(config)
    assert "is not split into the galaxies this model was trained" in caplog.text
