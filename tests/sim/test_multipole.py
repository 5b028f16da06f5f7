"""Multipole deflection against lenstronomy's ``MULTIPOLE`` profile (circular multipoles, Xu et al. 2013).

Run with ``pytest -s`` to see the largest relative errors measured.
"""

import numpy as np
import pytest
import torch
from lenstronomy.LensModel.lens_model import LensModel

from lenscnn.sim import func
from tests.helpers import assert_matches_central_differences

MULTIPOLE_PARAMS = ("a_m", "phi_m", "center_x", "center_y", "r_E")

#: Largest relative deflection error allowed against lenstronomy (measured: ~1e-14 in float64; ~2e-6 in
#: float32, with the reference given the same float32-rounded inputs).
TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-5}
#: The same for m = 1 in float32 (measured: ~4e-5): its deflection passes through 0 where the log(r / r_E)
#: term cancels the other, and the rounding of log r is relative to the larger of the two.
M1_FLOAT32_TOLERANCE = 1e-4
#: Below this deflection [arcsec] the error is measured in absolute terms (a_m = 0, where both are 0).
ALPHA_FLOOR = 1e-12


def _parameter_sets(n: int, seed: int) -> dict[str, np.ndarray]:
    """a_m in [0, 0.05] arcsec (the first set exactly 0, the second 0.05), phi_m in [-pi, pi], centres within
    +-0.3 arcsec, r_E in [0.3, 3] arcsec; rounded to float32 so that both precisions share one reference."""
    rng = np.random.default_rng(seed)
    a_m = rng.uniform(0.0, 0.05, n)
    a_m[:2] = 0.0, 0.05
    sets = {
        "a_m": a_m,
        "phi_m": rng.uniform(-np.pi, np.pi, n),
        "center_x": rng.uniform(-0.3, 0.3, n),
        "center_y": rng.uniform(-0.3, 0.3, n),
        "r_E": rng.uniform(0.3, 3.0, n),
    }
    return {k: v.astype(np.float32).astype(np.float64) for k, v in sets.items()}


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """The 64 x 64 pixel grid at 0.08 arcsec/pixel, float32 values (exact in float64 too)."""
    x, y = func.pixel_grid(64, 64, 0.08, dtype=torch.float32)
    return x.double().numpy(), y.double().numpy()


def _reference(m: int, sets: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    model = LensModel(["MULTIPOLE"])
    alphas = [
        model.alpha(x, y, [{"m": m, **{k: float(v[i]) for k, v in sets.items()}}]) for i in range(len(sets["a_m"]))
    ]
    return np.stack([a[0] for a in alphas]), np.stack([a[1] for a in alphas])


def _ours(
    m: int, sets: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, dtype: torch.dtype
) -> tuple[np.ndarray, np.ndarray]:
    params = (torch.tensor(sets[k], dtype=dtype).view(-1, 1, 1) for k in MULTIPOLE_PARAMS)
    a_m, phi_m, center_x, center_y, r_E = params
    alpha = func.multipole_deflection(
        torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype), m, a_m, phi_m, center_x, center_y, r_E
    )
    return alpha[0].double().numpy(), alpha[1].double().numpy()


def _relative_error(ours: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return np.hypot(ours[0] - ref[0], ours[1] - ref[1]) / np.maximum(np.hypot(*ref), ALPHA_FLOOR)


@pytest.fixture(scope="module")
def reference():
    """500 parameter sets for each of m = 3 and m = 4, 100 for m = 1 and m = 2, and lenstronomy's deflections."""
    x, y = _grid()
    cases = {m: _parameter_sets(n, seed=m) for m, n in ((1, 100), (2, 100), (3, 500), (4, 500))}
    return x, y, {m: (sets, _reference(m, sets, x, y)) for m, sets in cases.items()}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_multipole_deflection_matches_lenstronomy(reference, m, dtype):
    x, y, cases = reference
    sets, ref = cases[m]
    ours = _ours(m, sets, x, y, dtype)
    assert np.all(np.isfinite(ours))
    error = _relative_error(ours, ref)
    print(f"\nMULTIPOLE m={m} {dtype}: {len(sets['a_m'])} sets, max relative deflection error {error.max():.3g}")
    assert error.max() <= (M1_FLOAT32_TOLERANCE if (m, dtype) == (1, torch.float32) else TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("m", [1, 3, 4])
def test_finite_with_finite_gradient_at_the_centre(m, dtype):
    """On the centre the polar angle is 0, as lenstronomy's; the gradients are finite there and elsewhere."""
    x, y = func.pixel_grid(9, 9, 0.1, dtype=dtype)  # a pixel on the centre
    values = {"a_m": 0.03, "phi_m": 0.7, "center_x": 0.0, "center_y": 0.0, "r_E": 1.2}
    params = [torch.tensor(v, dtype=dtype, requires_grad=True) for v in values.values()]
    ax, ay = func.multipole_deflection(x, y, m, *params)
    ref_x, ref_y = LensModel(["MULTIPOLE"]).alpha(0.0, 0.0, [{"m": m, **values}])
    assert torch.isfinite(ax).all() and torch.isfinite(ay).all()
    assert ax[4, 4].item() == pytest.approx(ref_x, abs=1e-6) and ay[4, 4].item() == pytest.approx(ref_y, abs=1e-6)
    grads = torch.autograd.grad((ax + 2 * ay).sum(), params, allow_unused=m >= 2)  # r_E: m = 1 only
    for name, g in zip(MULTIPOLE_PARAMS, grads, strict=True):
        assert g is None or torch.isfinite(g), f"d alpha / d {name} = {g.item()}"


def test_gradient_matches_lenstronomy_finite_differences(rng):
    """Autograd derivatives with respect to a_m, phi_m and the centre equal lenstronomy's central differences."""
    values = {"a_m": 0.03, "phi_m": 0.7, "center_x": 0.1, "center_y": -0.05}
    x, y = rng.uniform(-2.5, 2.5, (2, 300))
    weights_x, weights_y = rng.normal(size=(2, 300))
    for m in (3, 4):

        def reference_objective(v: dict, m: int = m) -> float:
            ref_x, ref_y = LensModel(["MULTIPOLE"]).alpha(x, y, [{"m": m, **v}])
            return float(np.sum(weights_x * ref_x + weights_y * ref_y))

        params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values.values()]
        ax, ay = func.multipole_deflection(torch.tensor(x), torch.tensor(y), m, *params)
        objective = (torch.tensor(weights_x) * ax + torch.tensor(weights_y) * ay).sum()
        grads = dict(zip(values, torch.autograd.grad(objective, params), strict=True))
        assert_matches_central_differences(grads, values, reference_objective, rel=1e-5, abs=1e-6)


def test_order_below_one_is_rejected():
    with pytest.raises(ValueError):
        func.multipole_deflection(torch.zeros(2), torch.zeros(2), 0, torch.tensor(0.01), torch.tensor(0.0))
