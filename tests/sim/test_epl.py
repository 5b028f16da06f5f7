"""EPL deflection against lenstronomy's ``EPL`` profile (Tessore & Metcalf 2015, evaluated with scipy's hyp2f1).

Run with ``pytest -s`` to see the largest relative errors measured.
"""

import numpy as np
import pytest
import torch
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.Util.param_util import phi_q2_ellipticity

from lenscnn.sim import func
from lenscnn.sim.func.epl import EPL_TERMS
from tests.helpers import assert_matches_central_differences

EPL_PARAMS = ("theta_E", "gamma", "e1", "e2", "center_x", "center_y")

#: Largest relative deflection error allowed against lenstronomy in float64: the series truncation
#: (< 1e-10 for q >= 0.3 with the default number of terms) and rounding leave ~3e-12 (measured).
FLOAT64_TOLERANCE = 1e-6
#: The same in float32, with the reference given the same float32-rounded inputs: the rounding of the
#: series and of R^(-t) leaves ~7e-7 (measured; as large far from the centre as next to it).
FLOAT32_TOLERANCE = 1e-5
#: Below this deflection [arcsec] the error is measured in absolute terms (only the centre pixel, where both are 0).
ALPHA_FLOOR = 1e-12

N_RANDOM = 1200


def _parameter_sets(n_random: int = N_RANDOM, seed: int = 3) -> dict[str, np.ndarray]:
    """Edge cases (every combination of gamma in {1.5, 2, 2.5} and q in {0.3, 1 - 1e-9, 1}) plus random sets.

    theta_E in [0.3, 3] arcsec, gamma in [1.5, 2.5] (a fifth of the random sets exactly at an edge), q in
    [0.3, 1] (a tenth exactly 1), uniform position angles, centres within +-0.3 arcsec. All values are
    rounded to float32 so that both precisions are compared with the same lenstronomy reference.
    """
    rng = np.random.default_rng(seed)
    edge_gamma, edge_q = np.meshgrid([1.5, 2.0, 2.5], [0.3, 1.0 - 1e-9, 1.0])
    gamma = rng.uniform(1.5, 2.5, n_random)
    gamma[::10], gamma[1::10] = 1.5, 2.5
    q = rng.uniform(0.3, 1.0, n_random)
    q[2::10] = 1.0
    gamma, q = np.concatenate([edge_gamma.ravel(), gamma]), np.concatenate([edge_q.ravel(), q])
    n = len(q)
    e1, e2 = phi_q2_ellipticity(rng.uniform(0.0, np.pi, n), q)
    sets = {
        "theta_E": rng.uniform(0.3, 3.0, n),
        "gamma": gamma,
        "e1": e1,
        "e2": e2,
        "center_x": rng.uniform(-0.3, 0.3, n),
        "center_y": rng.uniform(-0.3, 0.3, n),
    }
    return {k: v.astype(np.float32).astype(np.float64) for k, v in sets.items()}


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """The 64 x 64 pixel grid at 0.08 arcsec/pixel, float32 values (exact in float64 too)."""
    x, y = func.pixel_grid(64, 64, 0.08, dtype=torch.float32)
    return x.double().numpy(), y.double().numpy()


def _reference(sets: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lenstronomy's deflection for every parameter set, ``(B, H, W)`` each."""
    model = LensModel(["EPL"])
    alphas = [model.alpha(x, y, [{k: float(v[i]) for k, v in sets.items()}]) for i in range(len(sets["gamma"]))]
    return np.stack([a[0] for a in alphas]), np.stack([a[1] for a in alphas])


def _ours(
    sets: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, dtype: torch.dtype, terms: int = EPL_TERMS
) -> tuple[np.ndarray, np.ndarray]:
    """Our deflection for all parameter sets at once (parameters ``(B, 1, 1)``), in chunks of 64 lenses."""
    xt, yt = torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)
    params = {k: torch.tensor(v, dtype=dtype).view(-1, 1, 1) for k, v in sets.items()}
    chunks = [
        func.epl_deflection(xt, yt, *(params[k][i : i + 64] for k in EPL_PARAMS), terms=terms)
        for i in range(0, len(sets["gamma"]), 64)
    ]
    return tuple(torch.cat(parts).double().numpy() for parts in zip(*chunks, strict=True))


