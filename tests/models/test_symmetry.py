"""Test-time averaging over the 8 symmetries of the image: the sign rules against the simulator,
their inverse, the ensemble's mixture over them, the calibration record, refusals."""

from __future__ import annotations

import contextlib
import logging

import pytest
import torch

from lenscnn.errors import UserError
from lenscnn.metrics.calibration import SigmaCalibration
from lenscnn.models.calibration_record import calibration_fit
from lenscnn.models.checkpoint import load_regressor, read_checkpoint
from lenscnn.models.ensemble import Ensemble, mc_dropout
from lenscnn.models.symmetry import (
    IDENTITY,
    SYMMETRIES,
    Symmetry,
    check_symmetric_targets,
    check_symmetries,
    operations,
    symmetry_group,
    transform_images,
    transform_params,
    untransform,
)
from tests.helpers import load_conf, make_simulator, perturbed_copy


def test_the_group_has_8_distinct_elements_identity_first():
    assert len(SYMMETRIES) == 8 and SYMMETRIES[0] == IDENTITY and IDENTITY.is_identity
    image = torch.arange(16.0).view(1, 1, 4, 4)
    views = {tuple(transform_images(image, s).flatten().tolist()) for s in SYMMETRIES}
    assert len(views) == 8  # the 8 flips and quarter-turns of a generic image all differ
    assert transform_images(image, IDENTITY) is image


# -- the sign rules, against the project's renderer -------------------------------------------------


def _priors() -> dict[str, dict]:
    quickstart, realistic = load_conf("prior", "quickstart"), load_conf("prior", "realistic")
    epl_lens = {**quickstart["lens"], "profile": "EPL", "gamma": {"dist": "uniform", "low": 1.8, "high": 2.2}}
    return {
        # SIE + shear + Sersic source (off-centre, elliptical) + Sersic lens light: every rule but EPL's slope
        "sie_shear_light": {
            **quickstart,
            "shear": {**realistic["shear"], "gamma": {"dist": "uniform", "low": 0.05, "high": 0.1}},
            "lens_light": {**realistic["lens_light"], "absent_fraction": 0.0},
        },
        "epl": {**quickstart, "lens": epl_lens},
    }


@pytest.mark.parametrize("prior", ["sie_shear_light", "epl"])
def test_transformed_parameters_render_the_transformed_image(small_instrument, prior):
    """``render(transform_params(p, s)) == transform_images(render(p), s)`` for all 8 symmetries, and
    every non-trivial rule matters: leaving out any sign change or swap of a generator breaks it."""
    sim = make_simulator(small_instrument, _priors()[prior], dtype="float64")
    params = sim.sample_params(4, torch.Generator().manual_seed(7))
    image = sim.render(params, noise=False)
    tol = {"rtol": 0.0, "atol": 1e-9 * float(image.abs().max())}
    for symmetry in SYMMETRIES:
        expected = transform_images(image, symmetry)
        torch.testing.assert_close(sim.render(transform_params(params, symmetry), noise=False), expected, **tol)

    checked = 0
    for symmetry in (Symmetry(True, False, False), Symmetry(False, True, False), Symmetry(False, False, True)):
        transformed, expected = transform_params(params, symmetry), transform_images(image, symmetry)
        for name in params:
            if torch.equal(transformed[name], params[name]):
                continue
            wrong = {**transformed, name: params[name]}  # this one parameter left as it was
            assert (sim.render(wrong, noise=False) - expected).abs().max() > 1e-3 * float(image.abs().max()), name
            checked += 1
    assert checked >= (9 if prior == "epl" else 14)


def test_untransform_inverts_transform_for_all_8():
    names = ("theta_E", "gamma", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2", "source_center_x")
    names = (*names, "source_center_y", "source_e1", "source_e2", "source_R_sersic")
    values = torch.randn(5, len(names), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sigma = values.abs() + 0.1
    for symmetry in SYMMETRIES:
        seen = transform_params({n: values[:, k] for k, n in enumerate(names)}, symmetry)
        mean, back_sigma = untransform(torch.stack([seen[n] for n in names], -1), sigma, names, symmetry)
        assert torch.equal(mean, values), symmetry
        # sigma: only permuted (a quarter-turn swaps the centre's components), never negated
        assert bool((back_sigma > 0).all())
        swapped = symmetry.transpose
        i, j = names.index("center_x"), names.index("center_y")
        assert torch.equal(back_sigma[:, i], sigma[:, j if swapped else i])
        assert torch.equal(back_sigma[:, names.index("e1")], sigma[:, names.index("e1")])
    assert untransform(values, None, names, IDENTITY)[0] is values
    assert [operations(s) for s in SYMMETRIES[:2]] == [(), ("flip_y",)]


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("theta_E", "e1", "center_x", "center_y"), "'e1' is one component of a pair whose other, 'e2'"),
        (("theta_E", "center_x"), "'center_x' is one component of a pair whose other, 'center_y'"),
        (("gamma2", "e1", "e2"), "'gamma2' is one component of a pair whose other, 'gamma1'"),
        (("theta_E", "source_phi_G"), "'source_phi_G' has no known transform"),
        (("theta_E", "multipole_4_phi_m"), "'multipole_4_phi_m' has no known transform"),
    ],
)
def test_targets_without_a_transform_are_refused(names, message):
    with pytest.raises(UserError, match=message) as error:
        check_symmetric_targets(names)
    assert "symmetries=1" in str(error.value) and "\n" not in str(error.value)
    assert symmetry_group(1, names) == (IDENTITY,)  # symmetries=1 never looks at the targets
    with pytest.raises(UserError, match=message):
        symmetry_group(8, names)


