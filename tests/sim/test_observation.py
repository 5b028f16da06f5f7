"""Observation nuisances (``lenscnn.sim.observation``) through the Simulator: the shipped test-set configs
(``conf/observation/*.yaml``) do what their names say, the survey config draws and records every nuisance,
PSF libraries from FITS, bad configs as one-line UserErrors, reproducibility across chunking, HDF5 files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from astropy.io import fits

from lenscnn.errors import UserError
from lenscnn.io.hdf5 import create_lens_dataset, read_lens_dataset, write_batch
from lenscnn.sim import Instrument, Prior, Simulator
from lenscnn.sim.func.grid import pixel_grid
from lenscnn.sim.func.psf import gaussian_kernels, kernel_fwhm, moffat_alpha, moffat_kernels
from lenscnn.sim.lens_streams import draw_lenses
from lenscnn.sim.observation import Observation
from tests.helpers import compose_run, load_conf

PIXEL_SCALE = 0.08  # the quickstart instrument: 64 x 64 pixels of 0.08", Gaussian PSF 0.16", rms 0.01, 1000 s
RMS = 0.01
NOISE_NAMES = ["background_rms", "exposure_time", "noise_correlation"]
SKY_NAMES = ["sky_pedestal", "sky_gradient_x", "sky_gradient_y"]
#: A star at the centre of pixel (32, 32) of the quickstart grid, far narrower than a pixel: its image is the PSF.
STAR = {"profile": "GAUSSIAN", "amp": 100.0, "sigma": 0.005, "center_x": 0.04, "center_y": 0.04}
STAR_PIXEL = 32


def instrument_cfg(**changes) -> dict:
    return {**load_conf("instrument", "quickstart"), **changes}


def simulator(
    observation: dict | str | None,
    dtype: torch.dtype = torch.float32,
    prior: dict | None = None,
    instrument: dict | None = None,
    **kwargs,
) -> Simulator:
    """A Simulator of the quickstart instrument and prior (or those given) with an observation config (or the
    name of a shipped one)."""
    if isinstance(observation, str):
        observation = load_conf("observation", observation)
    return Simulator(
        Instrument.from_config(instrument or instrument_cfg()),
        Prior(prior or load_conf("prior", "quickstart")),
        observation=observation,
        dtype=dtype,
        **kwargs,
    )


def star_params(sim: Simulator, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` lenses of ``sim`` (prior: quickstart + STAR) with the source switched off: images of the star."""
    params = sim.sample_params(n, sim.make_generator(seed))
    params["source_amp"] = torch.zeros_like(params["source_amp"])
    return params


def star_prior() -> dict:
    return {**load_conf("prior", "quickstart"), "star": dict(STAR)}


def corners(images: torch.Tensor, size: int = 10) -> torch.Tensor:
    """The four ``size x size`` corners of ``(n, 1, H, W)`` images, ``(n, 4, size, size)``: empty sky."""
    im = images[:, 0]
    return torch.stack([im[:, :size, :size], im[:, :size, -size:], im[:, -size:, :size], im[:, -size:, -size:]], dim=1)


# -- the shipped test-set configs ----------------------------------------------------------------


def test_pedestal_plus_adds_exactly_0_1_counts_per_second_to_the_noiseless_images():
    observed = simulator("pedestal_plus", torch.float64)
    clean = simulator(None, torch.float64)
    params = observed.sample_params(20, observed.make_generator(3))
    assert params["sky_pedestal"].tolist() == pytest.approx([10 * RMS] * 20, abs=1e-15)
    assert torch.all(params["sky_gradient_x"] == 0) and torch.all(params["sky_gradient_y"] == 0)
    difference = observed.render(params, noise=False) - clean.render(params, noise=False)
    torch.testing.assert_close(difference, torch.full_like(difference, 0.1), rtol=0, atol=1e-12)
    # pedestal_minus: the same level below
    minus = simulator("pedestal_minus", torch.float64)
    difference = minus.render(minus.sample_params(5, minus.make_generator(3)), noise=False)
    torch.testing.assert_close(difference - clean.render(params, noise=False)[:5], torch.full_like(difference, -0.1))


