"""The Simulator: noise statistics, seeding, torch.compile and chunking, gradients, configs and bad input."""

import logging

import numpy as np
import pytest
import torch
from astropy.io import fits
from hydra import compose, initialize_config_module

from lenscnn.errors import UserError
from lenscnn.sim import Simulator, func
from lenscnn.sim.galaxies import load_library
from lenscnn.sim.lens_streams import BLOCK, draw_lenses
from tests.helpers import CONF_DIR, lens_prior

LENS_AND_SHEAR = ("theta_E", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2")


#: A compact lensed source: bright arcs (shot noise dominates) and dark corners (background dominates).
NOISE_LENS = {
    "theta_E": 0.9,
    "e1": 0.1,
    "e2": -0.05,
    "center_x": 0.05,
    "center_y": -0.03,
    "gamma1": 0.02,
    "gamma2": 0.01,
    "source_amp": 200.0,
    "source_R_sersic": 0.15,
    "source_n_sersic": 1.0,
    "source_e1": 0.1,
    "source_e2": 0.0,
    "source_center_x": 0.08,
    "source_center_y": 0.05,
}


def _noisy_instrument(poisson: str, background_rms: float = 0.02, exposure_time: float = 50.0) -> dict:
    noise = {"background_rms": background_rms, "exposure_time": exposure_time, "poisson": poisson}
    return {"image_size": 32, "pixel_scale": 0.1, "psf": {"type": "gaussian", "fwhm": 0.2}, "noise": noise}


def _repeat(params: dict, n: int) -> dict:
    return {k: v[:1].expand(n).clone() for k, v in params.items()}


@pytest.mark.parametrize("poisson", ["gaussian", "exact"])
def test_noise_residuals_have_zero_mean_and_the_model_variance(poisson, make_sim, batch):
    """Over many draws of one lens: residual mean 0, variance ``background_rms^2 + |image| / exposure_time``,
    for faint (background-dominated) and bright (shot-noise-dominated) pixels alike, no correlations."""
    background_rms, exposure_time, draws = 0.02, 50.0, 400
    sim = make_sim(_noisy_instrument(poisson, background_rms, exposure_time))
    params = _repeat(batch([NOISE_LENS], torch.float32), draws)
    clean = sim.render(_repeat(params, 1), noise=False)[0, 0].double()
    noisy = sim.render(params, noise=True, generator=sim.make_generator(123))[:, 0].double()
    residual = noisy - clean
    variance = background_rms**2 + clean.abs() / exposure_time
    z = residual / variance.sqrt()  # unit normal deviates if the model is right
    pixels = clean.numel()

    # mean: sum over pixels of N * mean_z^2 is chi-square with P degrees of freedom
    chi2_mean = (draws * z.mean(0) ** 2).sum().item()
    assert abs(chi2_mean - pixels) < 5 * np.sqrt(2 * pixels), chi2_mean

    # variance: mean of z^2 is 1, overall and separately where the background or the shot noise dominates
    shot_fraction = (clean.abs() / exposure_time) / variance
    groups = {
        "all": torch.ones_like(clean, dtype=torch.bool),
        "faint": shot_fraction < 0.1,
        "bright": shot_fraction > 0.9,
    }
    for name, mask in groups.items():
        z2 = z[:, mask] ** 2
        assert mask.sum() >= 20, f"too few {name} pixels to test"
        standard_error = z2.std().item() / np.sqrt(z2.numel())
        assert abs(z2.mean().item() - 1.0) < 5 * standard_error, (name, z2.mean().item())

    # noise is added after the PSF and independently per pixel and per image
    for a, b in ((z[:, :, 1:], z[:, :, :-1]), (z[:, 1:, :], z[:, :-1, :]), (z[1:], z[:-1])):
        correlation = (a * b).mean().item()
        assert abs(correlation) < 5 / np.sqrt(a.numel()), correlation


def test_exact_poisson_draws_integer_counts_with_poisson_zero_fraction(make_sim, batch):
    """Without background, ``exact`` gives whole counts; the fraction of empty pixels is ``exp(-image * t)``.
    lenstronomy's Gaussian approximation does neither."""
    exposure_time, draws = 20.0, 200
    params = _repeat(batch([NOISE_LENS], torch.float64), draws)
    images = {}
    for poisson in ("exact", "gaussian"):
        sim = make_sim(_noisy_instrument(poisson, 0.0, exposure_time), dtype="float64")
        images[poisson] = sim.render(params, noise=True, generator=sim.make_generator(7))[:, 0]
    clean = sim.render(_repeat(params, 1), noise=False)[0, 0]
    counts = images["exact"] * exposure_time
    assert torch.allclose(counts, counts.round(), atol=1e-6) and counts.min() >= 0
    assert not torch.allclose(images["gaussian"] * exposure_time, (images["gaussian"] * exposure_time).round())
    expected_zero = torch.exp(-clean * exposure_time).expand_as(counts)
    observed = (counts.round() == 0).sum().item()
    expected = expected_zero.sum().item()
    sd = (expected_zero * (1 - expected_zero)).sum().sqrt().item()
    assert expected > 1000 and abs(observed - expected) < 5 * sd, (observed, expected, sd)


@pytest.mark.parametrize("poisson", ["gaussian", "exact"])
def test_same_seed_same_lenses_different_seed_different_lenses(poisson, make_sim):
    sim = make_sim({**_noisy_instrument(poisson), "image_size": 24}, chunk_size=3)
    images_a, params_a = sim.sample(7, sim.make_generator(2024))
    images_b, params_b = sim.sample(7, sim.make_generator(2024))
    images_c, params_c = sim.sample(7, sim.make_generator(2025))
    assert images_a.shape == (7, 1, 24, 24) and images_a.dtype == torch.float32
    assert torch.isfinite(images_a).all()
    assert torch.equal(images_a, images_b)
    assert params_a.keys() == params_b.keys() == set(sim.prior.names)
    for name in params_a:
        assert torch.equal(params_a[name], params_b[name]), name
        assert not torch.equal(params_a[name], params_c[name]), name
    assert not torch.equal(images_a, images_c)
    # the noise alone follows the seed too, and differs between the images of one batch
    same = _repeat(params_a, 4)
    noise_1 = sim.render(same, generator=sim.make_generator(1))
    assert torch.equal(noise_1, sim.render(same, generator=sim.make_generator(1)))
    assert not torch.equal(noise_1, sim.render(same, generator=sim.make_generator(2)))
    assert not torch.equal(noise_1[0], noise_1[1])


def _assert_prefix(short: dict, long: dict) -> None:
    """Every parameter of ``short`` is exactly the start of the same parameter of ``long``."""
    assert short.keys() == long.keys()
    for name, values in short.items():
        assert torch.equal(values, long[name][: len(values)]), name


def test_lens_i_of_a_seed_does_not_depend_on_n_or_chunking(make_sim, conf):
    """Issue 13: ``sample(8)`` and ``sample(300)`` of one seed start with the same 8 lenses (every parameter
    exactly; the noisy images to float32 rounding, as batched rendering of other batch sizes gives), and
    drawing 300 in chunks (a stream continues where it stopped) gives the same 300 lenses."""
    prior = conf("prior", "realistic")  # shear, lens light by flux ratio, galaxy sources: every kind of sampler
    sim = make_sim({**_noisy_instrument("gaussian"), "image_size": 16}, prior=prior)
    images, params = sim.sample(300, sim.make_generator(42))
    scale = images.abs().max().item()
    for n in (1, 8, BLOCK, BLOCK + 1):
        few_images, few = sim.sample(n, sim.make_generator(42))
        _assert_prefix(few, params)
        torch.testing.assert_close(few_images, images[:n], rtol=1e-6, atol=1e-6 * scale)
    stream = sim.make_generator(42)
    chunks = [sim.sample(n, stream) for n in (100, 3, 197)]
    assert stream.position == 300
    torch.testing.assert_close(torch.cat([c[0] for c in chunks]), images, rtol=1e-6, atol=1e-6 * scale)
    _assert_prefix({k: torch.cat([c[1][k] for c in chunks]) for k in params}, params)
    # sample_params follows the same stream (and noise=False the same parameters)
    _assert_prefix(sim.sample_params(50, sim.make_generator(42)), params)
    _assert_prefix(sim.sample(50, sim.make_generator(42), noise=False)[1], params)
    # and the lenses are the prior's: a new seed gives new lenses
    other = sim.sample_params(300, sim.make_generator(43))
    assert all(not torch.equal(other[k], params[k]) for k in params if k != "source_galaxy")


def test_draw_lenses_any_range_is_a_slice_of_the_blocks(conf):
    """Parameters and noise seeds of lenses [start, stop) of a key, for ranges inside, across and at the ends of
    blocks, are the slices of one long draw; the galaxy split picks galaxies and changes nothing else."""
    from lenscnn.sim import Prior

    prior = Prior(conf("prior", "realistic"))
    whole, seeds = draw_lenses(prior, (7, 1), 0, 3 * BLOCK, split="val")
    assert seeds.dtype == torch.int64 and len(seeds) == 3 * BLOCK and len(set(seeds.tolist())) == 3 * BLOCK
    for start, stop in ((0, 5), (5, 5), (120, 140), (BLOCK, 2 * BLOCK), (1, 3 * BLOCK), (250, 3 * BLOCK)):
        part, part_seeds = draw_lenses(prior, (7, 1), start, stop, split="val")
        assert torch.equal(part_seeds, seeds[start:stop]), (start, stop)
        for name, values in part.items():
            assert torch.equal(values, whole[name][start:stop]), (name, start, stop)
    test, test_seeds = draw_lenses(prior, (7, 1), 0, 3 * BLOCK, split="test")
    assert torch.equal(test_seeds, seeds)
    galaxy = whole["source_galaxy"] >= 0
    assert torch.equal(test["source_galaxy"] >= 0, galaxy)
    indices = load_library("hudf").indices
    assert set(whole["source_galaxy"][galaxy].long().tolist()) <= set(indices("val").tolist())
    assert set(test["source_galaxy"][galaxy].long().tolist()) <= set(indices("test").tolist())
    for name in whole:
        if name != "source_galaxy":
            assert torch.equal(test[name], whole[name]), name
    # other keys are other streams
    assert not torch.equal(draw_lenses(prior, (7, 2), 0, 5)[1], seeds[:5])
    assert not torch.equal(draw_lenses(prior, (8, 1), 0, 5)[1], seeds[:5])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_lenses_of_a_seed_are_the_same_on_the_gpu(make_sim, conf):
    """Parameters are drawn on the CPU and the Gaussian noise is counter-based: the same lenses on any device."""
    cpu = make_sim({**_noisy_instrument("gaussian"), "image_size": 32}, prior=conf("prior", "realistic"))
    images, params = cpu.sample(200, cpu.make_generator(3))
    gpu = make_sim({**_noisy_instrument("gaussian"), "image_size": 32}, prior=conf("prior", "realistic")).to("cuda")
    gpu_images, gpu_params = gpu.sample(70, gpu.make_generator(3))
    assert gpu_images.device.type == "cuda"
    _assert_prefix({k: v.cpu() for k, v in gpu_params.items()}, params)
    torch.testing.assert_close(gpu_images.cpu(), images[:70], rtol=1e-4, atol=1e-4 * images.abs().max().item())


def test_compiled_rendering_equals_eager_and_chunking_is_invisible(make_sim, caplog):
    """The one torch.compile test (compiles twice: noiseless and noisy kernels, ~10-30 s on a small CPU)."""
    instrument = {**_noisy_instrument("gaussian"), "image_size": 32}
    compiled = make_sim(instrument, prior="galaxy_galaxy", compile=True, chunk_size=3)
    eager = make_sim(instrument, prior="galaxy_galaxy", chunk_size=3)
    eager_one_chunk = make_sim(instrument, prior="galaxy_galaxy")
    params = eager.sample_params(7, eager.make_generator(5))  # 7 = 2 full chunks of 3 + a padded chunk of 1
    with caplog.at_level(logging.WARNING, logger="lenscnn"):
        fast = compiled.render(params, noise=False)
        one_by_one = torch.cat(
            [compiled.render({k: v[i : i + 1] for k, v in params.items()}, noise=False) for i in range(7)]
        )
        fast_noisy = compiled.render(params, generator=compiled.make_generator(9))
    assert not [r for r in caplog.records if "compile" in r.getMessage()], "fell back to eager: nothing compiled"
    reference = eager_one_chunk.render(params, noise=False)
    scale = reference.abs().max()
    assert fast.dtype == torch.float32 and fast.shape == (7, 1, 32, 32)
    assert (fast - reference).abs().max() <= 2e-5 * scale  # float32 re-association only
    assert torch.equal(eager.render(params, noise=False), reference)  # eager chunking is exact
    assert (one_by_one - fast).abs().max() <= 1e-6 * scale
    eager_noisy = eager.render(params, generator=eager.make_generator(9))
    assert (fast_noisy - eager_noisy).abs().max() <= 2e-5 * scale


def test_render_gradients_match_lenstronomy_finite_differences(rng, make_sim, lens_params, batch, reference_image):
    """d(weighted image sum) / d(each lens parameter), by autograd through ``render``, equals central differences
    of lenstronomy's image: finite, nonzero and right."""
    size, scale = 32, 0.08
    instrument = {"image_size": size, "pixel_scale": scale, "psf": {"type": "gaussian", "fwhm": 0.16}}
    sim = make_sim(instrument, lens_prior(), dtype="float64")
    lenses = [lens_params(rng) for _ in range(2)]
    values = batch(lenses)
    params = {k: v.clone().requires_grad_(k in LENS_AND_SHEAR) for k, v in values.items()}
    images = sim.render(params, noise=False)
    assert images.requires_grad
    weights = np.random.default_rng(1).uniform(0.5, 1.5, (size, size))
    objective = (images[:, 0] * torch.tensor(weights)).sum()
    grads = dict(zip(LENS_AND_SHEAR, torch.autograd.grad(objective, [params[k] for k in LENS_AND_SHEAR]), strict=True))
    k1 = func.gaussian_kernel_1d(0.16, scale, dtype=torch.float64).numpy()
    kernel = np.outer(k1, k1)
    h = 1e-6
    for i, lens in enumerate(lenses):
        for name in LENS_AND_SHEAR:
            g = grads[name][i].item()
            up, down = {**lens, name: lens[name] + h}, {**lens, name: lens[name] - h}
            diff = reference_image(up, size, scale, 1, kernel) - reference_image(down, size, scale, 1, kernel)
            numeric = np.sum(weights * diff) / (2 * h)
            assert np.isfinite(g) and g != 0.0, (i, name, g)
            assert g == pytest.approx(numeric, rel=1e-4, abs=1e-3), (i, name)


@pytest.mark.parametrize("prior", ["quickstart", "ensai", "galaxy_galaxy", "realistic", "realistic_galaxies"])
@pytest.mark.parametrize("instrument", sorted(p.stem for p in (CONF_DIR / "instrument").glob("*.yaml")))
def test_every_shipped_config_composes_and_renders(instrument, prior):
    """Hydra composes ``simulate`` with each preset; the simulator node builds and renders finite images."""
    with initialize_config_module(version_base="1.3", config_module="lenscnn.conf"):
        cfg = compose("simulate", overrides=[f"instrument={instrument}", f"prior={prior}"])
    sim = Simulator.from_config(cfg.simulator)
    images, params = sim.sample(2, sim.make_generator(0))
    size, bands = cfg.instrument.image_size, len(cfg.instrument.get("bands") or [None])
    assert images.shape == (2, bands, size, size) and images.dtype == torch.float32
    assert torch.isfinite(images).all() and images.abs().sum() > 0
    assert set(params) == set(sim.prior.names) >= {"theta_E", "e1", "e2", "center_x", "center_y"}
    assert all(v.shape == (2,) and torch.isfinite(v).all() for v in params.values())


def _psf_instrument(path) -> dict:
    return {"image_size": 16, "pixel_scale": 0.1, "psf": {"type": "pixel", "path": str(path)}}


def _write_cube(path):
    fits.PrimaryHDU(np.ones((3, 5, 5))).writeto(path)


def _write_table_only(path):
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="D", array=np.ones(3))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)