@pytest.mark.parametrize("value", [0, 2, 4, -1, True, "8", 8.0, None])
def test_bad_symmetries_values_are_refused(value):
    with pytest.raises(UserError, match="symmetries must be 1 .* or 8") as error:
        check_symmetries(value)
    assert "\n" not in str(error.value)


def test_non_square_images_cannot_be_transposed():
    images = torch.zeros(2, 1, 4, 6)
    assert transform_images(images, Symmetry(False, True, True)).shape == images.shape
    with pytest.raises(UserError, match="square images"):
        transform_images(images, Symmetry(True, False, False))


# -- the ensemble ----------------------------------------------------------------------------------


def images_for(model, n: int = 6, seed: int = 3) -> torch.Tensor:
    from lenscnn.sim import Simulator

    sim = Simulator.from_config({**model.hparams.simulator, "compile": False})
    images, _ = sim.sample(n, generator=torch.Generator().manual_seed(seed))
    return images


def equivariant_member(path):
    """The tiny model with its network replaced by image moments: exactly equivariant under the
    8 symmetries (centroid, spin-2 quadrupole, invariant size), sigmas equivariant too."""
    model = load_regressor(path)
    h, w = model.hparams.image_size
    scale = model.hparams.pixel_scale
    y = ((torch.arange(h) - (h - 1) / 2) * scale).view(h, 1)
    x = ((torch.arange(w) - (w - 1) / 2) * scale).view(1, w)

    def predict_physical(images, normalized=False):  # moments of any pixel-wise stretch are equivariant too
        f = images[:, 0].double().clamp(min=0)
        total = f.sum((1, 2))

        def moment(g):
            return (f * g).sum((1, 2)) / total

        cx, cy = moment(x), moment(y)
        qxx, qyy = moment((x - cx.view(-1, 1, 1)) ** 2), moment((y - cy.view(-1, 1, 1)) ** 2)
        qxy = moment((x - cx.view(-1, 1, 1)) * (y - cy.view(-1, 1, 1)))
        values = {
            "theta_E": (qxx + qyy).sqrt(),
            "e1": (qxx - qyy) / (qxx + qyy),
            "e2": 2 * qxy / (qxx + qyy),
            "center_x": cx,
            "center_y": cy,
        }
        sigma = {n: 0.01 + v.abs() / 10 for n, v in values.items()}
        sigma["center_x"], sigma["center_y"] = 0.01 + cx.abs(), 0.01 + cy.abs()  # unequal: a missed swap shows
        names = model.target_names
        mean = torch.stack([values[n] for n in names], -1).float()
        return {"mean": mean, "sigma": torch.stack([sigma[n] for n in names], -1).float(), "covariance": None}

    model.predict_physical = predict_physical
    return model