@pytest.mark.parametrize("name", ["pedestal_plus", "noise_x3", "moffat_wide", "cosmic_rays", "survey"])
def test_an_observation_changes_neither_the_lenses_nor_their_noise_seeds(name):
    """Lens i of a seed (every parameter of the prior, and its noise seed) is the same with any observation: its
    draws come from a stream of their own (OBSERVATION_KEY). They are recorded under Observation.names."""
    observed, clean = simulator(name), simulator(None)
    observation = observed.observation
    prior = observed.prior
    with_obs, seeds_obs = draw_lenses(prior, (17,), 0, 300, observation=observation)
    without, seeds = draw_lenses(prior, (17,), 0, 300)
    assert torch.equal(seeds_obs, seeds)
    assert set(with_obs) == set(without) | set(observation.names)
    assert set(without) & set(observation.names) == set()
    for key, values in without.items():
        assert torch.equal(with_obs[key], values), key
    # through the Simulator's stream, in two pieces
    stream = observed.make_generator(17)
    first, second = observed.sample_params(100, stream), observed.sample_params(200, stream)
    drawn = {k: torch.cat([first[k], second[k]]) for k in first}
    for key in observed.parameter_names:
        assert torch.equal(drawn[key], with_obs[key]), key
    assert observed.parameter_names == clean.parameter_names + observation.names
    assert all(v.shape == (300,) and torch.all(torch.isfinite(v)) for v in drawn.values())


def test_observation_names_of_the_shipped_configs():
    instrument = Instrument.from_config(instrument_cfg())
    expected = {
        "none": [],
        "pedestal_plus": NOISE_NAMES + SKY_NAMES,
        "pedestal_minus": NOISE_NAMES + SKY_NAMES,
        "noise_x3": NOISE_NAMES,
        "moffat_narrow": [*NOISE_NAMES, "psf_fwhm", "psf_beta"],
        "moffat_wide": [*NOISE_NAMES, "psf_fwhm", "psf_beta"],
        "cosmic_rays": [*NOISE_NAMES, "cosmic_rays"],
        "survey": [*NOISE_NAMES, *SKY_NAMES, "psf_fwhm", "psf_beta", "cosmic_rays", "hot_pixels", "masked_regions"],
    }
    for name, names in expected.items():
        observation = Observation(load_conf("observation", name), instrument)
        assert observation.names == names, name
        assert sorted(observation.sample(3, torch.Generator().manual_seed(0))) == sorted(names), name
    assert simulator("none").observation is None


def test_noise_x3_triples_the_background_noise():
    """Corners of the field (sky, with the faint wings of some sources): (noisy - noiseless) / sigma has unit std
    (+-3 %) for sigma^2 = (3 x 0.01)^2 + |image| / 1000 s, and the instrument's alone for 0.01."""
    observed, clean = simulator("noise_x3"), simulator(None)
    images, params = observed.sample(32, observed.make_generator(5))
    assert params["background_rms"].tolist() == pytest.approx([3 * RMS] * 32, rel=1e-6)
    assert params["exposure_time"].tolist() == pytest.approx([1000.0] * 32)
    assert torch.all(params["noise_correlation"] == 0)
    noiseless = observed.render(params, noise=False)
    assert torch.equal(noiseless, clean.render(params, noise=False))  # the noise alone changes
    residual = corners(images - noiseless).double()
    shot = corners(noiseless).double().abs() / 1000.0
    z = residual / torch.sqrt((3 * RMS) ** 2 + shot)
    assert z.std().item() == pytest.approx(1.0, rel=0.03)
    assert abs(z.mean().item()) < 3 / math.sqrt(z.numel())
    empty = shot < 0.01 * RMS**2  # pixels without source light to speak of (most of the corners)
    assert empty.double().mean() > 0.5
    assert residual[empty].std().item() == pytest.approx(3 * RMS, rel=0.03)
    clean_images, _ = clean.sample(32, clean.make_generator(5))
    clean_residual = corners(clean_images - noiseless).double()
    assert (clean_residual / torch.sqrt(RMS**2 + shot)).std().item() == pytest.approx(1.0, rel=0.03)
    assert clean_residual[empty].std().item() == pytest.approx(RMS, rel=0.03)


def test_drizzle_correlated_background_in_the_simulator():
    """noise.correlation 0.5: empty-sky residuals keep variance rms^2 and correlate 0.5 with row and column
    neighbours (and ~0 between images)."""
    observed = simulator({"noise": {"correlation": 0.5, "exposure_time": 1e6}})  # shot noise negligible
    images, params = observed.sample(32, observed.make_generator(9))
    assert torch.all(params["noise_correlation"] == 0.5) and torch.all(params["exposure_time"] == 1e9)
    z = corners(images - observed.render(params, noise=False), 16).double() / RMS
    assert z.var().item() == pytest.approx(1.0, rel=0.04)
    assert (z[..., 1:] * z[..., :-1]).mean().item() == pytest.approx(0.5, abs=0.03)
    assert (z[..., 1:, :] * z[..., :-1, :]).mean().item() == pytest.approx(0.5, abs=0.03)
    assert abs((z[1:] * z[:-1]).mean().item()) < 0.03