def _write_even(path):
    fits.PrimaryHDU(np.ones((4, 4))).writeto(path)


@pytest.mark.parametrize(
    "writer,message",
    [
        (_write_cube, r"expected a 2-D image, got an array of shape \(3, 5, 5\)"),
        (_write_table_only, r"holds no image"),
        (_write_even, r"must have odd sides"),
        (None, r"FITS file not found"),
    ],
    ids=["3d-cube", "table-only", "even-sides", "missing"],
)
def test_bad_psf_file_is_a_user_error(writer, message, tmp_path, make_sim):
    path = tmp_path / "psf.fits"
    if writer is not None:
        writer(path)
    with pytest.raises(UserError, match=message) as info:
        make_sim(_psf_instrument(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"colour": "red"}, r"instrument: unknown keys \['colour'\]"),
        ({"pixel_scale": 0.0}, r"instrument.pixel_scale must be > 0, got 0.0"),
        ({"pixel_scale": -0.05}, r"instrument.pixel_scale must be > 0, got -0.05"),
        ({"image_size": [32, 0]}, r"instrument.image_size must be a positive integer"),
        ({"supersampling": 0}, r"instrument.supersampling must be an integer >= 1"),
        ({"psf": {"type": "gaussian", "fwhm": -1}}, r"instrument.psf.fwhm must be > 0"),
        ({"noise": {"background_rms": 0.01, "poisson": "exact"}}, r"'exact' needs a finite noise.exposure_time"),
    ],
    ids=["unknown-key", "zero-pixel-scale", "negative-pixel-scale", "zero-size", "supersampling", "fwhm", "poisson"],
)
def test_bad_instrument_is_a_user_error(change, message, conf, make_sim):
    with pytest.raises(UserError, match=message):
        make_sim({**conf("instrument", "quickstart"), **change})


