"""Priors: distributions against scipy, ellipticity and shear conventions against lenstronomy,
velocity-dispersion Einstein radii against astropy."""

import math

import numpy as np
import pytest
import torch
from astropy import constants, units
from astropy.cosmology import FlatLambdaCDM
from lenstronomy.Util import param_util
from scipy import stats

from lenscnn.sim import distributions, func
from lenscnn.sim.distributions import parse_distribution
from lenscnn.sim.prior import Prior

DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])

#: config spec -> the same distribution in scipy
DISTRIBUTIONS = {
    "uniform": ({"dist": "uniform", "low": -0.3, "high": 0.7}, stats.uniform(-0.3, 1.0)),
    "log_uniform": ({"dist": "log_uniform", "low": 20.0, "high": 500.0}, stats.loguniform(20.0, 500.0)),
    "normal": ({"dist": "normal", "mean": 1.5, "std": 0.4}, stats.norm(1.5, 0.4)),
    "normal-truncated": (
        {"dist": "normal", "mean": 250.0, "std": 40.0, "low": 150.0, "high": 350.0},
        stats.truncnorm(-2.5, 2.5, loc=250.0, scale=40.0),
    ),
    "normal-upper-tail": (
        {"dist": "normal", "mean": 0.0, "std": 0.1, "low": 0.12},
        stats.truncnorm(1.2, np.inf, loc=0.0, scale=0.1),
    ),
}


def _sample(spec, n, dtype, seed=0):
    dist = parse_distribution(spec, "test")
    return dist, dist.sample(n, torch.Generator().manual_seed(seed), torch.device("cpu"), dtype)


@DTYPES
@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_distribution_support_moments_and_shape(name, dtype):
    spec, reference = DISTRIBUTIONS[name]
    n = 200_000
    dist, samples = _sample(spec, n, dtype)
    assert samples.shape == (n,) and samples.dtype == dtype
    x = samples.double().numpy()
    assert np.all(np.isfinite(x))
    low, high = dist.support
    assert (low, high) == (spec.get("low", -math.inf), spec.get("high", math.inf))
    assert x.min() >= low and x.max() <= high
    mean, var, _, excess_kurtosis = (float(v) for v in reference.stats(moments="mvsk"))
    assert abs(x.mean() - mean) < 5 * math.sqrt(var / n)
    var_of_var = (excess_kurtosis + 2) * var**2 / n  # variance of the sample variance
    assert abs(x.var() - var) < 5 * math.sqrt(var_of_var)
    # the whole shape, not only two moments (fixed seed: deterministic)
    assert stats.kstest(x, reference.cdf).pvalue > 1e-4


@DTYPES
def test_fixed_distribution_and_bare_numbers(dtype):
    for spec in ({"dist": "fixed", "value": 0.7}, 0.7):
        dist, samples = _sample(spec, 10, dtype)
        assert dist.support == (0.7, 0.7)
        assert torch.equal(samples, torch.full((10,), 0.7, dtype=dtype))


@DTYPES
@pytest.mark.parametrize(
    "spec",
    [
        {"dist": "normal", "mean": 0.0, "std": 1.0},
        {"dist": "normal", "mean": 0.0, "std": 1.0, "low": 0.5},
        {"dist": "normal", "mean": 2.0, "std": 0.5, "low": 1.0, "high": 3.0},
    ],
    ids=["untruncated", "lower-tail", "two-sided"],
)
def test_normal_stays_finite_and_in_support_at_extreme_uniforms(spec, dtype, monkeypatch):
    """Regression: float32 inverse-CDF sampling gave -inf for a uniform draw of exactly 0 (probability 2^-24)."""
    extremes = [0.0, 2.0**-24, 0.5, 1.0 - 2.0**-24]
    monkeypatch.setattr(
        distributions, "standard_uniform", lambda n, g, device, dtype: torch.tensor(extremes, dtype=dtype)
    )
    dist, samples = _sample(spec, len(extremes), dtype)
    low, high = dist.support
    assert torch.isfinite(samples).all(), samples
    assert samples.min() >= low and samples.max() <= high
    assert samples[0] < samples[2] < samples[3]  # still the inverse CDF