def _pixel_integrated_moffat(fwhm: float, beta: float, radius: int, sub: int = 48) -> np.ndarray:
    """lenstronomy's MOFFAT averaged over ``sub x sub`` points per pixel, normalised on its footprint."""
    from lenstronomy.LightModel.Profiles.moffat import Moffat

    alpha = moffat_alpha(torch.tensor(fwhm, dtype=torch.float64), torch.tensor(beta, dtype=torch.float64)).item()
    size = 2 * radius + 1
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    axis = ((np.arange(size) - radius)[:, None] + offsets).ravel() * PIXEL_SCALE
    x, y = np.meshgrid(axis, axis)
    kernel = Moffat().function(x, y, 1.0, alpha, beta).reshape(size, sub, size, sub).mean(axis=(1, 3))
    return kernel / kernel.sum()


def test_moffat_wide_replaces_the_instruments_psf_with_a_022_arcsec_moffat():
    """A point-like star renders as lenstronomy's Moffat (FWHM 0.22", beta 2.5) integrated over pixels, to 0.3 %
    of its peak, and nothing outside the kernel (up to the float32 precision of the kernel bank's transform);
    its FWHM is 0.22" (within a pixel) where the instrument's PSF gives 0.16"."""
    sim = simulator("moffat_wide", torch.float64, prior=star_prior())
    clean = simulator(None, torch.float64, prior=star_prior())
    params = star_params(sim, 4)
    assert params["psf_fwhm"].tolist() == pytest.approx([0.22] * 4, abs=1e-7)
    assert params["psf_beta"].tolist() == [2.5] * 4
    images = sim.render(params, noise=False)[:, 0]
    star = images / images.sum(dim=(-2, -1), keepdim=True)
    radius = sim.observation.psf_bank.shape[-1] // 2
    assert radius >= 11  # truncate: 4 FWHM
    window = slice(STAR_PIXEL - radius, STAR_PIXEL + radius + 1)
    reference = torch.from_numpy(_pixel_integrated_moffat(0.22, 2.5, radius))
    for b in range(4):
        assert (star[b, window, window] - reference).abs().max() < 3e-3 * reference.max()
        outside = star[b].clone()
        outside[window, window] = 0
        assert outside.abs().max() < 1e-7 * star[b].max()
    measured = kernel_fwhm(star, PIXEL_SCALE)
    assert (measured - 0.22).abs().max() < PIXEL_SCALE
    gaussian = clean.render(params, noise=False)[:, 0]
    assert kernel_fwhm(gaussian, PIXEL_SCALE).sub(0.16).abs().max() < PIXEL_SCALE
    # the Moffat's wings: far more light beyond 3 pixels from the star than the instrument's Gaussian
    rows, cols = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    far = torch.hypot(rows - STAR_PIXEL + 0.0, cols - STAR_PIXEL + 0.0) > 3
    gaussian = gaussian / gaussian.sum(dim=(-2, -1), keepdim=True)
    assert star[0][far].sum() > 0.2 and gaussian[0][far].sum() < 0.01
    # moffat_narrow: FWHM 0.10"
    narrow = simulator("moffat_narrow", torch.float64, prior=star_prior())
    params = star_params(narrow, 1)
    assert params["psf_fwhm"].item() == pytest.approx(0.10, abs=1e-7)
    image = narrow.render(params, noise=False)[0, 0]
    assert kernel_fwhm(image, PIXEL_SCALE).item() == pytest.approx(0.10, abs=PIXEL_SCALE)