def _relative_error(ours: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``|alpha - alpha_ref| / |alpha_ref|`` per pixel (absolute below :data:`ALPHA_FLOOR`)."""
    return np.hypot(ours[0] - ref[0], ours[1] - ref[1]) / np.maximum(np.hypot(*ref), ALPHA_FLOOR)


@pytest.fixture(scope="module")
def reference():
    sets = _parameter_sets()
    x, y = _grid()
    return sets, x, y, _reference(sets, x, y)


@pytest.mark.parametrize(
    ("dtype", "tolerance"),
    [(torch.float64, FLOAT64_TOLERANCE), (torch.float32, FLOAT32_TOLERANCE)],
    ids=["float64", "float32"],
)
def test_epl_deflection_matches_lenstronomy(reference, dtype, tolerance):
    sets, x, y, ref = reference
    ours = _ours(sets, x, y, dtype)
    assert np.all(np.isfinite(ours))
    error = _relative_error(ours, ref)
    worst = np.unravel_index(np.argmax(error), error.shape)
    at = {k: float(v[worst[0]]) for k, v in sets.items()}
    print(f"\nEPL {dtype}: {len(sets['gamma'])} lenses, max relative deflection error {error.max():.3g} at {at}")
    assert error.max() <= tolerance


@pytest.mark.parametrize("q_min", [0.3, 0.6, 0.9])
@pytest.mark.parametrize("tolerance", [1e-4, 1e-8])
def test_epl_terms_bound_the_truncation_error(q_min, tolerance):
    """With ``epl_terms(q_min, tolerance)`` terms the relative error at ``q = q_min`` stays below ``tolerance``."""
    e1, e2 = phi_q2_ellipticity(np.array([0.0, 0.4, 1.0, 1.5]), q_min)
    sets = {
        "theta_E": np.full(8, 1.3),
        "gamma": np.repeat([1.5, 2.5], 4),  # the largest error is at the steepest slope
        "e1": np.tile(e1, 2),
        "e2": np.tile(e2, 2),
        "center_x": np.full(8, 0.05),
        "center_y": np.full(8, -0.1),
    }
    x, y = _grid()
    error = _relative_error(
        _ours(sets, x, y, torch.float64, terms=func.epl_terms(q_min, tolerance)), _reference(sets, x, y)
    )
    assert error.max() <= tolerance


def test_epl_terms():
    assert func.epl_terms(1.0) == 1
    assert func.epl_terms(0.3) == EPL_TERMS == 40
    assert func.epl_terms(0.3, 1e-7) < EPL_TERMS < func.epl_terms(0.2)
    for bad in ({"q_min": 0.0}, {"q_min": 1.5}, {"q_min": 0.5, "tolerance": 0.0}):
        with pytest.raises(ValueError):
            func.epl_terms(**bad)
    with pytest.raises(ValueError):
        func.epl_deflection(*_tensors(0.0, 0.0, 1.0, 2.0, 0.1, 0.0), terms=0)


def _tensors(*values: float, dtype: torch.dtype = torch.float64, requires_grad: bool = False) -> list[torch.Tensor]:
    return [torch.tensor(v, dtype=dtype, requires_grad=requires_grad) for v in values]


def test_isothermal_epl_is_the_sie():
    """gamma = 2 is the SIE (up to its 1e-10 arcsec core: 1e-8 of the deflection 0.01 arcsec from the centre)."""
    sets = {k: v[:64] for k, v in _parameter_sets(n_random=64, seed=5).items()}
    sets["gamma"][:] = 2.0
    x, y = _grid()
    xt, yt = torch.tensor(x), torch.tensor(y)
    p = {k: torch.tensor(v).view(-1, 1, 1) for k, v in sets.items()}
    sie = func.sie_deflection(xt, yt, p["theta_E"], p["e1"], p["e2"], p["center_x"], p["center_y"])
    epl = func.epl_deflection(xt, yt, *(p[k] for k in EPL_PARAMS))
    error = _relative_error(tuple(a.numpy() for a in epl), tuple(a.numpy() for a in sie))
    assert error.max() <= 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("gamma", [1.5, 2.0, 2.5])
def test_gradient_finite_for_a_round_lens_and_at_the_centre(dtype, gamma):
    """q = 1 exactly (e1 = e2 = 0) with the lens centre on a pixel: the deflection there is 0, as lenstronomy's,
    and the gradients with respect to every parameter are finite everywhere."""
    x, y = func.pixel_grid(64, 64, 0.08, dtype=dtype)
    params = _tensors(1.2, gamma, 0.0, 0.0, float(x[0, 30]), float(y[37, 0]), dtype=dtype, requires_grad=True)
    ax, ay = func.epl_deflection(x, y, *params)
    assert torch.isfinite(ax).all() and torch.isfinite(ay).all()
    assert ax[37, 30] == 0 and ay[37, 30] == 0
    grads = torch.autograd.grad((ax + 2 * ay).sum(), params)
    for name, g in zip(EPL_PARAMS, grads, strict=True):
        assert torch.isfinite(g), f"d alpha / d {name} = {g.item()}"


@pytest.mark.parametrize("q", [0.35, 0.8, 0.99999])
def test_gradient_matches_lenstronomy_finite_differences(q, rng):
    """Autograd derivatives with respect to every EPL parameter equal lenstronomy's central differences."""
    e1, e2 = phi_q2_ellipticity(1.1, q)
    values = {"theta_E": 1.2, "gamma": 2.2, "e1": e1, "e2": e2, "center_x": 0.1, "center_y": -0.05}
    x, y = rng.uniform(-2.5, 2.5, (2, 300))
    weights_x, weights_y = rng.normal(size=(2, 300))

    def reference_objective(v: dict) -> float:
        ref_x, ref_y = LensModel(["EPL"]).alpha(x, y, [v])
        return float(np.sum(weights_x * ref_x + weights_y * ref_y))

    params = _tensors(*values.values(), requires_grad=True)
    ax, ay = func.epl_deflection(torch.tensor(x), torch.tensor(y), *params)
    objective = (torch.tensor(weights_x) * ax + torch.tensor(weights_y) * ay).sum()
    grads = dict(zip(values, torch.autograd.grad(objective, params), strict=True))
    assert_matches_central_differences(grads, values, reference_objective, rel=1e-5, abs=1e-5)
