"""SIE and external-shear deflections against lenstronomy's ``SIE`` and ``SHEAR`` profiles."""

import numpy as np
import pytest
import torch
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.Util.param_util import phi_q2_ellipticity

from lenscnn.sim import func
from tests.helpers import assert_matches_central_differences

LENS_PARAMS = ("theta_E", "e1", "e2", "center_x", "center_y")


def _parameter_sets(n_random: int = 16, seed: int = 7) -> list[dict]:
    """Random SIE + shear parameter sets; the first ones probe round (q -> 1) and very flat (q = 0.1) lenses."""
    rng = np.random.default_rng(seed)
    qs = [1.0, 0.99999, 0.999, 0.1, *rng.uniform(0.1, 1.0, n_random)]
    sets = []
    for q in qs:
        e1, e2 = phi_q2_ellipticity(rng.uniform(0.0, np.pi), q)
        sets.append(
            {
                "theta_E": rng.uniform(0.1, 3.0),
                "e1": float(e1),
                "e2": float(e2),
                "center_x": rng.uniform(-0.5, 0.5),
                "center_y": rng.uniform(-0.5, 0.5),
                "gamma1": rng.uniform(-0.1, 0.1),
                "gamma2": rng.uniform(-0.1, 0.1),
                "q": q,
            }
        )
    return sets


PARAMETER_SETS = _parameter_sets()
IDS = [f"set{i}-q={p['q']:.6g}" for i, p in enumerate(PARAMETER_SETS)]