def test_cosmic_rays_adds_20_hits_per_image_with_the_noise_and_nothing_without():
    sim, clean = simulator("cosmic_rays"), simulator(None)
    images, params = sim.sample(16, sim.make_generator(21))
    assert params["cosmic_rays"].tolist() == [20.0] * 16
    noiseless = sim.render(params, noise=False)
    assert torch.equal(noiseless, clean.render(params, noise=False))  # artefacts come with the noise only
    sigma = torch.sqrt(RMS**2 + noiseless.abs() / 1000.0)
    z = ((images - noiseless) / sigma)[:, 0]
    hits = (z > 5).sum(dim=(1, 2))
    assert torch.all(hits >= 20), hits.tolist()  # 20 tracks of >= 5 rms, most of several pixels
    assert torch.all(hits <= 20 * 9)  # a track of at most 8 pixels' length covers at most 9 pixels
    assert (z < -5).sum() == 0  # hits only add light
    assert z[z.abs() < 5].std().item() == pytest.approx(1.0, abs=0.02)  # the rest: the instrument's noise
    assert torch.all(images[:, 0][z > 5] - noiseless[:, 0][z > 5] <= 500 * RMS + 6 * sigma[:, 0][z > 5])
    # the hits are a pure function of the noise seed: the same stream gives the same images
    again, _ = sim.sample(16, sim.make_generator(21))
    assert torch.equal(again, images)


def test_sky_gradient_is_a_plane_of_the_recorded_slope():
    """sky pedestal 5 rms, gradient 4 rms across the field: noiseless - clean is the plane
    ``pedestal + gx x + gy y`` of the recorded parameters (to the float32 rounding of the observation's pixel
    coordinates), |(gx, gy)| = 4 rms / 5.12", any direction."""
    sim = simulator({"sky": {"pedestal": 5.0, "gradient": 4.0}}, torch.float64)
    clean = simulator(None, torch.float64)
    params = sim.sample_params(12, sim.make_generator(2))
    sky = (sim.render(params, noise=False) - clean.render(params, noise=False))[:, 0]
    x, y = pixel_grid(64, 64, PIXEL_SCALE, dtype=torch.float64)
    design = torch.stack([torch.ones(64 * 64, dtype=torch.float64), x.reshape(-1), y.reshape(-1)], 1)
    for b in range(12):
        fit = torch.linalg.lstsq(design, sky[b].reshape(-1, 1)).solution.reshape(-1)
        expected = [params[k][b].item() for k in SKY_NAMES]
        assert fit.tolist() == pytest.approx(expected, abs=1e-9)
        plane = (design @ torch.tensor(expected, dtype=torch.float64)).reshape(64, 64)
        assert (plane - sky[b]).abs().max() < 1e-8
    assert params["sky_pedestal"].tolist() == pytest.approx([5 * RMS] * 12)
    slope = torch.hypot(params["sky_gradient_x"], params["sky_gradient_y"])
    assert slope.tolist() == pytest.approx([4 * RMS / (64 * PIXEL_SCALE)] * 12, rel=1e-12)
    angle = torch.atan2(params["sky_gradient_y"], params["sky_gradient_x"])
    assert angle.max() - angle.min() > 2.0  # directions differ between images


# -- the survey config ---------------------------------------------------------------------------


