"""The lens-model spec: composed priors render what lenstronomy renders for the same kwargs_model,
multi-component light matches lenstronomy's LightModel, old priors read as the equivalent spec, and
bad specs are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lenscnn.errors import UserError
from lenscnn.params import parameter
from lenscnn.sim import func
from lenscnn.sim.lens_model import LensModel
from lenscnn.sim.prior import Prior
from lenscnn.sim.prior_config import lens_model_of
from tests.helpers import load_conf, make_simulator

SIZE, PIXEL_SCALE = 48, 0.08
UNIFORM = "uniform"


def _u(low: float, high: float) -> dict:
    return {"dist": UNIFORM, "low": low, "high": high}


def composed_prior() -> dict:
    """EPL + shear + m=3 and m=4 multipoles, a Sersic source, a bulge + envelope lens light on the lens
    centre, and a Sersic neighbour anywhere in the field."""
    prior = load_conf("prior", "epl")
    prior.pop("defaults")
    base = load_conf("prior", "realistic")
    prior = {**base, **prior, "lens": {**base["lens"], **prior["lens"]}}
    prior["source"] = {k: v for k, v in prior["source"].items() if k != "galaxies"}
    prior["multipole_3"] = {"profile": "MULTIPOLE", "m": 3, "a_m": _u(0.0, 0.03), "phi_m": _u(-np.pi, np.pi)}
    prior["multipole_4"] = {"profile": "MULTIPOLE", "m": 4, "a_m": _u(0.0, 0.03), "phi_m": _u(-np.pi, np.pi)}
    prior["lens_light_2"] = {
        "R_sersic": _u(1.5, 3.0),
        "n_sersic": 1.0,
        "ellipticity": {"q": _u(0.6, 1.0), "phi": "mass"},
        "flux_ratio": _u(1.0, 5.0),
    }
    prior["neighbour"] = {
        "profile": "SERSIC_ELLIPSE",
        "amp": _u(20.0, 80.0),
        "R_sersic": _u(0.1, 0.3),
        "n_sersic": _u(1.0, 4.0),
        "ellipticity": {"q": _u(0.5, 1.0), "phi": _u(0.0, np.pi)},
        "center_x": _u(-1.6, 1.6),
        "center_y": _u(-1.6, 1.6),
    }
    return prior


def lenstronomy_kwargs(model: LensModel, params: dict[str, float]) -> dict[str, list[dict]]:
    """lenstronomy's kwargs of every role, from the spec: keyword values (tied ones included), options, fixed."""
    out = {}
    for role in ("lens", "source", "lens_light"):
        out[role] = [
            {**c.kwargs(params), **c.options, **c.registered.fixed} for c in model.of_role(role)
        ]  # fmt: skip
    return out


def lenstronomy_render(model: LensModel, params: dict[str, float], kernel: np.ndarray) -> np.ndarray:
    from lenstronomy.Data.pixel_grid import PixelGrid
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel as LenstronomyLens
    from lenstronomy.LightModel.light_model import LightModel

    origin = -(SIZE - 1) / 2 * PIXEL_SCALE
    grid = PixelGrid(SIZE, SIZE, np.diag([PIXEL_SCALE] * 2), origin, origin)
    lists = model.kwargs_model()
    image_model = ImageModel(
        grid,
        PSF(psf_type="PIXEL", kernel_point_source=kernel),
        LenstronomyLens(lists["lens_model_list"]),
        LightModel(lists["source_light_model_list"]),
        LightModel(lists["lens_light_model_list"]),
        kwargs_numerics={"supersampling_factor": 2, "supersampling_convolution": False},
    )
    kwargs = lenstronomy_kwargs(model, params)
    return image_model.image(kwargs["lens"], kwargs["source"], kwargs["lens_light"])