def test_phi_q_ellipticity_conversions_match_lenstronomy(rng):
    phi, q = rng.uniform(-np.pi, 2 * np.pi, 1000), rng.uniform(0.05, 1.0, 1000)
    e1, e2 = func.phi_q_to_ellipticity(torch.tensor(phi), torch.tensor(q))
    ref_e1, ref_e2 = param_util.phi_q2_ellipticity(phi, q)
    np.testing.assert_allclose(e1.numpy(), ref_e1, rtol=0, atol=1e-14)
    np.testing.assert_allclose(e2.numpy(), ref_e2, rtol=0, atol=1e-14)
    # back, including moduli beyond lenstronomy's clip at 0.9999
    e1, e2 = rng.uniform(-1, 1, (2, 1000))
    phi_back, q_back = func.ellipticity_to_phi_q(torch.tensor(e1), torch.tensor(e2))
    ref_phi, ref_q = param_util.ellipticity2phi_q(e1, e2)
    np.testing.assert_allclose(phi_back.numpy(), ref_phi, rtol=0, atol=1e-14)
    np.testing.assert_allclose(q_back.numpy(), ref_q, rtol=0, atol=1e-14)
    # no sign ambiguity: phi and phi + pi are the same ellipse
    same = func.phi_q_to_ellipticity(torch.tensor(phi + np.pi), torch.tensor(q))
    np.testing.assert_allclose(same[0].numpy(), param_util.phi_q2_ellipticity(phi, q)[0], atol=1e-12)


def _prior(conf, **sections):
    spec = conf("prior", "quickstart")
    spec.update(sections)
    return Prior(spec)


def test_prior_q_phi_and_shear_give_lenstronomy_e1_e2_gamma1_gamma2(conf):
    lens = {**conf("prior", "quickstart")["lens"], "ellipticity": {"q": 0.6, "phi": 0.4}}
    prior = _prior(conf, lens=lens, shear={"gamma": 0.05, "phi": -0.7})
    params = prior.sample(3, torch.Generator().manual_seed(0), dtype=torch.float64)
    e1, e2 = param_util.phi_q2_ellipticity(0.4, 0.6)
    gamma1, gamma2 = param_util.shear_polar2cartesian(-0.7, 0.05)
    for name, expected in {"e1": e1, "e2": e2, "gamma1": gamma1, "gamma2": gamma2}.items():
        np.testing.assert_allclose(params[name].numpy(), expected, rtol=0, atol=1e-15, err_msg=name)


@DTYPES
def test_prior_axis_ratio_and_angle_distributions_survive_the_conversion(conf, dtype):
    """Sampled (e1, e2), converted back by lenstronomy, have q ~ U(0.4, 1) and phi ~ U(0, pi) (mod pi)."""
    lens = {
        **conf("prior", "quickstart")["lens"],
        "ellipticity": {
            "q": {"dist": "uniform", "low": 0.4, "high": 1.0},
            "phi": {"dist": "uniform", "low": 0, "high": 3},
        },
    }
    shear = {"gamma": {"dist": "uniform", "low": 0.0, "high": 0.1}, "phi": {"dist": "uniform", "low": 0, "high": 3}}
    params = _prior(conf, lens=lens, shear=shear).sample(20_000, torch.Generator().manual_seed(1), dtype=dtype)
    e1, e2 = (params[k].double().numpy() for k in ("e1", "e2"))
    phi, q = param_util.ellipticity2phi_q(e1, e2)
    assert q.min() >= 0.4 - 1e-6 and q.max() <= 1.0
    assert stats.kstest(q, stats.uniform(0.4, 0.6).cdf).pvalue > 1e-4
    assert stats.kstest(np.mod(phi, np.pi), stats.uniform(0, 3).cdf).pvalue > 1e-4
    gamma1, gamma2 = (params[k].double().numpy() for k in ("gamma1", "gamma2"))
    _, gamma = param_util.shear_cartesian2polar(gamma1, gamma2)
    assert gamma.max() <= 0.1 + 1e-6
    assert stats.kstest(gamma, stats.uniform(0.0, 0.1).cdf).pvalue > 1e-4


