"""lenstronomy keyword arguments from the network's predictions (plain dicts: no lenstronomy import).

The network measures the SIE mass (and shear when it was trained to); a lens-model fit also
needs the source and lens light, the pixel grid, the PSF and the noise. :func:`lens_model_kwargs`
puts them together in lenstronomy's terms, so that

```python
setup = json.load(open("lens.json"))
for kwargs, key in ((setup["kwargs_pixel_grid"], "transform_pix2angle"), (setup["kwargs_data"], "transform_pix2angle"),
                    (setup["kwargs_psf"], "kernel_point_source")):
    if key in kwargs:
        kwargs[key] = np.array(kwargs[key])  # JSON holds lists; lenstronomy wants arrays
ImageModel(PixelGrid(**setup["kwargs_pixel_grid"]), PSF(**setup["kwargs_psf"]),
           LensModel(setup["kwargs_model"]["lens_model_list"]),
           LightModel(setup["kwargs_model"]["source_light_model_list"]),
           LightModel(setup["kwargs_model"]["lens_light_model_list"]),
           kwargs_numerics=setup["kwargs_numerics"]).image(setup["kwargs_lens"], setup["kwargs_source"],
                                                           setup["kwargs_lens_light"])
```

renders what lenscnn renders for the same parameters (:func:`with_arrays` does that conversion).
Conventions are lenscnn's (which are lenstronomy's, see ``docs/architecture.md``): coordinates
in arcsec from the image centre.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from lenscnn.params import LENS, SERSIC, SHEAR
from lenscnn.sim import Instrument, Prior
from lenscnn.sim.func import gaussian_kernel_1d, pixel_grid, shear_deflection, sie_deflection

#: Hard bounds of the fitted parameters (lenstronomy's ``kwargs_lower`` / ``kwargs_upper``).
LOWER = {"theta_E": 0.05, "e1": -0.5, "e2": -0.5, "gamma1": -0.3, "gamma2": -0.3, "R_sersic": 0.01, "n_sersic": 0.5}
UPPER = {"theta_E": 10.0, "e1": 0.5, "e2": 0.5, "gamma1": 0.3, "gamma2": 0.3, "R_sersic": 10.0, "n_sersic": 8.0}
#: Step size of a shear the network does not predict.
SHEAR_SIGMA = 0.05
#: Samples drawn from the prior to set the source and lens-light starting point and steps.
MOMENT_SAMPLES = 20_000


def psf_kernel(instrument: Instrument) -> np.ndarray | None:
    """The instrument's 2-D PSF kernel as the simulator applies it (``None`` without a PSF)."""
    psf = instrument.psf
    if psf["type"] == "gaussian":
        k = gaussian_kernel_1d(psf["fwhm"], instrument.pixel_scale, psf["truncate"], dtype=torch.float64).numpy()
        return np.outer(k, k)
    return instrument.psf_kernel()


def observation_kwargs(instrument: Instrument, kernel: np.ndarray | None = None) -> dict[str, Any]:
    """Pixel grid, data (without ``image_data``), PSF and numerics of lenstronomy for the instrument:
    ``kwargs_pixel_grid`` (``PixelGrid``), ``kwargs_data`` (``ImageData``), ``kwargs_psf`` (``PSF``,
    ``PIXEL`` with the kernel the simulator uses, or ``kernel``) and ``kwargs_numerics``.
    An infinite exposure time (no shot noise) is written as ``None``."""
    height, width = instrument.image_size
    s = instrument.pixel_scale
    grid = {
        "ra_at_xy_0": -(width - 1) / 2 * s,
        "dec_at_xy_0": -(height - 1) / 2 * s,
        "transform_pix2angle": [[s, 0.0], [0.0, s]],
    }
    kernel = psf_kernel(instrument) if kernel is None else kernel
    exposure = instrument.exposure_time if math.isfinite(instrument.exposure_time) else None
    return {
        "kwargs_pixel_grid": {"nx": width, "ny": height, **grid},
        "kwargs_data": {"background_rms": instrument.background_rms, "exposure_time": exposure, **grid},
        "kwargs_psf": {"psf_type": "NONE"}
        if kernel is None
        else {"psf_type": "PIXEL", "kernel_point_source": np.asarray(kernel, dtype=float).tolist()},
        "kwargs_numerics": {"supersampling_factor": instrument.supersampling, "supersampling_convolution": False},
    }