def test_composed_lens_model_renders_what_lenstronomy_renders():
    """A prior composing EPL, SHEAR, two MULTIPOLEs, a source, two lens lights and a neighbour: its
    kwargs_model is lenstronomy's, and the Simulator's float64 image of 8 draws equals lenstronomy's
    ImageModel image of the same kwargs to 1e-8 of the peak."""
    prior = composed_prior()
    instrument = {"image_size": SIZE, "pixel_scale": PIXEL_SCALE, "supersampling": 2}
    instrument["psf"] = {"type": "gaussian", "fwhm": 0.16}
    sim = make_simulator(instrument, prior, dtype="float64")
    model = sim.lens_model
    assert model.kwargs_model() == {
        "lens_model_list": ["EPL", "SHEAR", "MULTIPOLE", "MULTIPOLE"],
        "source_light_model_list": ["SERSIC_ELLIPSE"],
        "lens_light_model_list": ["SERSIC_ELLIPSE", "SERSIC_ELLIPSE", "SERSIC_ELLIPSE"],
    }
    # ties: the lens lights and multipoles sit on the lens centre, multipoles are normalised at theta_E
    assert model.component("lens_light_2").parameters["center_x"] == "center_x"
    assert model.component("multipole_4").parameters["r_E"] == "theta_E"
    assert model.component("neighbour").parameters["center_x"] == "neighbour_center_x"
    images, params = sim.sample(8, torch.Generator().manual_seed(3), noise=False)
    k1 = func.gaussian_kernel_1d(0.16, PIXEL_SCALE, dtype=torch.float64).numpy()
    for i in range(8):
        p = {k: float(v[i]) for k, v in params.items()}
        reference = lenstronomy_render(model, p, np.outer(k1, k1))
        ours = images[i, 0].numpy()
        assert np.abs(ours - reference).max() <= 1e-8 * reference.max(), i


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 2e-5)], ids=["f64", "f32"])
def test_two_sersic_lens_light_matches_lenstronomy_light_model(dtype, tolerance):
    """Bulge + envelope (two SERSIC_ELLIPSE on one centre), 1000 random parameter sets on a 24 x 24 grid
    over the prior ranges (n 0.5-8, R 0.05-4", q 0.2-1 including round): largest relative error of the
    summed surface brightness against lenstronomy's LightModel."""
    from lenstronomy.LightModel.light_model import LightModel

    prior = {
        "lens": load_conf("prior", "quickstart")["lens"],
        "source": load_conf("prior", "quickstart")["source"],
        "lens_light": {
            "amp": {"dist": "log_uniform", "low": 1.0, "high": 300.0},
            "R_sersic": _u(0.05, 1.0),
            "n_sersic": _u(2.0, 8.0),
            "ellipticity": {"q": _u(0.2, 1.0), "phi": _u(0.0, np.pi)},
        },
        "lens_light_2": {
            "amp": {"dist": "log_uniform", "low": 1.0, "high": 30.0},
            "R_sersic": _u(1.0, 4.0),
            "n_sersic": _u(0.5, 2.0),
            "ellipticity": {"q": _u(0.2, 1.0), "phi": _u(0.0, np.pi)},
        },
    }
    model = Prior(prior).lens_model
    n = 1000
    params = Prior(prior).sample(n, torch.Generator().manual_seed(0), dtype=torch.float64)
    params["lens_light_e1"][:10] = 0.0  # exactly round
    params["lens_light_e2"][:10] = 0.0
    x, y = func.pixel_grid(24, 24, 0.1, dtype=dtype)
    batch = {k: v.to(dtype)[:, None, None] for k, v in params.items()}
    ours = sum(c.evaluate(x, y, batch) for c in model.of_role("lens_light")).double().numpy()
    light = LightModel(["SERSIC_ELLIPSE", "SERSIC_ELLIPSE"])
    xs, ys = x.double().numpy().ravel(), y.double().numpy().ravel()
    worst = 0.0
    for i in range(n):
        kwargs = lenstronomy_kwargs(model, {k: float(v[i]) for k, v in params.items()})["lens_light"]
        reference = light.surface_brightness(xs, ys, kwargs).reshape(24, 24)
        worst = max(worst, float(np.max(np.abs(ours[i] - reference) / reference)))
    print(f"two-Sersic lens light, {dtype}: largest relative error {worst:.2e} over {n} parameter sets")
    assert worst <= tolerance


def test_library_galaxy_neighbours_shine_unlensed_at_their_position():
    """A neighbour that is a library galaxy (unlensed, anywhere in the field): its light is centred on its
    drawn position, and its total flux is the Sersic envelope's."""
    prior = load_conf("prior", "quickstart")
    prior["neighbour"] = {
        "profile": "SERSIC_ELLIPSE",
        "amp": 100.0,
        "R_sersic": 0.15,
        "n_sersic": 1.0,
        "ellipticity": {"e1": 0.0, "e2": 0.0},
        "center_x": _u(-1.2, 1.2),
        "center_y": _u(-1.2, 1.2),
        "galaxies": {"library": "hudf", "fraction": 1.0},
    }
    instrument = {"image_size": 64, "pixel_scale": 0.08, "psf": {"type": "none"}}
    with_neighbour = make_simulator(instrument, prior, dtype="float64")
    without = make_simulator(instrument, "quickstart", dtype="float64")
    assert with_neighbour.lens_model.kwargs_model()["lens_light_model_list"] == ["SERSIC_ELLIPSE"]
    _, params = with_neighbour.sample(6, torch.Generator().manual_seed(5), noise=False)
    assert set(with_neighbour.lens_model.component("neighbour").galaxy_names) <= set(params)
    neighbour = (with_neighbour.render(params, noise=False) - without.render(params, noise=False))[:, 0]
    x, y = func.pixel_grid(64, 64, 0.08, dtype=torch.float64)
    flux = neighbour.sum((-2, -1))
    expected = func.sersic_total_flux(*(torch.tensor(v, dtype=torch.float64) for v in (100.0, 0.15, 1.0)))
    assert torch.allclose(flux, expected.expand_as(flux), rtol=0.02)  # a galaxy near the edge loses a little
    centroid_x = (neighbour * x).sum((-2, -1)) / flux
    centroid_y = (neighbour * y).sum((-2, -1)) / flux
    assert torch.allclose(centroid_x, params["neighbour_center_x"], atol=0.08)
    assert torch.allclose(centroid_y, params["neighbour_center_y"], atol=0.08)


