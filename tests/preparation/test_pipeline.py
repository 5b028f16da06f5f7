"""The preparation pipeline on simulated cutouts as archives give them: a pedestal, cosmic rays, a NaN
border, another pixel scale, a noise map; and its settings checked before anything is read."""

from __future__ import annotations

import numpy as np
import pytest

from lenscnn.errors import UserError
from lenscnn.io.cutouts import Cutout
from lenscnn.preparation.pipeline import Preparation, prepare
from lenscnn.sim import Simulator
from tests.helpers import composed_conf, load_conf

RMS = 0.01


@pytest.fixture(scope="module")
def lenses():
    """Noisy lenses of the realistic prior on the quickstart grid, without and with 20 cosmic rays."""
    instrument = load_conf("instrument", "quickstart")
    prior = composed_conf("prior", "realistic")
    clean = Simulator.from_config({"instrument": instrument, "prior": prior})
    hit = Simulator.from_config(
        {"instrument": instrument, "prior": prior, "observation": load_conf("observation", "cosmic_rays")}
    )
    images, _ = clean.sample(8, clean.make_generator(11))
    with_rays, _ = hit.sample(8, hit.make_generator(11))  # the same lenses and noise, plus the hits
    return images[:, 0].double().numpy(), with_rays[:, 0].double().numpy()


def cutout(image: np.ndarray, scale: float = 0.08) -> Cutout:
    return Cutout("lens.fits", image, scale, None)


def test_pedestal_cosmic_rays_and_nan_border_are_undone(lenses):
    clean, with_rays = lenses
    settings = Preparation()
    offsets, noise = [], []
    found = hits = 0
    for truth, image in zip(clean, with_rays, strict=True):
        raw = image + 0.1
        raw[:3] = np.nan  # a NaN border three rows deep
        prepared = prepare(cutout(raw), settings, (64, 64), 0.08)
        out = prepared.image[0].double().numpy()
        mask = prepared.mask
        assert mask[:3].all() and (out[:3] == 0).all()  # pixels without data at the training fill
        cleaned = mask.copy()
        cleaned[:3] = False  # the cosmic rays: cleaned from their neighbours, near the clean image
        rays = np.abs(image - truth) > 5 * RMS
        found += int(mask[rays].sum())
        hits += int(rays.sum())
        assert mask.mean() < 0.1
        # elsewhere the image is as given less the sky estimate, whose error (lens light in the outskirts) is small
        np.testing.assert_allclose(out[~mask], raw[~mask] - prepared.record["sky"], atol=1e-5)
        hit = cleaned & rays
        left = np.abs(out[hit] - truth[hit] - 0.1 + prepared.record["sky"])
        assert np.median(left) < 0.2 * np.median(np.abs(image[hit] - truth[hit]))  # most of each hit removed
        offsets.append(prepared.record["sky"] - 0.1)
        assert prepared.record["cosmic_ray_pixels"] >= 0.5 * rays[3:].sum()
        noise.append(prepared.record["noise_rms"])
        assert np.isinf(prepared.variance[mask]).all() and np.isfinite(prepared.variance[~mask]).all()
    assert found / hits > 0.8  # the cosmic-ray pixels are masked (measured 0.84; fewer on bright lens light: objlim)
    assert min(offsets) > -0.5 * RMS  # the sky estimate's error is lens light: never far below (test_sky: its size)
    assert np.median(noise) == pytest.approx(RMS, rel=0.25)  # shot noise of bright outskirts adds to some


def test_sky_none_or_a_number_and_no_cosmic_ray_search(lenses):
    clean, _ = lenses
    image = clean[0] + 0.1
    kept = prepare(cutout(image), Preparation(sky="none", cosmic_rays=False), (64, 64), 0.08)
    np.testing.assert_allclose(kept.image[0].numpy(), image, rtol=1e-6)
    assert kept.record["sky"] == 0 and not kept.mask.any()
    fixed = prepare(cutout(image), Preparation(sky=0.1, cosmic_rays=False), (64, 64), 0.08)
    np.testing.assert_allclose(fixed.image[0].numpy(), clean[0], atol=1e-6)


