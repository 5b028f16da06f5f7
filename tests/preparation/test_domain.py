"""Domain flags: few on clean test lenses, nearly all on images unlike the training images, measured
against a model trained without nuisances (the quickstart distribution) and one trained with them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lenscnn.io.cutouts import Cutout
from lenscnn.preparation.domain import DomainReference, image_statistics, predicted_arc_area
from lenscnn.preparation.pipeline import Preparation, prepare
from lenscnn.preparation.sky import estimate_sky
from lenscnn.sim import Simulator
from tests.helpers import load_conf

NAMES = ("theta_E", "e1", "e2", "center_x", "center_y")
RMS = 0.01


def reference_config() -> dict:
    return {"instrument": load_conf("instrument", "quickstart"), "prior": load_conf("prior", "quickstart")}


@pytest.fixture(scope="module")
def quickstart():
    config = reference_config()
    reference = DomainReference.simulate(config, NAMES, size=512)
    simulator = Simulator.from_config(config)
    images, params = simulator.sample(100, simulator.make_generator(99))  # held-out lenses of the same prior
    return reference, images.double(), params


def flagged(reference, images, subtract_sky=True, **options) -> np.ndarray:
    """Which images are flagged, prepared as predict does (the sky estimated and subtracted, or not)."""
    skies = [estimate_sky(image[0].numpy()) for image in images]
    levels = torch.tensor([sky.level if subtract_sky else 0.0 for sky in skies])
    noise = torch.tensor([sky.rms for sky in skies])
    images = images - levels.view(-1, 1, 1, 1)
    stats = image_statistics(images, reference.background_rms, subtracted=levels, noise=noise)
    return np.array(
        [bool(reference.flags({k: float(v[i]) for k, v in stats.items()}, **options)) for i in range(len(images))]
    )


def test_clean_test_lenses_are_rarely_flagged(quickstart):
    reference, images, params = quickstart
    assert flagged(reference, images).mean() <= 0.05
    # their true parameters lie inside the prior's central range
    inside = [not reference.prediction_flags({n: float(params[n][i]) for n in NAMES}) for i in range(100)]
    assert np.mean(inside) >= 0.95


def test_clean_lenses_of_a_finer_instrument_resampled_are_rarely_flagged(quickstart):
    """The same prior seen at 0.04"/px with the noise that sums to the model's in a 0.08" pixel, prepared as
    predict prepares it (sky, resampling, crop): like the training images (while the noise of resampled
    cutouts was recorded 4x too small here, every one was flagged)."""
    reference = quickstart[0]
    config = reference_config()
    instrument = config["instrument"]
    fine = {
        **instrument,
        "image_size": 160,
        "pixel_scale": 0.04,
        "noise": {**instrument["noise"], "background_rms": RMS / 2},
    }
    simulator = Simulator.from_config({**config, "instrument": fine})
    images, _ = simulator.sample(32, simulator.make_generator(98))
    prepared = [
        prepare(Cutout("lens.fits", image[0].double().numpy(), 0.04, None), Preparation(), (64, 64), 0.08)
        for image in images
    ]
    subtracted = torch.tensor([p.record["sky"] * 4 for p in prepared])  # per model pixel: 4 input pixels
    noise = torch.tensor([p.record["noise_rms"] for p in prepared])
    assert noise.median() == pytest.approx(RMS, rel=0.1)
    stats = image_statistics(
        torch.stack([p.image for p in prepared]).double(), reference.background_rms, subtracted=subtracted, noise=noise
    )
    flags = [reference.flags({k: float(v[i]) for k, v in stats.items()}, zoom=0.5) for i in range(len(images))]
    assert np.mean([bool(f) for f in flags]) <= 0.1, flags


def test_images_unlike_the_training_images_are_flagged(quickstart):
    reference, images, _ = quickstart
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0), dtype=images.dtype)
    left_in = DomainReference.simulate(reference_config(), NAMES, size=512, subtract_sky=False)
    assert flagged(left_in, images + 30 * RMS, subtract_sky=False).mean() >= 0.95  # a pedestal of 30 rms left in
    assert flagged(reference, images + 30 * RMS).mean() >= 0.95  # or taken off: a sky the model never saw
    assert flagged(reference, images + noise * RMS * 8**0.5).mean() >= 0.95  # 3x the noise
    assert flagged(reference, images * 100).mean() >= 0.95  # wrong units
    assert flagged(reference, torch.zeros_like(images)).all()  # blank
    assert flagged(reference, images, psf_fwhm=0.32).all()  # twice the model's PSF
    assert flagged(reference, images, pixel_scale_assumed=True).all()
    assert flagged(reference, images, zoom=2.5).all()  # pixels 2.5x coarser than the model's, upsampled
    # finer pixels binned to the model's add no flag, nor does a sharp PSF that binning widens into the trained
    # widths (0.12" at 0.03"/px is 0.132" at 0.08"/px); a PSF that stays too sharp once binned is flagged
    clean = flagged(reference, images)
    assert (flagged(reference, images, zoom=0.3, psf_fwhm=0.14) == clean).all()
    assert (flagged(reference, images, zoom=0.375, psf_fwhm=0.12) == clean).all()
    assert flagged(reference, images, zoom=0.375, psf_fwhm=0.05).all()
    saturated = images.clone()
    saturated[:, :, 30:33, 30:33] = 50.0
    assert flagged(reference, saturated).all()


def test_a_model_trained_with_nuisances_accepts_them():
    config = {
        "instrument": load_conf("instrument", "quickstart"),
        "prior": load_conf("prior", "quickstart"),
        "observation": load_conf("observation", "survey"),
    }
    reference = DomainReference.simulate(config, NAMES, size=512)
    simulator = Simulator.from_config({**config, "observation": None})
    images, _ = simulator.sample(100, simulator.make_generator(99))
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0), dtype=images.dtype)
    # 3x the noise is inside the survey observation's 0.5-4x, the PSF inside its 0.08-0.25"
    assert flagged(reference, images.double() + noise.double() * RMS * 8**0.5).mean() <= 0.1
    skies = [estimate_sky(image[0].double().numpy()) for image in images]
    levels, noise = torch.tensor([sky.level for sky in skies]), torch.tensor([sky.rms for sky in skies])
    shifted = images.double() - levels.view(-1, 1, 1, 1)
    stats = image_statistics(shifted, reference.background_rms, subtracted=levels, noise=noise)
    for i in range(len(images)):
        reasons = reference.flags({k: float(v[i]) for k, v in stats.items()}, psf_fwhm=0.2)
        assert not any("PSF" in r for r in reasons)
    assert reference.psf_fwhm == pytest.approx((0.08, 0.25), abs=0.01)


def test_a_reference_is_drawn_once_then_read_from_the_cache(tmp_path, monkeypatch, caplog):
    """The reference of a model is kept in LENSCNN_CACHE and read back equal; a damaged cache file is drawn
    again; another preparation of the inputs (sky left in) is another reference."""
    monkeypatch.setenv("LENSCNN_CACHE", str(tmp_path))
    config = {**reference_config(), "instrument": {**load_conf("instrument", "quickstart"), "image_size": 32}}
    drawn = DomainReference.cached(config, NAMES, size=64)
    (path,) = (tmp_path / "domain").iterdir()

    def same(a: DomainReference, b: DomainReference) -> bool:
        return all(
            torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
            for x, y in zip(vars(a).values(), vars(b).values(), strict=True)
        )

    with monkeypatch.context() as patched:
        patched.setattr(DomainReference, "simulate", lambda *args, **kwargs: pytest.fail("drawn again"))
        assert same(DomainReference.cached(config, NAMES, size=64), drawn)
    assert same(DomainReference.simulate(config, NAMES, size=64), drawn)
    path.write_bytes(path.read_bytes()[:100])
    assert same(DomainReference.cached(config, NAMES, size=64), drawn)
    assert "drawing the domain reference again: cannot read" in caplog.text
    left_in = DomainReference.cached(config, NAMES, size=64, subtract_sky=False)
    assert len(list((tmp_path / "domain").iterdir())) == 2 and left_in.distance != drawn.distance


def test_answers_less_precise_than_the_references_are_flagged_uncertain(tmp_path, monkeypatch):
    """Given the model's answers, the reference keeps the 99th percentile of sigma(theta_E)/theta_E over its
    images; an answer above it is flagged ``uncertain``, one below is not; another model is another cache file."""
    monkeypatch.setenv("LENSCNN_CACHE", str(tmp_path))
    config = {**reference_config(), "instrument": {**load_conf("instrument", "quickstart"), "image_size": 32}}
    seen = []

    def predict(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(images.shape)
        n = images.shape[0]
        mean = torch.full((n, len(NAMES)), 2.0)
        sigma = torch.linspace(0.0, 0.2, n)[:, None].expand(n, len(NAMES))  # relative 0..0.1
        return mean, sigma

    reference = DomainReference.cached(config, NAMES, size=101, predict=predict, model="a")
    assert seen == [(101, 1, 32, 32)]
    assert reference.theta_E_precision == pytest.approx(0.099, rel=1e-6)
    assert DomainReference.cached(config, NAMES, size=101).theta_E_precision is None  # drawn without a model
    answer = {"theta_E": 1.0, "e1": 0.0, "e2": 0.0, "center_x": 0.0, "center_y": 0.0}
    assert not reference.prediction_flags(answer, {**answer, "theta_E": 0.09})
    (reason,) = reference.prediction_flags(answer, {**answer, "theta_E": 0.2})
    assert reason.startswith("uncertain: sigma(theta_E)/theta_E 0.20 above 0.10")
    DomainReference.cached(config, NAMES, size=101, predict=predict, model="b")
    assert len(seen) == 2 and len(list((tmp_path / "domain").iterdir())) == 3


def test_images_without_arcs_around_the_answer_are_flagged_no_arcs():
    """Given the model's answers, the reference keeps the 0.5% quantile of the arc area around them over its
    images; held-out lenses of the prior are rarely below it, the same lenses with their source 1,000x fainter
    nearly always (``no arcs``); a model without a centre among its targets gets no such check."""

    def predict(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor([[1.25, 0.0, 0.0, 0.0, 0.0]]).expand(images.shape[0], -1)  # the prior's middle
        return mean, torch.full_like(mean, 0.05)

    config = reference_config()
    reference = DomainReference.simulate(config, NAMES, size=256, predict=predict)
    assert reference.arc_area > 0.3  # arcsec^2: every lens of this prior has bright arcs
    assert DomainReference.simulate(config, NAMES[:3], size=64, predict=predict).arc_area is None
    faint = {**config, "prior": {**config["prior"], "source": {**config["prior"]["source"], "amp": 0.1}}}
    answer = {"theta_E": 1.25, "e1": 0.0, "e2": 0.0, "center_x": 0.0, "center_y": 0.0}
    rates = []
    for prior_config, seed in ((config, 7), (faint, 8)):
        simulator = Simulator.from_config(prior_config)
        images, _ = simulator.sample(64, simulator.make_generator(seed))
        noise = torch.full((64,), RMS)
        areas = predicted_arc_area(images, noise, predict(images)[0], NAMES, simulator.instrument.pixel_scale)
        reasons = [reference.prediction_flags(answer, arcs=float(a)) for a in areas]
        rates.append(np.mean([any(r.startswith("no arcs: ") for r in rs) for rs in reasons]))
    assert rates[0] <= 0.05 and rates[1] >= 0.95
