"""The pure functions behind observation nuisances (``lenscnn.sim.func``): Gaussian and Moffat PSF banks against
lenstronomy and erf, per-image FFT convolution against scipy, drizzle-correlated noise statistics, cosmic-ray /
hot-pixel streaks, masked disks and the sky-residual plane."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lenscnn.sim.func.artefacts import masked_disks, sky_background, streaks
from lenscnn.sim.func.grid import pixel_grid
from lenscnn.sim.func.noise import correlated_normal, drizzle_taps
from lenscnn.sim.func.psf import (
    FWHM_PER_SIGMA,
    convolve_fft,
    gaussian_kernel_1d,
    gaussian_kernels,
    kernel_fwhm,
    kernel_transform,
    moffat_alpha,
    moffat_kernels,
)

PIXEL_SCALE = 0.08


def _f64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _pixel_integrated_moffat(fwhm: float, beta: float, radius: int, sub: int = 48) -> np.ndarray:
    """lenstronomy's MOFFAT surface brightness averaged over ``sub x sub`` points per pixel of a
    ``2 radius + 1`` square footprint, normalised to unit sum over that footprint."""
    from lenstronomy.LightModel.Profiles.moffat import Moffat

    alpha = moffat_alpha(_f64(fwhm), _f64(beta)).item()
    size = 2 * radius + 1
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    axis = ((np.arange(size) - radius)[:, None] + offsets).ravel() * PIXEL_SCALE
    x, y = np.meshgrid(axis, axis)
    fine = Moffat().function(x, y, 1.0, alpha, beta)
    kernel = fine.reshape(size, sub, size, sub).mean(axis=(1, 3))
    return kernel / kernel.sum()


# -- PSF kernels -------------------------------------------------------------------------------


@pytest.mark.parametrize(("fwhm", "beta"), [(0.10, 2.5), (0.22, 2.5), (0.16, 4.5), (0.08, 2.0)])
def test_moffat_alpha_puts_half_the_peak_of_lenstronomys_moffat_at_half_the_fwhm(fwhm, beta):
    from lenstronomy.LightModel.Profiles.moffat import Moffat

    alpha = moffat_alpha(_f64(fwhm), _f64(beta)).item()
    profile = Moffat()
    peak = profile.function(0.0, 0.0, 1.0, alpha, beta)
    for angle in (0.0, 0.7, 2.0):
        x, y = 0.5 * fwhm * math.cos(angle), 0.5 * fwhm * math.sin(angle)
        assert profile.function(x, y, 1.0, alpha, beta) == pytest.approx(0.5 * peak, rel=1e-12)


@pytest.mark.parametrize(("fwhm", "beta"), [(0.10, 2.5), (0.22, 2.5), (0.16, 4.5), (0.08, 2.0)])
def test_moffat_kernels_are_lenstronomys_moffat_integrated_over_pixels(fwhm, beta):
    """Per pixel of a 17 x 17 footprint: 15 x 15 sub-pixels agree with a 48 x 48 sub-pixel integration of
    lenstronomy's profile to 1e-3 relative; the default 5 x 5 to 1e-2 (its largest error, at the centre of a
    one-pixel FWHM, is ~0.9 %)."""
    radius = 8
    reference = _pixel_integrated_moffat(fwhm, beta, radius)
    fine = moffat_kernels(_f64(fwhm), _f64(beta), PIXEL_SCALE, radius, oversampling=15)[0].numpy()
    default = moffat_kernels(_f64(fwhm), _f64(beta), PIXEL_SCALE, radius)[0].numpy()
    assert fine.shape == default.shape == (17, 17)
    assert fine.sum() == pytest.approx(1.0, abs=1e-12) and default.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.abs(fine / reference - 1).max() < 1e-3
    assert np.abs(default / reference - 1).max() < 1e-2
    # centred and round: symmetric under flips and transposition
    np.testing.assert_allclose(default, default[::-1, :], rtol=1e-12)
    np.testing.assert_allclose(default, default.T, rtol=1e-12)
    assert np.unravel_index(default.argmax(), default.shape) == (radius, radius)


def test_moffat_kernels_batch_equals_one_by_one():
    fwhm, beta = _f64(0.09, 0.2, 0.25), _f64(2.0, 3.3, 5.0)
    batch = moffat_kernels(fwhm, beta, PIXEL_SCALE, 6)
    for b in range(3):
        single = moffat_kernels(fwhm[b : b + 1], beta[b : b + 1], PIXEL_SCALE, 6)[0]
        torch.testing.assert_close(batch[b], single, rtol=0, atol=1e-15)


@pytest.mark.parametrize("fwhm", [0.08, 0.16, 0.25, 0.6])
def test_gaussian_kernels_are_the_outer_product_of_gaussian_kernel_1d(fwhm):
    kernel_1d = gaussian_kernel_1d(fwhm, PIXEL_SCALE, dtype=torch.float64)
    radius = kernel_1d.shape[0] // 2
    kernels = gaussian_kernels(_f64(fwhm, 0.3), PIXEL_SCALE, radius)
    assert kernels.shape == (2, 2 * radius + 1, 2 * radius + 1)
    torch.testing.assert_close(kernels[0], torch.outer(kernel_1d, kernel_1d), rtol=0, atol=1e-15)
    assert kernels.sum(dim=(-2, -1)).sub(1).abs().max() < 1e-14


@pytest.mark.parametrize("fwhm", [0.3, 0.5, 0.8])
def test_kernel_fwhm_recovers_a_well_sampled_fwhm_within_a_pixel(fwhm):
    radius = 24
    gaussian = gaussian_kernels(_f64(fwhm), PIXEL_SCALE, radius)
    moffat = moffat_kernels(_f64(fwhm, fwhm), _f64(2.5, 4.0), PIXEL_SCALE, radius)
    measured = kernel_fwhm(torch.cat([gaussian, moffat]), PIXEL_SCALE)
    assert measured.shape == (3,)
    assert (measured - fwhm).abs().max().item() < PIXEL_SCALE
    # the half-maximum area by hand: pixels >= half the peak, as a disk's diameter
    k = gaussian[0].numpy()
    area = (k >= 0.5 * k.max()).sum()
    assert measured[0].item() == pytest.approx(2 * math.sqrt(area / math.pi) * PIXEL_SCALE, rel=1e-12)


def test_kernel_fwhm_of_a_well_sampled_gaussian_uses_fwhm_per_sigma():
    sigma_pixels = 6.0
    fwhm = sigma_pixels * FWHM_PER_SIGMA * PIXEL_SCALE
    measured = kernel_fwhm(gaussian_kernels(_f64(fwhm), PIXEL_SCALE, 40), PIXEL_SCALE).item()
    assert measured == pytest.approx(fwhm, abs=0.5 * PIXEL_SCALE)


# -- FFT convolution with per-image kernels ------------------------------------------------------


@pytest.mark.parametrize(("shape", "kernel_size"), [((20, 24), 7), ((20, 24), 31), ((17, 17), 3)])
def test_convolve_fft_per_image_kernels_equals_scipy_fftconvolve_same(shape, kernel_size):
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(3)
    images = rng.normal(size=(4, *shape))
    kernels = rng.uniform(size=(4, kernel_size, kernel_size))
    kernels /= kernels.sum(axis=(1, 2), keepdims=True)
    image_t, kernel_t = torch.from_numpy(images), torch.from_numpy(kernels)
    out = convolve_fft(image_t, kernel_t)
    reused = convolve_fft(image_t, kernel_t, kernel_transform(kernel_t, shape))
    assert out.shape == images.shape and out.dtype == torch.float64
    for b in range(4):
        expected = fftconvolve(images[b], kernels[b], mode="same")
        np.testing.assert_allclose(out[b].numpy(), expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(reused, out, rtol=0, atol=1e-12)
    # a shuffled batch of kernels shuffles the outputs: kernel b goes with image b
    swapped = convolve_fft(image_t, kernel_t.flip(0))
    np.testing.assert_allclose(swapped[0].numpy(), fftconvolve(images[0], kernels[3], mode="same"), atol=1e-10)


def test_convolve_fft_with_one_kernel_broadcasts_over_the_batch():
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(4)
    images, kernel = rng.normal(size=(3, 16, 16)), rng.uniform(size=(5, 5))
    out = convolve_fft(torch.from_numpy(images), torch.from_numpy(kernel)).numpy()
    for b in range(3):
        np.testing.assert_allclose(out[b], fftconvolve(images[b], kernel, mode="same"), rtol=0, atol=1e-10)


# -- drizzle-correlated noise ------------------------------------------------------------------

NOISE_SHAPE = (32, 32)


def _noise(rho: float, batch: int = 400, first_seed: int = 12345, offset: int = 1 << 24) -> torch.Tensor:
    height, width = NOISE_SHAPE
    counter = torch.arange((height + 2) * (width + 2)).view(height + 2, width + 2) + offset
    seeds = (torch.arange(batch, dtype=torch.int64) * 7919 + first_seed).view(-1, 1, 1)
    return correlated_normal(seeds, counter, torch.full((batch,), rho, dtype=torch.float64))


def _lag_correlation(z: torch.Tensor, drow: int, dcol: int) -> float:
    height, width = z.shape[-2:]
    a = z[:, drow:, dcol:]
    b = z[:, : height - drow, : width - dcol]
    return (a * b).mean().item() / z.var().item()


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.5])
def test_correlated_normal_has_unit_variance_and_the_requested_neighbour_correlation(rho):
    """400 images of 32 x 32: variance 1 (+-2 %), correlation rho (+-0.02) between row and column neighbours,
    rho^2 along diagonals (the kernel is separable), c^2 / (1 + 2 c^2) two pixels apart, ~0 three apart."""
    z = _noise(rho)
    assert z.shape == (400, *NOISE_SHAPE) and z.dtype == torch.float64
    assert abs(z.mean().item()) < 0.01
    assert z.var().item() == pytest.approx(1.0, abs=0.02)
    assert _lag_correlation(z, 0, 1) == pytest.approx(rho, abs=0.02)
    assert _lag_correlation(z, 1, 0) == pytest.approx(rho, abs=0.02)
    assert _lag_correlation(z, 1, 1) == pytest.approx(rho**2, abs=0.02)
    c = (
        drizzle_taps(torch.tensor([rho], dtype=torch.float64))[0, 0].item()
        / drizzle_taps(torch.tensor([rho], dtype=torch.float64))[0, 1].item()
    )
    assert _lag_correlation(z, 0, 2) == pytest.approx(c * c / (1 + 2 * c * c), abs=0.02)
    assert _lag_correlation(z, 0, 3) == pytest.approx(0.0, abs=0.02)
    # the border pixels are correlated like the rest ("valid" convolution of a padded field)
    edge = (z[:, :, 0] * z[:, :, 1]).mean().item()
    assert edge == pytest.approx(rho, abs=0.05)


def test_drizzle_taps_give_unit_variance_and_correlation_rho():
    rho = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.7], dtype=torch.float64)
    taps = drizzle_taps(rho)
    variance = (taps**2).sum(dim=1)
    correlation = 2 * taps[:, 0] * taps[:, 1]  # (c, 1, c) . shifted (c, 1, c) = 2 c
    torch.testing.assert_close(variance, torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(correlation, rho, rtol=0, atol=1e-12)


def test_correlated_normal_is_a_pure_function_of_seed_and_counter():
    a, b = _noise(0.3, batch=8), _noise(0.3, batch=8)
    assert torch.equal(a, b)
    assert torch.equal(_noise(0.3, batch=3), a[:3])  # the batch size changes nothing
    other = _noise(0.3, batch=200, offset=2 << 24)
    same = _noise(0.3, batch=200)
    cross = (other * same).mean().item()
    assert abs(cross) < 0.02, "different counter ranges must give independent fields"
    assert abs((_noise(0.3, batch=200, first_seed=999) * same).mean().item()) < 0.02


# -- cosmic rays and hot pixels ----------------------------------------------------------------


def _seeds(n: int, first: int = 1000) -> torch.Tensor:
    return (torch.arange(n, dtype=torch.int64) * 104729 + first).view(-1, 1, 1)


def test_hot_pixels_are_count_single_pixels_within_the_amplitude_range():
    """length (0, 0): count[b] hits of one pixel each in a 256 x 256 image (collisions are rare);
    every value log-uniform in the amplitude range."""
    n, slots = 64, 8
    count = torch.arange(n, dtype=torch.float64) % (slots + 1)  # 0 .. 8
    out = streaks(_seeds(n), count, slots, (256, 256), (0.0, 0.0), (5.0, 100.0), 3 << 24)
    assert out.shape == (n, 256, 256) and out.dtype == torch.float64
    nonzero = (out != 0).sum(dim=(1, 2))
    assert torch.all(nonzero <= count.long())
    assert (nonzero == count.long()).float().mean() > 0.95  # 8 hits in 65536 pixels: collisions ~0.04 %
    values = out[out != 0]
    assert values.min() >= 5.0 and values.max() <= 100.0
    # log-uniform: the mean log level is the midpoint of the log range
    assert values.log().mean().item() == pytest.approx(0.5 * (math.log(5) + math.log(100)), abs=0.15)


def test_per_image_amplitude_ranges_are_honoured():
    n = 32
    low, high = torch.linspace(1.0, 10.0, n, dtype=torch.float64), torch.linspace(2.0, 30.0, n, dtype=torch.float64)
    out = streaks(_seeds(n), torch.full((n,), 4.0, dtype=torch.float64), 4, (64, 64), (0.0, 3.0), (low, high), 0)
    for b in range(n):
        values = out[b][out[b] != 0]
        assert len(values) > 0
        assert values.min() >= low[b] and values.max() <= high[b]


def test_inactive_slots_add_nothing_and_slots_do_not_move_the_active_hits():
    n = 16
    count = torch.tensor([0, 1, 2, 3] * 4, dtype=torch.float64)
    args = ((128, 128), (0.0, 8.0), (5.0, 500.0), 2 << 24)
    few = streaks(_seeds(n), count, 3, *args)
    many = streaks(_seeds(n), count, 40, *args)
    assert torch.equal(few, many)
    assert torch.all(few[count == 0] == 0)
    assert torch.equal(streaks(_seeds(n), torch.zeros(n, dtype=torch.float64), 40, *args), torch.zeros(n, 128, 128))


@pytest.mark.parametrize("length", [3.0, 8.0])
def test_a_track_of_length_l_covers_about_l_plus_one_pixels_along_a_line(length):
    """One track per image in a 256 x 256 image: at most L + 1 pixels, nearly always more than L / 2, and its
    end pixels L apart (within a pixel's rounding either end) unless it left the image."""
    n = 100
    out = streaks(
        _seeds(n, 77), torch.ones(n, dtype=torch.float64), 1, (256, 256), (length, length), (5.0, 5.0), 2 << 24
    )
    pixels = (out != 0).sum(dim=(1, 2))
    assert pixels.max() <= length + 1
    assert pixels.float().mean() >= 0.85 * (length + 1)
    spans = []
    for b in range(n):
        rows, cols = torch.nonzero(out[b], as_tuple=True)
        if rows.min() == 0 or cols.min() == 0 or rows.max() == 255 or cols.max() == 255:
            continue  # clipped by the border
        span = torch.cdist(torch.stack([rows, cols], 1).double(), torch.stack([rows, cols], 1).double()).max()
        spans.append(span.item())
    assert len(spans) > 80
    assert max(abs(s - length) for s in spans) <= math.sqrt(2) + 1e-9
    assert torch.allclose(out[out != 0], torch.tensor(5.0, dtype=torch.float64), rtol=1e-14, atol=0)


def test_streaks_are_deterministic_in_the_seed():
    count = torch.full((6,), 5.0, dtype=torch.float64)
    args = (8, (64, 64), (0.0, 8.0), (5.0, 500.0), 2 << 24)
    a, b = streaks(_seeds(6), count, *args), streaks(_seeds(6), count, *args)
    assert torch.equal(a, b)
    assert torch.equal(streaks(_seeds(6)[2:4], count[2:4], *args), a[2:4])  # per image, not per batch
    other = streaks(_seeds(6, 5), count, *args)
    assert not torch.equal(a[0], other[0])
    # another counter range is another layout for the same seed
    assert not torch.equal(a, streaks(_seeds(6), count, 8, (64, 64), (0.0, 8.0), (5.0, 500.0), 3 << 24))


# -- masked disks ------------------------------------------------------------------------------


def test_a_masked_disk_covers_pi_r_squared_pixels():
    """Radius 5: 78.5 pixels on average over random centres (the pixel count of a disk is its area on average)."""
    n, radius = 200, 5.0
    masks = masked_disks(_seeds(n, 31), torch.ones(n, dtype=torch.float64), 1, (128, 128), (radius, radius), 4 << 24)
    assert masks.shape == (n, 128, 128) and masks.dtype == torch.bool
    inside = [
        m
        for m in masks
        if not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())  # not cut by the border
    ]
    assert len(inside) > 150
    areas = torch.stack([m.sum() for m in inside]).double()
    assert areas.mean().item() == pytest.approx(math.pi * radius**2, rel=0.02)
    assert areas.min() >= 69 and areas.max() <= 89  # the lattice count of an r = 5 disk varies 69 .. 89
    # each disk is a disk: all its pixels within r of their centroid
    m = inside[0]
    rows, cols = torch.nonzero(m, as_tuple=True)
    distance = torch.hypot(rows - rows.double().mean(), cols - cols.double().mean())
    assert distance.max() <= radius + 1