def _points(p: dict, rng: np.random.Generator, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random positions in a 8 x 8 arcsec field, plus points on and next to the lens centre."""
    x, y = rng.uniform(-4.0, 4.0, (2, n))
    cx, cy = p["center_x"], p["center_y"]
    near = np.array([0.0, 1e-7, -1e-4, 1e-2])
    x = np.concatenate([x, cx + near, cx + 0 * near])
    y = np.concatenate([y, cy + 0 * near, cy - near])
    return x, y


def _ours(p: dict, x: np.ndarray, y: np.ndarray, dtype: torch.dtype, shear: bool = True, sie: bool = True):
    t = {k: torch.tensor(v, dtype=dtype) for k, v in p.items()}
    xt, yt = torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)
    ax, ay = torch.zeros_like(xt), torch.zeros_like(yt)
    if sie:
        sx, sy = func.sie_deflection(xt, yt, t["theta_E"], t["e1"], t["e2"], t["center_x"], t["center_y"])
        ax, ay = ax + sx, ay + sy
    if shear:
        gx, gy = func.shear_deflection(xt, yt, t["gamma1"], t["gamma2"])
        ax, ay = ax + gx, ay + gy
    return ax.double().numpy(), ay.double().numpy()


def _reference(p: dict, x: np.ndarray, y: np.ndarray, shear: bool = True, sie: bool = True):
    models, kwargs = [], []
    if sie:
        models.append("SIE")
        kwargs.append({k: p[k] for k in LENS_PARAMS})
    if shear:
        models.append("SHEAR")
        kwargs.append({"gamma1": p["gamma1"], "gamma2": p["gamma2"]})
    return LensModel(models).alpha(x, y, kwargs)


@pytest.mark.parametrize("p", PARAMETER_SETS, ids=IDS)
def test_sie_plus_shear_deflection_matches_lenstronomy_float64(p):
    x, y = _points(p, np.random.default_rng(11))
    ax, ay = _ours(p, x, y, torch.float64)
    ref_x, ref_y = _reference(p, x, y)
    assert np.all(np.isfinite(ax)) and np.all(np.isfinite(ay))
    # lenstronomy replaces q = 1 by q = 0.99999999 (an error of ~1e-8 arcsec); elsewhere both agree to ~1e-14
    assert np.max(np.abs(ax - ref_x)) <= 1e-6
    assert np.max(np.abs(ay - ref_y)) <= 1e-6


@pytest.mark.parametrize("p", PARAMETER_SETS[:8], ids=IDS[:8])
@pytest.mark.parametrize("component", ["SIE", "SHEAR"])
def test_each_profile_matches_lenstronomy_alone(p, component):
    """A failure of the combined test is traced to one profile."""
    x, y = _points(p, np.random.default_rng(12))
    kinds = {"sie": component == "SIE", "shear": component == "SHEAR"}
    ax, ay = _ours(p, x, y, torch.float64, **kinds)
    ref_x, ref_y = _reference(p, x, y, **kinds)
    assert np.max(np.abs(ax - ref_x)) <= 1e-6
    assert np.max(np.abs(ay - ref_y)) <= 1e-6


@pytest.mark.parametrize("p", PARAMETER_SETS, ids=IDS)
def test_deflection_float32_accuracy(p):
    """The default dtype: within 5e-5 arcsec of lenstronomy (0.1% of the finest pixel, 0.04 arcsec).

    The reference gets the same float32-rounded inputs, so only the arithmetic is compared.
    """
    p = {k: float(np.float32(v)) for k, v in p.items()}
    x, y = (v.astype(np.float32).astype(np.float64) for v in _points(p, np.random.default_rng(13)))
    ax, ay = _ours(p, x, y, torch.float32)
    ref_x, ref_y = _reference(p, x, y)
    assert np.max(np.abs(ax - ref_x)) <= 5e-5
    assert np.max(np.abs(ay - ref_y)) <= 5e-5


def test_shear_about_a_reference_point_matches_lenstronomy(rng):
    x, y = rng.uniform(-3, 3, (2, 500))
    g1, g2, ra_0, dec_0 = 0.07, -0.04, 0.3, -0.2
    ref_x, ref_y = LensModel(["SHEAR"]).alpha(x, y, [{"gamma1": g1, "gamma2": g2, "ra_0": ra_0, "dec_0": dec_0}])
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    ax, ay = func.shear_deflection(t(x), t(y), t(g1), t(g2), t(ra_0), t(dec_0))
    np.testing.assert_allclose(ax.numpy(), ref_x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ay.numpy(), ref_y, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("q", [0.1, 0.5, 0.99999, 1.0])
def test_deflection_and_gradient_finite_at_lens_centre(dtype, q):
    # q = 1 is the exactly round lens (e1 = e2 = 0), where atan2 and |e| are not differentiable
    """At ``(x, y) = (center_x, center_y)`` the deflection is 0 (lenstronomy: 0) and its gradient is finite."""
    e1, e2 = phi_q2_ellipticity(0.6, q)
    values = {"theta_E": 1.3, "e1": e1, "e2": e2, "center_x": 0.17, "center_y": -0.09}
    p = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in values.items()}
    x, y = torch.tensor(0.17, dtype=dtype), torch.tensor(-0.09, dtype=dtype)
    ax, ay = func.sie_deflection(x, y, *(p[k] for k in LENS_PARAMS))
    ref_x, ref_y = LensModel(["SIE"]).alpha(0.17, -0.09, [values])
    assert torch.isfinite(ax) and torch.isfinite(ay)
    assert abs(ax.item() - ref_x) <= 1e-6 and abs(ay.item() - ref_y) <= 1e-6
    grads = torch.autograd.grad(ax + 2 * ay, [p[k] for k in LENS_PARAMS])
    for name, g in zip(LENS_PARAMS, grads, strict=True):
        assert torch.isfinite(g), f"d alpha / d {name} = {g.item()} at the lens centre"


@pytest.mark.parametrize("q", [0.25, 0.8, 0.99999])
def test_deflection_gradient_matches_lenstronomy_finite_differences(q, rng):
    """Autograd derivatives of the deflection w.r.t. every lens parameter equal lenstronomy's central differences."""
    e1, e2 = phi_q2_ellipticity(1.1, q)
    values = {"theta_E": 1.2, "e1": e1, "e2": e2, "center_x": 0.1, "center_y": -0.05, "gamma1": 0.04, "gamma2": -0.03}
    x, y = rng.uniform(-3, 3, (2, 300))
    weights_x, weights_y = rng.normal(size=(2, 300))

    def reference_objective(v: dict) -> float:
        ref_x, ref_y = _reference(v, x, y)
        return float(np.sum(weights_x * ref_x + weights_y * ref_y))

    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in values.items()}
    ax, ay = func.sie_deflection(torch.tensor(x), torch.tensor(y), *(p[k] for k in LENS_PARAMS))
    sx, sy = func.shear_deflection(torch.tensor(x), torch.tensor(y), p["gamma1"], p["gamma2"])
    objective = (torch.tensor(weights_x) * (ax + sx) + torch.tensor(weights_y) * (ay + sy)).sum()
    grads = dict(zip(values, torch.autograd.grad(objective, list(p.values())), strict=True))
    assert_matches_central_differences(grads, values, reference_objective, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_gradient_finite_for_an_exactly_round_lens_everywhere(dtype):
    x, y = torch.meshgrid(torch.linspace(-2, 2, 21, dtype=dtype), torch.linspace(-2, 2, 21, dtype=dtype), indexing="xy")
    values = dict(zip(LENS_PARAMS, (1.1, 0.0, 0.0, 0.1, 0.2), strict=True))
    p = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in values.items()}
    ax, ay = func.sie_deflection(x, y, *(p[k] for k in LENS_PARAMS))
    grads = torch.autograd.grad((ax + 2 * ay).sum(), [p[k] for k in LENS_PARAMS])
    assert all(torch.isfinite(g) for g in grads)
