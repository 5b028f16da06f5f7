"""Coverage, the calibration fit and the evaluation metrics against numpy/scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from lenscnn.metrics.calibration import (
    SigmaCalibration,
    calibration_curve,
    coverage,
    fit_sigma_calibration,
    fit_sigma_scale,
    gaussian_quantile,
)
from lenscnn.metrics.regression import evaluation_metrics, robust_sigma


def test_gaussian_quantile_matches_scipy():
    for level in (0.5, 0.68, 0.6827, 0.95, 0.99):
        assert float(gaussian_quantile(level)) == pytest.approx(stats.norm.ppf(0.5 + level / 2), rel=1e-10)


def test_coverage_of_calibrated_gaussians_is_nominal():
    g = torch.Generator().manual_seed(0)
    sigma = torch.rand(200_000, 2, generator=g, dtype=torch.float64) + 0.1
    residual = torch.randn(200_000, 2, generator=g, dtype=torch.float64) * sigma
    for level in (0.68, 0.95):
        assert coverage(residual, sigma, level).numpy() == pytest.approx([level, level], abs=0.004)
    curve = calibration_curve(residual, sigma, [0.1, 0.5, 0.9])
    assert curve.shape == (3, 2)
    assert curve[:, 0].numpy() == pytest.approx([0.1, 0.5, 0.9], abs=0.004)


def test_fit_sigma_scale_undoes_over_and_under_confidence():
    g = torch.Generator().manual_seed(1)
    true_sigma = torch.rand(20_000, 3, generator=g, dtype=torch.float64) + 0.5
    residual = torch.randn(20_000, 3, generator=g, dtype=torch.float64) * true_sigma
    claimed = true_sigma * torch.tensor([0.25, 1.0, 3.0], dtype=torch.float64)  # over-, well-, under-confident
    scale = fit_sigma_scale(residual, claimed)
    assert scale.numpy() == pytest.approx([4.0, 1.0, 1 / 3], rel=0.03)
    for level in (0.68, 0.95):
        assert coverage(residual, claimed * scale, level).numpy() == pytest.approx([level] * 3, abs=0.01)


def test_fit_sigma_scale_balances_heavy_tails():
    """Student-t residuals: no single scale fits both levels exactly; the fit lands within 3 points of both."""
    rng = np.random.default_rng(2)
    residual = torch.from_numpy(rng.standard_t(5, size=(50_000, 1)))
    sigma = torch.full_like(residual, 0.3)
    scale = fit_sigma_scale(residual, sigma)
    for level in (0.68, 0.95):
        assert abs(float(coverage(residual, sigma * scale, level)[0]) - level) < 0.03


def test_fit_sigma_calibration_finds_the_power_law_a_timid_sigma_needs():
    """Errors that grow as sigma**1.6 (the hard lenses' errors outgrow their sigma): the fit finds the
    power and the calibrated intervals hold at 68% and 95% both for the lenses of small sigma and for
    those of large sigma, which no single scale does."""
    g = torch.Generator().manual_seed(4)
    claimed = torch.exp(torch.randn(40_000, 2, generator=g, dtype=torch.float64) * 0.5) * 0.05
    true_sigma = 0.3 * claimed * (claimed / 0.05) ** torch.tensor([0.6, 0.0], dtype=torch.float64)
    residual = torch.randn(40_000, 2, generator=g, dtype=torch.float64) * true_sigma
    fit = fit_sigma_calibration(residual, claimed)
    assert fit.power.numpy() == pytest.approx([1.6, 1.0], abs=0.06)
    assert fit.scale.numpy() == pytest.approx([0.3, 0.3], rel=0.05)
    assert fit.pivot.numpy() == pytest.approx(claimed.median(0).values.numpy())
    small = claimed[:, 0] < claimed[:, 0].median()
    scale = fit_sigma_scale(residual, claimed)
    for level in (0.68, 0.95):
        for part in (small, ~small):
            calibrated = coverage(residual[part], fit.apply(claimed)[part], level)
            assert calibrated.numpy() == pytest.approx([level, level], abs=0.015)
        plain = coverage(residual[small], claimed[small] * scale, level)[0]
        assert plain > level + 0.03  # a single scale: too wide for small sigma (and too narrow for large)
    torch.testing.assert_close(fit.invert(fit.apply(claimed)), claimed)


def test_a_power_of_one_is_the_plain_scale_bit_for_bit():
    g = torch.Generator().manual_seed(5)
    sigma = torch.rand(5_000, 3, generator=g, dtype=torch.float64) + 0.2
    residual = torch.randn(5_000, 3, generator=g, dtype=torch.float64) * sigma * 2
    fit = fit_sigma_calibration(residual, sigma, powers=(1.0,))
    assert torch.equal(fit.scale, fit_sigma_scale(residual, sigma)) and fit.power.tolist() == [1.0] * 3
    assert torch.equal(fit.apply(sigma), fit.scale * sigma)
    assert torch.equal(SigmaCalibration.identity(3).apply(sigma), sigma)
    record = fit.by_target(["a", "b", "c"])
    assert record["sigma_power"] == {"a": 1.0, "b": 1.0, "c": 1.0} and set(record) == {
        "sigma_scale",
        "sigma_power",
        "sigma_pivot",
    }


def test_evaluation_metrics_against_numpy():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(500, 2))
    error = rng.normal(scale=[0.1, 0.3], size=(500, 2))
    error[:5, 0] = 5.0  # five gross outliers in the first target
    mean = truth + error
    sigma = np.full_like(truth, 0.2)
    m = evaluation_metrics(torch.from_numpy(truth), torch.from_numpy(mean), torch.from_numpy(sigma), ["a", "b"])
    for k, name in enumerate(("a", "b")):
        e = error[:, k]
        assert m[name]["rmse"] == pytest.approx(np.sqrt(np.mean(e**2)), rel=1e-6)
        assert m[name]["mae"] == pytest.approx(np.mean(np.abs(e)), rel=1e-6)
        assert m[name]["bias"] == pytest.approx(np.mean(e), rel=1e-6, abs=1e-12)
        assert m[name]["median_abs_error"] == pytest.approx(np.sort(np.abs(e))[(len(e) - 1) // 2], rel=1e-6)
        nll = -stats.norm.logpdf(e, scale=0.2).mean()
        assert m[name]["nll"] == pytest.approx(nll, rel=1e-6)
        assert m[name]["coverage_68"] == pytest.approx(np.mean(np.abs(e) <= stats.norm.ppf(0.84) * 0.2))
        assert m[name]["coverage_95"] == pytest.approx(np.mean(np.abs(e) <= stats.norm.ppf(0.975) * 0.2))
    assert m["a"]["outlier_fraction"] == pytest.approx(5 / 500, abs=0.004)
    assert m["b"]["outlier_fraction"] < 0.01
    assert float(robust_sigma(torch.from_numpy(error[:, 1:]))[0]) == pytest.approx(0.3, rel=0.1)


def test_metrics_without_sigma_have_no_uncertainty_entries():
    truth = torch.zeros(10, 1)
    m = evaluation_metrics(truth, truth + 0.1, None, ["a"])
    assert set(m["a"]) == {"rmse", "mae", "bias", "median_abs_error", "outlier_fraction"}