def test_survey_draws_every_nuisance_in_its_documented_ranges():
    instrument = Instrument.from_config(instrument_cfg())
    observation = Observation(load_conf("observation", "survey"), instrument)
    n = 4096
    p = observation.sample(n, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert sorted(p) == sorted(observation.names) and all(v.shape == (n,) for v in p.values())
    rms = p["background_rms"]
    assert rms.min() >= 0.5 * RMS and rms.max() <= 4 * RMS
    assert p["exposure_time"].min() >= 250 and p["exposure_time"].max() <= 4000
    assert (torch.log(rms / RMS).mean().item()) == pytest.approx(0.5 * math.log(8.0) + math.log(0.5), abs=0.05)
    assert p["noise_correlation"].min() >= 0 and p["noise_correlation"].max() <= 0.5
    # the sky: 70 % of images, pedestal within +-30 rms, gradient within 10 rms across the 5.12" field
    present = (p["sky_pedestal"] != 0) | (p["sky_gradient_x"] != 0) | (p["sky_gradient_y"] != 0)
    assert present.double().mean().item() == pytest.approx(0.7, abs=0.03)
    assert (p["sky_pedestal"] / rms).abs().max() <= 30 + 1e-9
    across = torch.hypot(p["sky_gradient_x"], p["sky_gradient_y"]) * 64 * PIXEL_SCALE / rms
    assert across.max() <= 10 + 1e-9 and across[present].mean().item() == pytest.approx(5.0, abs=0.3)
    # the PSF: FWHM on 48 levels 0.0036" apart over 0.08-0.25", half Moffat with beta on 8 levels over 2-5
    levels = observation.fwhm_levels.double()
    assert len(levels) == 48 and levels[0].item() == pytest.approx(0.08) and levels[-1].item() == pytest.approx(0.25)
    steps = (levels[1:] - levels[:-1]).tolist()
    assert steps == pytest.approx([0.17 / 47] * 47, abs=1e-7)
    assert steps == pytest.approx([0.0036] * 47, abs=5e-5)  # "FWHM steps of 0.0036"", as the module docstring says
    fwhm = p["psf_fwhm"]
    assert torch.all((fwhm[:, None] == levels[None, :]).any(dim=1))
    assert len(fwhm.unique()) == 48
    beta = p["psf_beta"]
    moffat = beta > 0
    assert moffat.double().mean().item() == pytest.approx(0.5, abs=0.03)
    beta_levels = observation.beta_levels.double()
    assert beta_levels.tolist() == pytest.approx(np.linspace(2.0, 5.0, 8).tolist(), abs=1e-6)
    assert torch.all((beta[moffat][:, None] == beta_levels[None, :]).any(dim=1))
    # counts of artefacts: whole numbers in their ranges
    for name, high in (("cosmic_rays", 40), ("hot_pixels", 6), ("masked_regions", 2)):
        counts = p[name]
        assert torch.all(counts == counts.floor()) and counts.min() == 0 and counts.max() == high - 1, name
    assert (p["masked_regions"] == 1).double().mean().item() == pytest.approx(0.5, abs=0.03)


def test_survey_images_use_exactly_the_psf_their_parameters_record():
    sim = simulator("survey")
    observation = sim.observation
    images, params = sim.sample(24, sim.make_generator(4))
    assert images.shape == (24, 1, 64, 64) and torch.all(torch.isfinite(images))
    assert set(params) == set(sim.parameter_names)
    kernels = observation.psf_kernels(params)
    radius = kernels.shape[-1] // 2
    assert radius == math.ceil(4 * 0.25 / PIXEL_SCALE)
    for b in range(24):
        fwhm, beta = params["psf_fwhm"][b : b + 1].double(), params["psf_beta"][b : b + 1].double()
        if beta.item() == 0:
            expected = gaussian_kernels(fwhm, PIXEL_SCALE, radius)
        else:
            expected = moffat_kernels(fwhm, beta, PIXEL_SCALE, radius)
        torch.testing.assert_close(kernels[b].double(), expected[0], rtol=0, atol=1e-7)
        assert kernel_fwhm(kernels[b], PIXEL_SCALE).item() == pytest.approx(fwhm.item(), abs=PIXEL_SCALE)
    # masked regions are set to the fill value 0 exactly; unmasked noisy pixels never are
    zeros = (images[:, 0] == 0).sum(dim=(1, 2))
    masked = params["masked_regions"] > 0
    assert masked.any() and (~masked).any()
    assert torch.all(zeros[masked] >= 1) and torch.all(zeros[~masked] == 0)
    assert torch.all(zeros <= math.pi * 4.0**2 + 2 * 4 * 4)  # one disk of radius <= 4 pixels


def test_a_torch_generator_draws_the_observation_too():
    sim = simulator("survey")
    a, pa = sim.sample(6, torch.Generator().manual_seed(8))
    b, pb = sim.sample(6, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert set(pa) == set(sim.parameter_names)


# -- PSF libraries -------------------------------------------------------------------------------


def _gaussian_stamp(fwhm: float, size: int, scale: float = 1.0) -> np.ndarray:
    """A round Gaussian sampled at the pixel centres of a ``size x size`` stamp, not normalised."""
    sigma = fwhm / (2 * math.sqrt(2 * math.log(2))) / PIXEL_SCALE
    axis = np.arange(size) - size // 2
    r2 = axis[:, None] ** 2 + axis[None, :] ** 2
    return scale * np.exp(-0.5 * r2 / sigma**2)


def _half_max_fwhm(kernel: np.ndarray) -> float:
    return 2 * math.sqrt((kernel >= 0.5 * kernel.max()).sum() / math.pi) * PIXEL_SCALE


LIBRARY_FWHM = (0.2, 0.3, 0.45)


@pytest.fixture
def psf_cube(tmp_path):
    cube = np.stack([_gaussian_stamp(f, 25, scale) for f, scale in zip(LIBRARY_FWHM, (1.0, 7.0, 0.2), strict=True)])
    path = tmp_path / "psfs.fits"
    fits.PrimaryHDU(cube).writeto(path)
    return path, cube / cube.sum(axis=(1, 2), keepdims=True)


def test_a_psf_library_cube_draws_kernels_uniformly_and_records_their_fwhm(psf_cube):
    path, kernels = psf_cube
    sim = simulator({"psf": {"library": str(path)}}, torch.float64)
    observation = sim.observation
    assert observation.names == [*NOISE_NAMES, "psf_fwhm", "psf_index"]
    np.testing.assert_allclose(observation.psf_bank.double().numpy(), kernels, rtol=1e-6, atol=1e-9)
    params = sim.sample_params(300, sim.make_generator(1))
    index = params["psf_index"]
    assert torch.all(index == index.round()) and set(index.long().tolist()) == {0, 1, 2}
    counts = torch.bincount(index.long(), minlength=3)
    assert counts.min() > 70  # uniform: 100 each
    measured = [_half_max_fwhm(k.astype(np.float32)) for k in kernels]
    for i, (true, mine) in enumerate(zip(LIBRARY_FWHM, measured, strict=True)):
        recorded = params["psf_fwhm"][index == i]
        assert recorded.tolist() == pytest.approx([mine] * len(recorded), rel=1e-6)
        assert mine == pytest.approx(true, abs=PIXEL_SCALE)


def test_rendering_with_library_kernel_i_is_the_convolution_with_kernel_i(psf_cube):
    from scipy.signal import fftconvolve

    path, kernels = psf_cube
    sim = simulator({"psf": {"library": str(path)}}, torch.float64)
    unconvolved = simulator(None, torch.float64, instrument=instrument_cfg(psf={"type": "none"}))
    params = sim.sample_params(4, sim.make_generator(6))
    flux = unconvolved.render(params, noise=False)[:, 0].numpy()
    for i in range(3):
        params["psf_index"] = torch.full((4,), float(i), dtype=torch.float64)
        images = sim.render(params, noise=False)[:, 0].numpy()
        kernel = kernels[i].astype(np.float32).astype(np.float64)  # the bank holds float32 kernels
        for b in range(4):
            expected = fftconvolve(flux[b], kernel, mode="same")
            # to the float32 precision of the bank's kernel transforms (float64 rendering or not)
            np.testing.assert_allclose(images[b], expected, rtol=0, atol=1e-7 * np.abs(expected).max())


def test_a_psf_library_directory_pads_kernels_to_the_largest_and_renders_each(tmp_path):
    folder = tmp_path / "psfs"
    folder.mkdir()
    fits.PrimaryHDU(_gaussian_stamp(0.25, 15, 3.0)).writeto(folder / "a.fits")
    fits.PrimaryHDU(_gaussian_stamp(0.5, 21)).writeto(folder / "b.fits")
    (folder / "notes.txt").write_text("not a kernel")
    sim = simulator({"psf": {"library": str(folder)}}, torch.float64, prior=star_prior())
    bank = sim.observation.psf_bank.double()
    assert bank.shape == (2, 21, 21)
    assert torch.all(bank[0, :3] == 0) and torch.all(bank[0, :, -3:] == 0)  # 15 x 15 centred in 21 x 21
    torch.testing.assert_close(bank.sum(dim=(1, 2)), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-6)
    params = star_params(sim, 64, seed=3)
    drawn = params["psf_index"].clone()
    assert set(drawn.long().tolist()) == {0, 1}
    for i, fwhm in enumerate((0.25, 0.5)):
        recorded = params["psf_fwhm"][drawn == i]
        assert recorded.tolist() == pytest.approx([_half_max_fwhm(bank[i].numpy())] * len(recorded), rel=1e-6)
        assert recorded[0].item() == pytest.approx(fwhm, abs=PIXEL_SCALE)
        params["psf_index"] = torch.full((64,), float(i), dtype=torch.float64)
        star = sim.render({k: v[:1] for k, v in params.items()}, noise=False)[0, 0]
        star = star / star.sum()
        window = slice(STAR_PIXEL - 10, STAR_PIXEL + 11)
        torch.testing.assert_close(star[window, window], bank[i], rtol=0, atol=1e-7)
        assert star.sum() - star[window, window].sum() < 1e-12


def _write(path, data):
    fits.PrimaryHDU(np.asarray(data, dtype=np.float64)).writeto(path)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: _write(d / "even.fits", np.ones((24, 24))), "odd"),
        (lambda d: _write(d / "even_cube.fits", np.ones((2, 8, 8))), "odd"),
        (lambda d: _write(d / "nan.fits", np.where(np.eye(5, dtype=bool)[None], np.nan, 1.0)), "NaN"),
        (lambda d: _write(d / "zero.fits", np.zeros((2, 5, 5))), "positive total flux"),
        (lambda d: _write(d / "huge.fits", np.ones((1, 129, 129))), "exceed twice the image"),
        (lambda d: (_write((d / "dir").mkdir() or d / "dir" / "k.fits", np.ones((4, 5))), d / "dir")[1], "odd"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "no .fits files"),
        (lambda d: d / "missing.fits", "missing.fits"),
    ],
    ids=["even-2d", "even-cube", "nan", "zero-flux", "too-large", "dir-even", "empty-dir", "missing"],
)
def test_a_malformed_psf_library_is_a_user_error(make, message, tmp_path):
    path = make(tmp_path)
    with pytest.raises(UserError, match=message):
        simulator({"psf": {"library": str(path)}})