def test_no_masked_disk_when_count_is_zero_and_two_disks_at_most_double():
    n = 50
    args = (3, (64, 64), (1.0, 4.0), 4 << 24)
    none = masked_disks(_seeds(n), torch.zeros(n, dtype=torch.float64), *args)
    assert not none.any()
    one = masked_disks(_seeds(n), torch.ones(n, dtype=torch.float64), *args)
    two = masked_disks(_seeds(n), torch.full((n,), 2.0, dtype=torch.float64), *args)
    assert torch.all(one.sum(dim=(1, 2)) >= 1)  # a disk of radius >= 1 always holds its nearest pixel
    assert torch.all(two | ~one)  # the first disk stays where it was
    assert torch.all(two.sum(dim=(1, 2)) <= 2 * math.pi * 4.0**2 + 2 * 4 * 4)


# -- sky residual ------------------------------------------------------------------------------


def test_sky_background_is_a_plane_with_the_pedestal_at_the_centre():
    height, width = 31, 40
    x, y = pixel_grid(height, width, PIXEL_SCALE, dtype=torch.float64)
    pedestal = _f64(0.3, -1.0, 0.0).view(-1, 1, 1)
    gx, gy = _f64(0.05, 0.0, -0.2).view(-1, 1, 1), _f64(-0.1, 0.4, 0.0).view(-1, 1, 1)
    sky = sky_background(pedestal, gx, gy, x, y)
    assert sky.shape == (3, height, width)
    # the centre of the (centred) grid is at the mean pixel; a plane averages to its centre value
    torch.testing.assert_close(sky.mean(dim=(1, 2)), pedestal.view(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(sky[:, 15, :].mean(dim=-1), pedestal.view(-1), rtol=0, atol=1e-12)  # odd: a row
    # gradients in counts/s per arcsec along x (columns) and y (rows)
    step_x = (sky[:, :, 1:] - sky[:, :, :-1]) / PIXEL_SCALE
    step_y = (sky[:, 1:, :] - sky[:, :-1, :]) / PIXEL_SCALE
    torch.testing.assert_close(step_x, gx.expand_as(step_x), rtol=0, atol=1e-12)
    torch.testing.assert_close(step_y, gy.expand_as(step_y), rtol=0, atol=1e-12)
    # by hand on the lenstronomy grid: x = (j - (W - 1) / 2) * scale, y = (i - (H - 1) / 2) * scale
    i, j = 3, 37
    expected = 0.3 + 0.05 * (j - 19.5) * PIXEL_SCALE - 0.1 * (i - 15) * PIXEL_SCALE
    assert sky[0, i, j].item() == pytest.approx(expected, abs=1e-12)