def test_a_finer_cutout_with_a_noise_map_is_resampled_flux_conserving():
    # a Gaussian blob on 0.04"/px, 128 x 128 (5.12"), brought to the model's 0.08"/px, 64 x 64
    y, x = (np.mgrid[:128, :128] - 63.5) * 0.04
    blob = 2.0 * np.exp(-(x**2 + y**2) / (2 * 0.3**2))
    variance = np.full(blob.shape, 4e-4)
    prepared = prepare(cutout(blob, 0.04), Preparation(sky="none", cosmic_rays=False), (64, 64), 0.08, variance)
    assert prepared.image.shape == (1, 64, 64)
    assert float(prepared.image.sum()) == pytest.approx(blob.sum(), rel=1e-5)
    np.testing.assert_allclose(prepared.variance, 4 * 4e-4)  # 4 independent input pixels summed per output pixel
    assert prepared.zoom == (0.5, 0.5)
    col, row = prepared.to_input_pixels(np.array(31.5), np.array(31.5))  # the model's centre
    assert (float(col), float(row)) == pytest.approx((63.5, 63.5))
    with pytest.raises(UserError, match="resample=true"):
        prepare(cutout(blob, 0.04), Preparation(resample=False), (64, 64), 0.08)


@pytest.mark.parametrize("scale", [0.04, 0.05])
def test_the_noise_of_a_finer_cutout_is_that_of_the_model_pixels_it_becomes(scale):
    """White noise of rms 0.01 on 0.04"/px (4 input pixels per model pixel) or HST's 0.05"/px (2.56, with
    partial overlaps): the recorded ``noise_rms`` is the rms of the prepared 0.08" pixels, 2x and ~1.27x
    the input's (the domain flags compare it with the training noise; it was once 1/2 and 1/1.6 of it)."""
    size = int(round(0.08 * 96 / scale))  # a 7.7" field: the model's 5.12" cut from its centre
    noise = RMS * np.random.default_rng(3).standard_normal((size, size))
    prepared = prepare(cutout(noise, scale), Preparation(cosmic_rays=False), (64, 64), 0.08)
    measured = float(prepared.image.double().std())
    # measured on the model's field only (~100 x 100 input pixels): within a few percent
    assert prepared.record["noise_rms"] == pytest.approx(measured, rel=0.08)
    assert measured > RMS * (1.9 if scale == 0.04 else 1.2)


@pytest.mark.parametrize(("scale", "correlated"), [(0.04, False), (0.05, True), (0.1, True)])
def test_units_noise_matches_the_depth_of_a_resampled_cutout(scale, correlated):
    """``units=noise`` brings a resampled cutout to the model's noise per unit area (its depth), not per pixel:
    white noise of rms 0.01 on 0.05"/px (HST) or 0.1"/px (Euclid VIS), whose resampled pixels' noise is correlated,
    gets the flux scale of white noise of rms 0.01 x 0.08 / scale per model pixel, so block sums of the prepared
    image have the model's noise in them (binned 2 x 2 from 0.04", the noise stays white and both agree)."""
    size = int(round(0.08 * 96 / scale))
    noise = RMS * np.random.default_rng(4).standard_normal((size, size))
    model_rms = 0.02
    prepared = prepare(cutout(noise, scale), Preparation(cosmic_rays=False), (64, 64), 0.08, noise_rms=model_rms)
    record = prepared.record
    assert record["noise_depth"] == pytest.approx(RMS * 0.08 / scale, rel=0.08)
    assert record["flux_scale"] == pytest.approx(model_rms / record["noise_depth"])
    assert (record["noise_depth"] > 1.1 * record["noise_rms"]) is correlated
    # sums over 4 x 4 model pixels hold about the model's noise, as white noise would (a little less: the input
    # pixels a block's edges cut share their noise with the next block); per pixel it would be 1.14x (0.05") and
    # 1.5-1.8x (0.1") of it
    image = prepared.image[0].double().numpy()
    block_sums = image.reshape(16, 4, 16, 4).sum(axis=(1, 3))
    assert 0.75 < float(block_sums.std()) / (model_rms * 4) < 1.08


