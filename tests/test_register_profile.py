"""Adding a profile is a kernel and a registry entry: a toy singular isothermal sphere (lenstronomy's
``SIS``) registered from a scratch module renders what lenstronomy renders, is written into
lenscnn-predict's lenstronomy JSON and has its critical curve drawn, and no lenscnn module names it."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lenscnn
from lenscnn import params as vocabulary
from lenscnn.sim.profiles import PROFILES
from tests.helpers import load_conf, make_simulator

SCRATCH = '''
"""A toy profile: lenstronomy's SIS, registered from outside lenscnn."""
import torch

from lenscnn.params import ARCSEC
from lenscnn.sim.profiles import Keyword, Profile, register


def sis_deflection(x, y, theta_E, center_x=0.0, center_y=0.0):
    """Deflection [arcsec] of a singular isothermal sphere: theta_E times the unit vector from the centre."""
    dx, dy = x - center_x, y - center_y
    radius = torch.sqrt(dx * dx + dy * dy).clamp(min=1e-12)
    return theta_E * dx / radius, theta_E * dy / radius


register(
    Profile(
        "SIS",
        "mass",
        (
            Keyword("theta_E", ARCSEC, r"$\\theta_E$", 0.0, open_low=True),
            Keyword("center_x", ARCSEC, "$x$", tie="center_x"),
            Keyword("center_y", ARCSEC, "$y$", tie="center_y"),
        ),
        sis_deflection,
    )
)
'''

SIZE, PIXEL_SCALE = 48, 0.08


@pytest.fixture
def toy_sis(tmp_path, monkeypatch):
    """The scratch module imported (registering SIS); the registry restored afterwards."""
    (tmp_path / "toy_sis.py").write_text(SCRATCH)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("toy_sis")
    yield module
    PROFILES.pop("SIS")
    vocabulary._KEYWORDS.pop("SIS")
    sys.modules.pop("toy_sis")


def sis_prior() -> dict:
    prior = load_conf("prior", "quickstart")
    prior["lens"] = {"profile": "SIS", **{k: prior["lens"][k] for k in ("theta_E", "center_x", "center_y")}}
    return prior


def test_no_lenscnn_module_names_the_toy_profile():
    assert "SIS" not in PROFILES
    sources = [p.read_text() for p in Path(lenscnn.__file__).parent.rglob("*.py")]
    assert not any("sis_deflection" in text or '"SIS"' in text for text in sources)


def test_toy_profile_renders_predicts_into_lenstronomy_json_and_plots(toy_sis, tmp_path):
    from lenstronomy.Data.pixel_grid import PixelGrid
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    from lenscnn.data.normalization import InputNormalizer, TargetScaler
    from lenscnn.evaluation.cutouts import CutoutResult
    from lenscnn.modelling.kwargs import with_arrays
    from lenscnn.modelling.lenstronomy_files import LenstronomyWriter
    from lenscnn.models.ensemble import Ensemble
    from lenscnn.models.regressor import LensRegressor
    from lenscnn.plots import critical_curve_figure

    # render: the Simulator loops over the spec, so SIS renders as lenstronomy's SIS
    instrument = {"image_size": SIZE, "pixel_scale": PIXEL_SCALE, "psf": {"type": "none"}}
    sim = make_simulator(instrument, sis_prior(), dtype="float64")
    assert sim.lens_model.kwargs_model()["lens_model_list"] == ["SIS"]
    images, params = sim.sample(3, torch.Generator().manual_seed(0), noise=False)
    assert set(params) >= {"theta_E", "center_x", "center_y"} and "e1" not in params
    assert vocabulary.parameter("theta_E").unit == "arcsec"
    origin = -(SIZE - 1) / 2 * PIXEL_SCALE
    grid = PixelGrid(SIZE, SIZE, np.diag([PIXEL_SCALE] * 2), origin, origin)
    reference_model = ImageModel(grid, PSF(psf_type="NONE"), LensModel(["SIS"]), LightModel(["SERSIC_ELLIPSE"]))
    for i in range(3):
        p = {k: float(v[i]) for k, v in params.items()}
        kwargs_lens = [{k: p[k] for k in ("theta_E", "center_x", "center_y")}]
        source = ("amp", "R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y")
        reference = reference_model.image(kwargs_lens, [{k: p[f"source_{k}"] for k in source}])
        assert np.abs(images[i, 0].numpy() - reference).max() <= 1e-8 * reference.max()

    # predict: a (untrained) model of this prior writes lenstronomy JSON whose kwargs_model says SIS
    targets = ["theta_E", "center_x", "center_y"]
    model = LensRegressor(
        net={"name": "fast"},
        targets=TargetScaler.from_params(params, targets).to_dict() | {"std": [0.4, 0.1, 0.1]},
        input_normalization=InputNormalizer(0.1, 0.0, 1.0).to_dict(),
        image_size=(SIZE, SIZE),
        pixel_scale=PIXEL_SCALE,
        simulator={"instrument": instrument, "prior": sis_prior()},
    )
    ensemble = Ensemble([model])
    prediction = ensemble.predict(images.float())
    mean, sigma = prediction.mean, prediction.sigma
    with LenstronomyWriter(tmp_path / "lenstronomy", ensemble) as writer:
        writer.write(CutoutResult("toy.fits", mean=mean[0].numpy(), sigma=sigma[0].numpy()))
    setup = json.loads((tmp_path / "lenstronomy" / "toy.json").read_text())
    assert setup["kwargs_model"]["lens_model_list"] == ["SIS"]
    assert setup["kwargs_lens"][0] == pytest.approx(dict(zip(targets, mean[0].tolist(), strict=True)))
    setup = with_arrays(setup)
    ImageModel(
        PixelGrid(**setup["kwargs_pixel_grid"]),
        PSF(**setup["kwargs_psf"]),
        LensModel(setup["kwargs_model"]["lens_model_list"]),
        LightModel(setup["kwargs_model"]["source_light_model_list"]),
    ).image(setup["kwargs_lens"], setup["kwargs_source"])

    # plot: the critical curve of an SIS is the circle of radius theta_E about its centre
    truth = {k: float(params[k][0]) for k in targets}
    fig = critical_curve_figure(images[0, 0].numpy(), PIXEL_SCALE, truth, sim.lens_model, "toy SIS")
    vertices = np.concatenate([path.vertices for path in fig.axes[0].collections[0].get_paths()])
    radius = np.hypot(vertices[:, 0] - truth["center_x"], vertices[:, 1] - truth["center_y"])
    assert np.allclose(radius, truth["theta_E"], atol=0.02)
    fig.savefig(tmp_path / "toy.png")
    assert (tmp_path / "toy.png").read_bytes().startswith(b"\x89PNG")