# -- bad configs ---------------------------------------------------------------------------------

U01 = {"dist": "uniform", "low": 0.0, "high": 1.0}


@pytest.mark.parametrize(
    ("observation", "message"),
    [
        ({"skies": {"pedestal": 1.0}}, r"unknown sections \['skies'\]"),
        ({"sky": {"pedestl": 1.0}}, r"observation.sky: unknown keys \['pedestl'\]"),
        ({"artefacts": {"cosmic_ray": 3}}, r"unknown keys \['cosmic_ray'\]"),
        ({"sky": {"pedestal": {"dist": "gamma", "low": 0, "high": 1}}}, "observation.sky.pedestal.*unknown dist"),
        ({"sky": {"pedestal": {"dist": "uniform", "low": 1}}}, "observation.sky.pedestal.*missing keys"),
        ({"sky": {"gradient": {"dist": "uniform", "low": -1, "high": 1}}}, "observation.sky.gradient"),
        ({"sky": {"fraction": 1.5}}, "sky.fraction must be a number in"),
        ({"psf": {"beta": 3.0}}, "observation.psf needs fwhm"),
        ({"psf": {"fwhm": 0.0}}, "psf.fwhm: values must lie in"),
        ({"psf": {"fwhm": 0.1, "beta": 1.0}}, "psf.beta"),
        ({"psf": {"fwhm": 0.1, "moffat_fraction": 2}}, "moffat_fraction"),
        ({"psf": {"fwhm": 0.1, "levels": [0, 8]}}, "psf.levels"),
        ({"psf": {"fwhm": 0.1, "truncate": -1}}, "psf.truncate"),
        ({"psf": {"library": "psfs.fits", "fwhm": 0.1}}, "library takes only"),
        ({"noise": {"correlation": 0.8}}, "noise.correlation"),
        ({"noise": {"background_rms": 0.0}}, "noise.background_rms"),
        ({"noise": {"exposure_time": {"dist": "uniform", "low": -1.0, "high": 1.0}}}, "noise.exposure_time"),
        ({"artefacts": {"cosmic_rays": {"dist": "normal", "mean": 5, "std": 2, "low": 0}}}, "bounded"),
        ({"artefacts": {"hot_pixels": {"dist": "uniform", "low": -1, "high": 3}}}, "artefacts.hot_pixels"),
        ({"artefacts": {"cosmic_ray_length": [8, 0]}}, "cosmic_ray_length must be"),
        ({"artefacts": {"cosmic_ray_amplitude": [0, 5]}}, "cosmic_ray_amplitude must be"),
        ({"artefacts": {"mask_radius": 3}}, "mask_radius must be"),
        ({"artefacts": {"fill": float("nan")}}, "fill must be a finite number"),
    ],
)
def test_a_bad_observation_config_is_a_user_error(observation, message):
    with pytest.raises(UserError, match=message):
        simulator(observation)