def test_a_cutout_without_a_pixel_scale_is_assumed_and_recorded():
    image = 0.01 * np.random.default_rng(0).standard_normal((64, 64))
    prepared = prepare(Cutout("x.fits", image, None, None), Preparation(cosmic_rays=False), (64, 64), 0.08)
    assert prepared.record["pixel_scale_assumed"] and prepared.record["input_pixel_scale"] == 0.08
    given = prepare(Cutout("x.fits", image, None, None), Preparation(pixel_scale=0.08), (64, 64), 0.08)
    assert not given.record["pixel_scale_assumed"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"fill_nan": "abc"}, "fill_nan='abc'"),
        ({"sky": "estimat"}, "sky='estimat': give estimate, none or a level"),
        ({"sky": float("nan")}, "sky=nan: give estimate, none"),
        ({"noise_kind": "weights"}, "noise_kind='weights'"),
        ({"psf_fwhm": -0.1}, "psf_fwhm=-0.1"),
        ({"cosmic_rays": "yes"}, "cosmic_rays='yes'"),
        ({"psf": "x.fits", "psf_fwhm": 0.1}, "not both"),
    ],
)
def test_bad_settings_are_refused_before_reading(settings, message):
    with pytest.raises(UserError, match=message):
        Preparation(**settings)


@pytest.mark.parametrize("scale", [0.08, 0.05])
def test_only_the_models_field_is_prepared(scale):
    """Sky, noise and cosmic rays are measured on the model's field, as on the training images: what lies
    outside it (a bright neighbour, a gradient, a chip edge's worth of noise) leaves the prepared image, its
    record and the input pixels its centre maps to unchanged."""
    rng = np.random.default_rng(8)
    field = int(round(64 * 0.08 / scale))  # the model's 5.12" at the input's pixels
    inner = 0.3 + RMS * rng.standard_normal((field, field))  # a residual sky of 30 rms
    y, x = np.mgrid[:field, :field] - (field - 1) / 2
    inner += 5.0 * np.exp(-(x**2 + y**2) / (2 * (0.3 / scale) ** 2))  # a lens galaxy
    big = 0.3 + 3 * RMS * rng.standard_normal((field + 80, field + 80))
    big += np.linspace(0.0, 2.0, field + 80)[None, :]  # outside only: a gradient and more noise
    big[10:20, 10:20] += 50.0  # and a bright neighbour
    big[40 : 40 + field, 40 : 40 + field] = inner
    settings = Preparation(cosmic_rays=False)
    alone = prepare(cutout(inner, scale), settings, (64, 64), 0.08)
    within = prepare(cutout(big, scale), settings, (64, 64), 0.08)
    np.testing.assert_array_equal(within.image.numpy(), alone.image.numpy())
    assert within.record == alone.record
    centre = (np.array(31.5), np.array(31.5))
    assert [float(v) for v in within.to_input_pixels(*centre)] == pytest.approx(
        [float(v) + 40 for v in alone.to_input_pixels(*centre)]
    )


def test_a_pixel_scale_within_the_tolerance_is_cropped_as_the_models():
    """0.9% coarser pixels are not resampled: the field is the model's 64 pixels, the image the same."""
    image = 0.1 + RMS * np.random.default_rng(9).standard_normal((71, 71))
    settings = Preparation(cosmic_rays=False)
    near = prepare(cutout(image, 0.08 * 1.009), settings, (64, 64), 0.08)
    exact = prepare(cutout(image, 0.08), settings, (64, 64), 0.08)
    assert near.image.shape == (1, 64, 64) and near.offset == exact.offset == (3.0, 3.0)  # (71 - 64) // 2
    np.testing.assert_array_equal(near.image.numpy(), exact.image.numpy())