def _astropy_theta_E(sigma_v, z_lens, z_source, cosmology):
    """4 pi (sigma/c)^2 D_ls / D_s [arcsec]; D_ls from comoving distances (flat universe), not from the table."""
    d_m_lens = cosmology.comoving_transverse_distance(z_lens)
    d_m_source = cosmology.comoving_transverse_distance(z_source)
    d_ls = (d_m_source - d_m_lens) / (1 + z_source)
    d_s = cosmology.angular_diameter_distance(z_source)
    c = constants.c.to(units.km / units.s).value
    theta = 4 * np.pi * (sigma_v / c) ** 2 * (d_ls / d_s).decompose().value * units.rad
    return theta.to(units.arcsec).value


@DTYPES
@pytest.mark.parametrize("cosmology", [None, {"H0": 67.0, "Om0": 0.6}], ids=["default", "Om0=0.6"])
def test_velocity_dispersion_einstein_radius_matches_astropy(conf, dtype, cosmology):
    lens = conf("prior", "galaxy_galaxy")["lens"]
    if cosmology is not None:
        lens["theta_E"]["cosmology"] = cosmology
    prior = Prior({**conf("prior", "galaxy_galaxy"), "lens": lens})
    assert {"theta_E", "sigma_v", "z_lens", "z_source"} <= set(prior.names)
    params = prior.sample(3000, torch.Generator().manual_seed(2), dtype=dtype)
    sigma_v, z_lens, z_source = (params[k].double().numpy() for k in ("sigma_v", "z_lens", "z_source"))
    assert sigma_v.min() >= 150 and sigma_v.max() <= 350
    assert z_lens.min() >= 0.2 and z_lens.max() <= 0.7 and z_source.min() >= 1.0 and z_source.max() <= 3.0
    expected = _astropy_theta_E(sigma_v, z_lens, z_source, FlatLambdaCDM(**(cosmology or {"H0": 70.0, "Om0": 0.3})))
    np.testing.assert_allclose(params["theta_E"].double().numpy(), expected, rtol=1e-3)


def test_velocity_dispersion_reference_value(conf):
    """Fixed sigma_v = 250 km/s, z_l = 0.5, z_s = 2 (flat LambdaCDM, H0 = 70, Om0 = 0.3):
    4 pi (250 / 299792.458)^2 rad = 1.8025 arcsec, times D_ls / D_s = 0.6354, is 1.1453 arcsec."""
    spec = {"dist": "velocity_dispersion", "sigma_v": 250.0, "z_lens": 0.5, "z_source": 2.0}
    lens = {**conf("prior", "galaxy_galaxy")["lens"], "theta_E": spec}
    theta_E = Prior({**conf("prior", "quickstart"), "lens": lens}).sample(2, dtype=torch.float64)["theta_E"]
    expected = _astropy_theta_E(250.0, 0.5, 2.0, FlatLambdaCDM(H0=70.0, Om0=0.3))
    np.testing.assert_allclose(theta_E.numpy(), expected, rtol=1e-3)
    assert expected == pytest.approx(1.1453, abs=2e-4)


def test_source_offsets_are_relative_to_the_lens_centre():
    spec = {
        "lens": {
            "theta_E": 1.0,
            "ellipticity": {"e1": 0.0, "e2": 0.0},
            "center_x": {"dist": "uniform", "low": -0.2, "high": 0.2},
            "center_y": {"dist": "uniform", "low": -0.2, "high": 0.2},
        },
        "source": {
            "amp": 10.0,
            "R_sersic": 0.2,
            "n_sersic": 1.0,
            "ellipticity": {"e1": 0.0, "e2": 0.0},
            "offset_x": {"dist": "uniform", "low": -0.05, "high": 0.05},
            "offset_y": 0.1,
        },
    }
    p = Prior(spec).sample(20_000, torch.Generator().manual_seed(3), dtype=torch.float64)
    dx, dy = p["source_center_x"] - p["center_x"], p["source_center_y"] - p["center_y"]
    assert dx.abs().max() <= 0.05 and dx.std() == pytest.approx(0.1 / math.sqrt(12), rel=0.03)
    torch.testing.assert_close(dy, torch.full_like(dy, 0.1))
    assert p["source_center_x"].std() > 0.1  # the source follows the lens around the field