@pytest.mark.parametrize(
    ("noise", "message"),
    [
        ({"background_rms": 0.01, "exposure_time": 1000.0, "poisson": "exact"}, "poisson=gaussian"),
        ({"exposure_time": 1000.0}, "has no background noise"),
    ],
    ids=["exact-poisson", "no-background-rms"],
)
def test_an_instrument_the_observation_cannot_use_is_a_user_error(noise, message):
    with pytest.raises(UserError, match=message):
        simulator("noise_x3", instrument=instrument_cfg(noise=noise))
    simulator(None, instrument=instrument_cfg(noise=noise))  # fine without an observation


def test_simulator_from_config_refuses_an_observation_that_is_not_a_mapping():
    cfg = {"instrument": instrument_cfg(), "prior": load_conf("prior", "quickstart"), "observation": "survey"}
    with pytest.raises(UserError, match="observation must be a config mapping"):
        Simulator.from_config(cfg)
    sim = Simulator.from_config({**cfg, "observation": load_conf("observation", "survey")})
    assert sim.observation is not None and "psf_fwhm" in sim.parameter_names


@pytest.mark.parametrize("observation", [{"sky": None}, {"noise": {}}])
def test_an_observation_of_empty_sections_is_no_observation(observation):
    sim, clean = simulator(observation), simulator(None)
    assert sim.parameter_names == clean.parameter_names
    images, _ = sim.sample(4, sim.make_generator(1))
    assert torch.equal(images, clean.sample(4, clean.make_generator(1))[0])