@pytest.mark.parametrize(
    "section,key,spec,message",
    [
        (
            "lens",
            "theta_E",
            {"dist": "uniform", "low": 3.0, "high": 2.0},
            r"'lens.theta_E': low \(3.0\) > high \(2.0\)",
        ),
        ("source", "R_sersic", {"dist": "normal", "mean": 0.2, "std": 0.1, "low": 0.5, "high": 0.1}, r"low .* > high"),
        (
            "lens",
            "ellipticity",
            {"q": {"dist": "uniform", "low": 0.5, "high": 1.2}, "phi": 0.0},
            r"axis ratio.*\(0.0, 1.0\]",
        ),
        ("lens", "ellipticity", {"q": {"dist": "uniform", "low": 0.0, "high": 1.0}, "phi": 0.0}, r"axis ratio"),
        ("source", "ellipticity", {"q": -0.5, "phi": 0.0}, r"source.ellipticity.q \(axis ratio\)"),
        ("lens", "theta_E", {"dist": "gamma", "low": 1.0, "high": 2.0}, r"unknown dist 'gamma'"),
    ],
    ids=["theta_E-low>high", "truncated-normal-low>high", "q>1", "q=0", "fixed-q<0", "unknown-dist"],
)
def test_bad_prior_is_a_user_error(section, key, spec, message, conf, small_instrument, make_sim):
    prior = conf("prior", "quickstart")
    prior[section][key] = spec
    with pytest.raises(UserError, match=message):
        make_sim(small_instrument, prior=prior)


def test_axis_ratio_of_exactly_one_is_allowed(conf, small_instrument, make_sim):
    prior = conf("prior", "quickstart")
    prior["lens"]["ellipticity"]["q"] = {"dist": "uniform", "low": 0.9, "high": 1.0}
    prior["source"]["ellipticity"]["q"] = 1.0
    sim = make_sim(small_instrument, prior=prior)
    _, params = sim.sample(3, sim.make_generator(0), noise=False)
    assert torch.equal(params["source_e1"], torch.zeros(3)) and torch.equal(params["source_e2"], torch.zeros(3))