def light_moments(prior_spec: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of every source and lens-light parameter the prior draws
    (its Sersic envelope for a galaxy-source prior), from a fixed-seed sample."""
    spec = {k: dict(v) for k, v in prior_spec.items() if k != "defaults"}
    spec.get("source", {}).pop("galaxies", None)  # the Sersic parameters, without loading a library
    params = Prior(spec).sample(MOMENT_SAMPLES, torch.Generator().manual_seed(0))
    light = {k: v.double() for k, v in params.items() if k.startswith(("source_", "lens_light_"))}
    return {k: (float(v.mean()), float(v.std())) for k, v in light.items()}


def lens_model_kwargs(
    values: Mapping[str, float],
    sigmas: Mapping[str, float] | None,
    observation: Mapping[str, Any],
    light: Mapping[str, tuple[float, float]],
    *,
    shear: bool = True,
    lens_light: bool = True,
) -> dict[str, Any]:
    """lenstronomy's model, parameters, step sizes and bounds for one lens.

    Args:
        values: the network's means by name (must hold :data:`lenscnn.params.LENS`; shear when predicted).
        sigmas: the network's standard deviations by name (``None``: no uncertainties).
        observation: :func:`observation_kwargs`.
        light: :func:`light_moments`: the source (and lens-light) start and step sizes.
        shear: model an external shear (started at the prediction, else at 0).
        lens_light: model the lens light (a Sersic profile centred on the lens), if ``light`` has it.

    Returns ``kwargs_model``; ``kwargs_lens``/``kwargs_source``/``kwargs_lens_light`` with their
    ``*_sigma``, ``*_lower``, ``*_upper`` (and ``kwargs_lens_fixed``: the shear's origin);
    ``kwargs_constraints`` (the lens light on the lens centre) and the observation keys.
    """
    missing = [n for n in LENS if n not in values]
    if missing:
        raise ValueError(f"predictions lack {missing}")
    sigmas = sigmas or {}
    lens = [{n: float(values[n]) for n in LENS}]
    lens_sigma = [{n: float(sigmas.get(n, 0.0)) for n in LENS}]
    fixed: list[dict[str, float]] = [{}]
    if shear:
        lens.append({n: float(values.get(n, 0.0)) for n in SHEAR} | {"ra_0": 0.0, "dec_0": 0.0})
        lens_sigma.append({n: float(sigmas.get(n, SHEAR_SIGMA)) for n in SHEAR})
        fixed.append({"ra_0": 0.0, "dec_0": 0.0})
    with_light = lens_light and any(k.startswith("lens_light_") for k in light)
    source_names = (*SERSIC, "center_x", "center_y")
    source = [{n: light[f"source_{n}"][0] for n in source_names}]
    source_sigma = [{n: light[f"source_{n}"][1] for n in source_names}]
    lens_light_kwargs, lens_light_sigma = [], []
    if with_light:
        lens_light_kwargs = [
            {n: light[f"lens_light_{n}"][0] for n in SERSIC}
            | {"center_x": lens[0]["center_x"], "center_y": lens[0]["center_y"]}
        ]
        lens_light_sigma = [{n: light[f"lens_light_{n}"][1] for n in SERSIC} | {"center_x": 0.01, "center_y": 0.01}]

    def bounds(kwargs: list[dict[str, float]], table: Mapping[str, float], default: float) -> list[dict[str, float]]:
        return [{k: table.get(k, default) for k in component} for component in kwargs]

    return {
        "kwargs_model": {
            "lens_model_list": ["SIE", "SHEAR"] if shear else ["SIE"],
            "source_light_model_list": ["SERSIC_ELLIPSE"],
            "lens_light_model_list": ["SERSIC_ELLIPSE"] if with_light else [],
        },
        "kwargs_lens": lens,
        "kwargs_lens_sigma": lens_sigma,
        "kwargs_lens_fixed": fixed,
        "kwargs_lens_lower": bounds(lens, {**LOWER, "center_x": -10, "center_y": -10, "ra_0": 0, "dec_0": 0}, -10.0),
        "kwargs_lens_upper": bounds(lens, {**UPPER, "center_x": 10, "center_y": 10, "ra_0": 0, "dec_0": 0}, 10.0),
        "kwargs_source": source,
        "kwargs_source_sigma": source_sigma,
        "kwargs_source_lower": bounds(source, {**LOWER, "amp": 0.0}, -10.0),
        "kwargs_source_upper": bounds(source, {**UPPER, "amp": 1e8}, 10.0),
        "kwargs_lens_light": lens_light_kwargs,
        "kwargs_lens_light_sigma": lens_light_sigma,
        "kwargs_lens_light_lower": bounds(lens_light_kwargs, {**LOWER, "amp": 0.0}, -10.0),
        "kwargs_lens_light_upper": bounds(lens_light_kwargs, {**UPPER, "amp": 1e8}, 10.0),
        "kwargs_constraints": {"joint_lens_with_light": [[0, 0, ["center_x", "center_y"]]]} if with_light else {},
        **observation,
    }


#: Keys whose JSON lists lenstronomy needs as arrays, by the kwargs that hold them.
ARRAY_KEYS = {
    "kwargs_pixel_grid": "transform_pix2angle",
    "kwargs_data": "transform_pix2angle",
    "kwargs_psf": "kernel_point_source",
}


def with_arrays(setup: Mapping[str, Any]) -> dict[str, Any]:
    """``setup`` (e.g. read from JSON) with the pixel-grid transform and the PSF kernel as numpy arrays."""
    out = dict(setup)
    for part, key in ARRAY_KEYS.items():
        if key in out.get(part, {}):
            out[part] = {**out[part], key: np.asarray(out[part][key], dtype=float)}
    return out


def seed_source(setup: Mapping[str, Any], image: np.ndarray, noise_rms: float, pixel_scale: float) -> dict[str, Any]:
    """``setup`` with the source started where the lens model maps the arcs: the flux-weighted
    mean and spread of the ray-traced source-plane positions of the pixels brighter than 3 noise
    rms within ``0.5 - 1.5`` Einstein radii of the lens (which keeps most of the lens light out).

    A fit that knows the lens only from a prior cannot do this; with the network's lens model the
    source starts close to the truth, so the swarm searches the lens parameters, not the source.
    Unchanged when no pixel qualifies.
    """
    lens = setup["kwargs_lens"][0]
    height, width = image.shape
    x, y = pixel_grid(height, width, pixel_scale, dtype=torch.float64)
    t = {k: torch.tensor(float(v), dtype=torch.float64) for k, v in lens.items()}
    alpha_x, alpha_y = sie_deflection(x, y, t["theta_E"], t["e1"], t["e2"], t["center_x"], t["center_y"])
    if len(setup["kwargs_lens"]) > 1:
        shear = setup["kwargs_lens"][1]
        sx, sy = shear_deflection(x, y, torch.tensor(shear["gamma1"]), torch.tensor(shear["gamma2"]))
        alpha_x, alpha_y = alpha_x + sx, alpha_y + sy
    radius = torch.hypot(x - t["center_x"], y - t["center_y"]) / t["theta_E"]
    weight = torch.as_tensor(image, dtype=torch.float64) - 3 * noise_rms
    weight = torch.where((weight > 0) & (radius > 0.5) & (radius < 1.5), weight, 0.0)
    total = float(weight.sum())
    if total <= 0:
        return dict(setup)
    beta_x, beta_y = x - alpha_x, y - alpha_y
    cx, cy = float((weight * beta_x).sum()) / total, float((weight * beta_y).sum()) / total
    spread = math.sqrt(float((weight * ((beta_x - cx) ** 2 + (beta_y - cy) ** 2)).sum()) / total)
    source = {**setup["kwargs_source"][0], "center_x": cx, "center_y": cy}
    source["R_sersic"] = min(max(spread, 2 * LOWER["R_sersic"]), UPPER["R_sersic"] / 2)
    step = {**setup["kwargs_source_sigma"][0], "center_x": max(0.5 * spread, 0.02), "center_y": max(0.5 * spread, 0.02)}
    return {**setup, "kwargs_source": [source], "kwargs_source_sigma": [step]}