def test_an_equivariant_member_predicts_the_same_with_8_symmetries(tiny_checkpoint):
    member = equivariant_member(tiny_checkpoint)
    assert set(member.target_names) == {"theta_E", "e1", "e2", "center_x", "center_y"}
    ensemble = Ensemble([member])
    images = images_for(member)
    one, eight = ensemble.predict(images), ensemble.predict(images, symmetries=8)
    tol = {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(eight.mean, one.mean, **tol)
    torch.testing.assert_close(eight.aleatoric, one.sigma, **tol)  # sigmas permuted back, not averaged across
    torch.testing.assert_close(eight.sigma, one.sigma, **tol)
    assert one.epistemic is None and float(eight.epistemic.max()) < 1e-5
    torch.testing.assert_close(eight.member_means[0], eight.mean)
    # the transformed views do differ: the predictions on them, untransformed, agree
    view = transform_images(images, SYMMETRIES[5])
    assert not torch.allclose(member.predict_physical(view)["mean"], one.mean, atol=1e-3)


def reference_predict(ensemble: Ensemble, images: torch.Tensor, mc_samples: int = 0) -> dict:
    """The ensemble's prediction as it was computed before symmetries existed."""
    images = images.to(ensemble.device, torch.float32)
    means, variances = [], []
    with torch.inference_mode():
        for member, source in zip(ensemble.members, ensemble.sources, strict=True):
            with mc_dropout(member, source) if mc_samples else contextlib.nullcontext():
                for _ in range(max(1, mc_samples)):
                    out = member.predict_physical(images)
                    means.append(out["mean"])
                    variances.append(out["sigma"].square())
    mu = torch.stack(means)
    aleatoric, epistemic = torch.stack(variances).mean(0), mu.var(0, correction=0)
    return {
        "mean": mu.mean(0),
        "sigma": torch.sqrt(aleatoric + epistemic) * ensemble.sigma_scale,
        "aleatoric": aleatoric.sqrt(),
        "epistemic": epistemic.sqrt(),
        "member_means": mu.view(len(ensemble.members), max(1, mc_samples), *mu.shape[1:]).mean(1),
    }


@pytest.mark.parametrize("mc_samples", [0, 3])
def test_symmetries_1_is_unchanged_bit_for_bit(tiny_checkpoint, tmp_path, mc_samples):
    other = tmp_path / "other.ckpt"
    perturbed_copy(tiny_checkpoint, other)
    ensemble = Ensemble.from_checkpoints([tiny_checkpoint, other])
    ensemble.sigma_scale.copy_(torch.tensor([1.1, 0.9, 1.3, 1.0, 0.7]))
    images = images_for(ensemble.reference)
    torch.manual_seed(5)
    expected = reference_predict(ensemble, images, mc_samples)
    for kwargs in ({}, {"symmetries": 1}):
        torch.manual_seed(5)
        got = ensemble.predict(images, mc_samples, **kwargs)
        for key, value in expected.items():
            assert torch.equal(getattr(got, key), value), (key, kwargs)


def test_the_ensemble_recalibrates_its_total_sigma_by_the_power_law(tiny_checkpoint):
    ensemble = Ensemble.from_checkpoints([tiny_checkpoint])
    images = images_for(ensemble.reference)
    raw = ensemble.predict(images, symmetries=8)
    n = len(ensemble.target_names)
    fit = SigmaCalibration(torch.full((n,), 0.5), torch.linspace(0.8, 2.0, n), raw.sigma.median(0).values)
    ensemble.sigma_calibration = fit
    got = ensemble.predict(images, symmetries=8)
    torch.testing.assert_close(got.sigma, 0.5 * raw.sigma * (raw.sigma / fit.pivot) ** (fit.power - 1))
    torch.testing.assert_close(got.aleatoric, raw.aleatoric)  # the parts stay uncalibrated
    torch.testing.assert_close(got.mean, raw.mean)


def test_8_symmetries_of_a_trained_member_mix_40_components(tiny_checkpoint, tmp_path):
    other = tmp_path / "other.ckpt"
    perturbed_copy(tiny_checkpoint, other)
    ensemble = Ensemble.from_checkpoints([tiny_checkpoint, other])
    images = images_for(ensemble.reference)
    names = ensemble.target_names
    # by hand: every (member, symmetry) prediction mapped back, one equal-weight mixture
    means, variances = [], []
    with torch.inference_mode():
        for member in ensemble.members:
            for symmetry in SYMMETRIES:
                out = member.predict_physical(transform_images(images, symmetry))
                mean, sigma = untransform(out["mean"], out["sigma"], names, symmetry)
                means.append(mean)
                variances.append(sigma.square())
    mu = torch.stack(means)
    aleatoric, epistemic = torch.stack(variances).mean(0), mu.var(0, correction=0)
    got = ensemble.predict(images, symmetries=8)
    tol = {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(got.mean, mu.mean(0), **tol)
    torch.testing.assert_close(got.aleatoric, aleatoric.sqrt(), **tol)
    torch.testing.assert_close(got.epistemic, epistemic.sqrt(), **tol)
    torch.testing.assert_close(got.sigma, (aleatoric + epistemic).sqrt(), **tol)
    torch.testing.assert_close(got.member_means, mu.view(2, 8, *mu.shape[1:]).mean(1), **tol)
    # the views disagree too: the epistemic variance of every target, over the images, grows with them
    single = ensemble.predict(images).epistemic
    assert bool((got.epistemic.square().mean(0) > single.square().mean(0)).all())

    torch.manual_seed(0)
    sampled = ensemble.predict(images, mc_samples=2, symmetries=8)
    assert sampled.member_means.shape == (2, *images.shape[:1], len(names))
    torch.testing.assert_close(sampled.sigma.square(), sampled.aleatoric.square() + sampled.epistemic.square())
    assert not any(m.training for m in ensemble.modules())

    with pytest.raises(UserError, match="symmetries must be 1"):
        ensemble.predict(images, symmetries=4)


def test_a_single_mse_member_gives_a_sigma_with_8_symmetries(tiny_checkpoint):
    ensemble = Ensemble.from_checkpoints([tiny_checkpoint])
    ensemble.reference.hparams.loss = "mse"  # as gives_sigma sees it; predict is not run here
    assert not ensemble.gives_sigma() and ensemble.gives_sigma(symmetries=8)


# -- the calibration record ------------------------------------------------------------------------


def test_calibration_records_their_symmetries(tiny_checkpoint, tmp_path, caplog):
    names = load_regressor(tiny_checkpoint).target_names
    record = {"sigma_scale": dict.fromkeys(names, 1.2), "mc_samples": 0}
    assert calibration_fit(record, names, "old").scale.tolist() == [1.2] * len(names)  # no symmetries: fitted with 1
    assert calibration_fit({**record, "symmetries": 8}, names, "new").scale.tolist() == [1.2] * len(names)
    for bad in (3, True, "8", None):
        with pytest.raises(UserError, match=f"calibration symmetries={bad!r} is not 1 or 8"):
            calibration_fit({**record, "symmetries": bad}, names, "bad")
    power_law = {**record, "sigma_power": dict.fromkeys(names, 1.5), "sigma_pivot": dict.fromkeys(names, 0.1)}
    fit = calibration_fit(power_law, names, "power law")
    assert fit.power.tolist() == [1.5] * len(names) and fit.pivot.tolist() == pytest.approx([0.1] * len(names))
    assert calibration_fit(record, names, "old").power.tolist() == [1.0] * len(names)  # a plain scale
    with pytest.raises(UserError, match="has one of sigma_power and sigma_pivot only"):
        calibration_fit({**record, "sigma_power": power_law["sigma_power"]}, names, "half")
    with pytest.raises(UserError, match=r"calibration sigma_pivot \[0.0, .*\] must be positive numbers"):
        calibration_fit({**power_law, "sigma_pivot": dict.fromkeys(names, 0.0)}, names, "zero")

    def warnings(fitted: dict, symmetries: int) -> list[str]:
        checkpoint = read_checkpoint(tiny_checkpoint)
        checkpoint["calibration"] = fitted
        torch.save(checkpoint, tmp_path / "calibrated.ckpt")
        ensemble = Ensemble.from_checkpoints([tmp_path / "calibrated.ckpt"])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lenscnn.models.ensemble"):
            ensemble.check_calibration_mode(0, symmetries)
        return [r.getMessage() for r in caplog.records]

    assert warnings(record, 1) == []
    # predictions follow the calibration's setting unless told otherwise
    checkpoint = read_checkpoint(tiny_checkpoint)
    checkpoint["calibration"] = {**record, "symmetries": 8}
    torch.save(checkpoint, tmp_path / "as_calibrated.ckpt")
    calibrated = Ensemble.from_checkpoints([tmp_path / "as_calibrated.ckpt"])
    assert calibrated.symmetries() == 8 and calibrated.symmetries(1) == 1
    assert Ensemble.from_checkpoints([tiny_checkpoint]).symmetries() == 1
    images = torch.rand(3, 1, *calibrated.image_size)
    assert torch.equal(calibrated.predict(images).mean, calibrated.predict(images, symmetries=8).mean)
    assert not torch.equal(calibrated.predict(images).mean, calibrated.predict(images, symmetries=1).mean)
    (old,) = warnings(record, 8)
    assert "fitted with symmetries=1, you predict with symmetries=8" in old and "symmetries=8" in old.split(";")[1]
    assert warnings({**record, "symmetries": 8}, 8) == []
    assert len(warnings({**record, "symmetries": 8}, 1)) == 1
    assert Ensemble.from_checkpoints([tiny_checkpoint]).calibration is None  # nothing fitted: nothing to warn of


def test_evaluate_with_8_symmetries_stores_them_in_the_calibration(tiny_checkpoint):
    from lenscnn.evaluation.datasets import simulated_set
    from lenscnn.evaluation.pipeline import evaluate

    ensemble = Ensemble.from_checkpoints([tiny_checkpoint])
    config = ensemble.simulator_config
    test, val = simulated_set(config, "test", 16), simulated_set(config, "val", 16)
    result = evaluate(ensemble, test, val_set=val, batch_size=8, symmetries=8)
    assert result.calibration["symmetries"] == 8 and result.summary.symmetries == 8
    assert result.calibration["mc_samples"] == 0
    with pytest.raises(UserError, match="symmetries must be 1"):
        evaluate(ensemble, test, symmetries=2)