# -- reproducibility and files ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_survey_lenses_of_a_seed_do_not_depend_on_chunking(dtype):
    """300 survey lenses (32 x 32; noise and every artefact included) in one call, and in three calls of 100
    rendered in chunks of 64: bit for bit the same in float64; in float32 the same up to float32 rounding (the lens
    light itself, without any observation, is rendered to the last bit only for equal batch sizes)."""
    small = instrument_cfg(image_size=32)
    one = simulator("survey", dtype, instrument=small)
    chunked = simulator("survey", dtype, instrument=small, chunk_size=64)
    images, params = one.sample(300, one.make_generator(5))
    stream = chunked.make_generator(5)
    pieces = [chunked.sample(100, stream) for _ in range(3)]
    chunked_images = torch.cat([p[0] for p in pieces])
    for name in params:
        assert torch.equal(torch.cat([p[1][name] for p in pieces]), params[name]), name
    assert torch.all(torch.isfinite(images))
    if dtype == torch.float64:
        assert torch.equal(chunked_images, images)
    else:
        scale = images.abs().max().item()
        torch.testing.assert_close(chunked_images, images, rtol=1e-6, atol=1e-6 * scale)
        # the observation alone is exact in float32 too: the same lens images (before the PSF, which the
        # observation varies) give the same observed ones
        flux = simulator(None, dtype, instrument={**small, "psf": {"type": "none"}})
        noiseless = flux.render(params, noise=False)
        _, seeds = draw_lenses(one.prior, (5,), 0, 300, observation=one.observation, dtype=dtype)
        seeds = seeds[:, None, None]
        observed = one.observation.apply(noiseless[:, 0], {k: v[:, None, None] for k, v in params.items()}, seeds)
        pieces = [
            chunked.observation.apply(
                noiseless[s : s + 64, 0], {k: v[s : s + 64, None, None] for k, v in params.items()}, seeds[s : s + 64]
            )
            for s in range(0, 300, 64)
        ]
        assert torch.equal(torch.cat(pieces), observed)
        assert torch.equal(observed[:, None], images)


def test_hdf5_round_trip_keeps_the_observation_parameters(tmp_path):
    sim = simulator("survey", instrument=instrument_cfg(image_size=32))
    images, params = sim.sample(6, sim.make_generator(2))
    names = sim.parameter_names
    path = tmp_path / "lenses.h5"
    with create_lens_dataset(path, 6, sim.image_shape, names, PIXEL_SCALE, "observation: survey\n") as f:
        for start in (0, 4):
            stop = min(start + 4, 6)
            write_batch(
                f, start, images[start:stop].numpy(), {k: params[k][start:stop].double().numpy() for k in names}
            )
    read_images, read_params, attrs = read_lens_dataset(path)
    np.testing.assert_array_equal(read_images, images.numpy())
    assert set(read_params) == set(names)
    for name in sim.observation.names:
        np.testing.assert_array_equal(read_params[name], params[name].double().numpy(), err_msg=name)
    assert attrs["pixel_scale"] == PIXEL_SCALE


def test_lenscnn_simulate_records_the_observation_parameters(tmp_path):
    from lenscnn.cli.simulate import simulate

    cfg = compose_run("simulate", tmp_path, ["n=4", "observation=cosmic_rays", "preview=0", "instrument.image_size=32"])
    out = simulate(cfg)
    _, params, attrs = read_lens_dataset(out / "lenses.h5")
    assert "cosmic_rays" in attrs["config"]
    assert set(NOISE_NAMES + ["cosmic_rays"]) <= set(params)
    assert params["cosmic_rays"].tolist() == [20.0] * 4