@pytest.mark.parametrize(
    "name, kwargs_model",
    [
        ("quickstart", (["SIE"], ["SERSIC_ELLIPSE"], [])),
        ("realistic", (["SIE", "SHEAR"], ["SERSIC_ELLIPSE"], ["SERSIC_ELLIPSE"])),
        ("galaxy_galaxy", (["SIE", "SHEAR"], ["SERSIC_ELLIPSE"], ["SERSIC_ELLIPSE"])),
        ("ensai", (["SIE"], ["SERSIC_ELLIPSE"], [])),
    ],
)
def test_priors_written_before_lens_models_read_as_the_equivalent_spec(name, kwargs_model):
    """Today's prior configs (and so the shipped ensemble's checkpoints) are read as SIE (+ SHEAR) + Sersic
    source (+ Sersic lens light on the lens centre), with the names they always had; the record round-trips."""
    model = lens_model_of(load_conf("prior", name))
    lists = model.kwargs_model()
    assert (lists["lens_model_list"], lists["source_light_model_list"], lists["lens_light_model_list"]) == kwargs_model
    assert dict(model.component("lens").parameters) == {k: k for k in ("theta_E", "e1", "e2", "center_x", "center_y")}
    if kwargs_model[2]:
        assert model.component("lens_light").tied == {"center_x": "center_x", "center_y": "center_y"}
    assert LensModel.from_dict(model.to_dict()) == model


def test_component_names_are_predictable_and_in_the_vocabulary():
    model = Prior(composed_prior()).lens_model
    names = model.names
    assert names[:6] == ["theta_E", "gamma", "e1", "e2", "center_x", "center_y"]
    assert {"gamma1", "gamma2", "multipole_4_a_m", "multipole_3_phi_m", "lens_light_2_R_sersic"} <= set(names)
    assert {"neighbour_amp", "neighbour_center_x"} <= set(names)
    assert parameter("lens_light_2_R_sersic").unit == "arcsec"
    assert parameter("multipole_4_phi_m").unit == "rad"
    assert parameter("neighbour_center_x").unit == "arcsec"
    assert parameter("gamma").profile == "EPL"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"lens": {"profile": "EPLL"}}, "unknown profile 'EPLL' (did you mean EPL?)"),
        ({"multipole": {"profile": "MULTIPOLE", "a_m": 0.01, "phi_m": 0.0}}, "MULTIPOLE needs m (int)"),
        ({"multipole": {"profile": "MULTIPOLE", "m": 2.5, "a_m": 0.01, "phi_m": 0.0}}, "m must be a positive int"),
        ({"lens": {"profile": "EPL"}}, "prior 'lens': missing ['gamma']"),
        ({"lens": {"profile": "EPL", "gamma": _u(0.5, 2.0)}}, "prior 'lens.gamma': values must lie in [1.2, 2.8]"),
        ({"blob": {"amp": 1.0}}, "prior 'blob': give the component's profile"),
        ({"sub": {"profile": "SIE", "lensed": True}}, "lensed applies to light profiles"),
        ({"lens_light": {"R_sersic": 1.0, "n_sersic": 4.0, "ellipticity": {"e1": 0.0, "e2": 0.0}}}, "missing ['amp']"),
    ],
)
def test_bad_specs_are_one_line_errors(change, message):
    prior = load_conf("prior", "quickstart")
    for section, spec in change.items():
        prior[section] = {**prior.get(section, {}), **spec} if section == "lens" else spec
    with pytest.raises(UserError) as exc_info:
        Prior(prior)
    assert message in str(exc_info.value) and "\n" not in str(exc_info.value)


def test_library_galaxies_given_to_a_prior_without_them_are_refused():
    """Rendering follows the prior's lens model, but galaxy draws for a light the prior draws no galaxies for
    would silently become a Sersic: refused with one line."""
    sim = make_simulator({"image_size": 16, "pixel_scale": 0.08, "psf": {"type": "none"}}, "quickstart")
    _, params = sim.sample(2, torch.Generator().manual_seed(0), noise=False)
    params["source_galaxy"] = torch.zeros(2)
    with pytest.raises(UserError, match=r"library galaxies given for \['source'\]") as exc_info:
        sim.render(params, noise=False)
    assert "\n" not in str(exc_info.value)
