"""lenstronomy keyword arguments from the network's predictions (plain dicts: no lenstronomy import).

The network measures the lens (the parameters it was trained on); a lens-model fit also needs
every other component of the lens model, the pixel grid, the PSF and the noise. The lens model is
the spec of the network's prior (:class:`lenscnn.sim.lens_model.LensModel`): its components are
lenstronomy's profiles, so :func:`lens_model_kwargs` writes lenstronomy's ``kwargs_model`` and, per
component, its keyword arguments, steps, bounds, fixed keywords and the constraints that tie one
component to another (a lens light or a multipole on the lens centre). Then

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

from lenscnn.errors import UserError
from lenscnn.sim import Instrument, Prior
from lenscnn.sim.func import gaussian_kernel_1d, pixel_grid
from lenscnn.sim.lens_model import Component, LensModel, parameter_name
from lenscnn.sim.prior_config import without_galaxies
from lenscnn.sim.profiles import Profile, get_profile

#: Bounds of fitted keywords (lenstronomy's ``kwargs_lower`` / ``kwargs_upper``) where they are tighter
#: than the profile registry's range: keep the swarm off degenerate ellipses and sizes (a GAUSSIAN's ``sigma``
#: of 0 divides by zero in lenstronomy).
LOWER = {
    "theta_E": 0.05,
    "e1": -0.5,
    "e2": -0.5,
    "gamma1": -0.3,
    "gamma2": -0.3,
    "R_sersic": 0.01,
    "n_sersic": 0.5,
    "sigma": 0.001,
}
UPPER = {"theta_E": 10.0, "e1": 0.5, "e2": 0.5, "gamma1": 0.3, "gamma2": 0.3, "R_sersic": 10.0, "n_sersic": 8.0}
#: Bound of any other keyword (centres [arcsec], angles [rad]) unless the registry's range is tighter,
#: and the upper bound of amplitudes [counts/s/arcsec^2].
BOUND = 10.0
AMP_UPPER = 1e8
#: Step size of a shear the network does not predict (or predicts without a sigma).
SHEAR_SIGMA = 0.05
#: Samples drawn from the prior to set the starting point and step of what the network does not predict.
MOMENT_SAMPLES = 20_000
#: Start and step (mean, standard deviation) of the ``SERSIC_ELLIPSE`` lens lights a fit adds to the prior's
#: (:func:`fitted_model`), by rank among the lens galaxy's lights: a compact, de Vaucouleurs-like bulge first,
#: then extended, exponential-like envelopes (``R_sersic`` [arcsec]; ``amp`` is solved linearly).
ADDED_LIGHTS = (
    {"amp": (1.0, 1.0), "R_sersic": (0.8, 0.4), "n_sersic": (4.0, 1.0), "e1": (0.0, 0.1), "e2": (0.0, 0.1)},
    {"amp": (1.0, 1.0), "R_sersic": (2.0, 1.0), "n_sersic": (1.5, 0.5), "e1": (0.0, 0.1), "e2": (0.0, 0.1)},
)
#: lenstronomy's light profile of a free sky level: a constant surface brightness, solved linearly.
SKY_PROFILE = "UNIFORM"
#: lenstronomy's keyword-argument lists, by role of a lens-model component.
KWARGS = {"lens": "kwargs_lens", "source": "kwargs_source", "lens_light": "kwargs_lens_light"}
#: Suffixes of a setup's lists per role: start values, steps, fixed keywords and bounds (``kwargs_lens_sigma``...).
PARTS = ("", "_sigma", "_fixed", "_lower", "_upper")
#: lenstronomy's constraints that set a keyword of a component in role ``to`` from the same keyword of one
#: in role ``from``, by ``(from, to)``: lenstronomy sets a lens from a light, never a light from a lens.
JOINTS = {
    ("lens", "lens"): "joint_lens_with_lens",
    ("lens_light", "lens"): "joint_lens_with_light",
    ("source", "lens"): "joint_lens_with_source_light",
    ("lens_light", "lens_light"): "joint_lens_light_with_lens_light",
    ("source", "source"): "joint_source_with_source",
}


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
    kernel = psf_kernel(instrument) if kernel is None else kernel
    exposure = instrument.exposure_time if math.isfinite(instrument.exposure_time) else None
    noise = {"background_rms": instrument.background_rms, "exposure_time": exposure}
    grid = grid_kwargs(instrument.image_size, instrument.pixel_scale)
    return {
        **grid,
        "kwargs_data": {**noise, **grid["kwargs_data"]},
        "kwargs_psf": pixel_psf(kernel),
        "kwargs_numerics": {"supersampling_factor": instrument.supersampling, "supersampling_convolution": False},
    }


def grid_kwargs(shape: tuple[int, int], pixel_scale: float) -> dict[str, Any]:
    """lenstronomy's ``kwargs_pixel_grid`` and the grid part of ``kwargs_data`` for an image of ``shape``
    ``(height, width)`` pixels of ``pixel_scale`` arcsec, centred: ``x`` grows with the column, ``y`` with the
    row (:func:`observation_kwargs`, :func:`on_grid`)."""
    height, width = shape
    s = pixel_scale
    grid = {
        "ra_at_xy_0": -(width - 1) / 2 * s,
        "dec_at_xy_0": -(height - 1) / 2 * s,
        "transform_pix2angle": [[s, 0.0], [0.0, s]],
    }
    return {"kwargs_pixel_grid": {"nx": width, "ny": height, **grid}, "kwargs_data": grid}


def on_grid(observation: Mapping[str, Any], shape: tuple[int, int], pixel_scale: float) -> dict[str, Any]:
    """``observation`` (:func:`observation_kwargs`) on a grid of ``shape`` pixels of ``pixel_scale`` arcsec: a
    fit field of its own size, same noise, PSF and numerics."""
    grid = grid_kwargs(shape, pixel_scale)
    return {**observation, **grid, "kwargs_data": {**observation["kwargs_data"], **grid["kwargs_data"]}}


def pixel_psf(kernel: np.ndarray | None) -> dict[str, Any]:
    """lenstronomy's ``kwargs_psf`` of a kernel on the fit's pixels (``PIXEL``; ``NONE`` without one)."""
    if kernel is None:
        return {"psf_type": "NONE"}
    return {"psf_type": "PIXEL", "kernel_point_source": np.asarray(kernel, dtype=float).tolist()}


def parameter_moments(prior_spec: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of every parameter the prior draws (the Sersic envelope of a
    library-galaxy light), from a fixed-seed sample of :data:`MOMENT_SAMPLES`."""
    params = Prior(without_galaxies(prior_spec)).sample(MOMENT_SAMPLES, torch.Generator().manual_seed(0))
    return {k: (float(v.double().mean()), float(v.double().std())) for k, v in params.items()}


def lens_galaxy_lights(lens_model: LensModel) -> list[Component]:
    """The lens-light components of the lens galaxy: those centred on the main lens (their ``center_x,
    center_y`` tied to the lens's). Unlensed light with a centre of its own (a neighbour, a field star)
    is not among them."""
    return [
        c
        for c in lens_model.of_role("lens_light")
        if c.parameters.get("center_x") == "center_x" and c.parameters.get("center_y") == "center_y"
    ]


def _lens_light_count(lens_light: bool | int) -> bool | int:
    """``lens_light`` as the config gives it: ``true``/``false`` or a count >= 0."""
    if isinstance(lens_light, bool) or (isinstance(lens_light, int) and lens_light >= 0):
        return lens_light
    raise UserError(f"lens_light must be true, false or a number of components >= 0, got {lens_light!r}")


def fitted_model(lens_model: LensModel, *, shear: bool, lens_light: bool | int) -> LensModel:
    """``lens_model`` as a fit models it.

    ``shear`` adds an external ``SHEAR`` (parameters ``gamma1, gamma2``) after the main lens when it has
    none, or with ``False`` removes every ``SHEAR``.

    ``lens_light``: the lens galaxy's light (:func:`lens_galaxy_lights`, concentric with the lens). ``False``
    or ``0``: none; ``True``: the prior's lens-galaxy lights as they are; a count ``N``: the first ``N`` of the
    prior's, completed with concentric ``SERSIC_ELLIPSE`` components (named ``lens_light``, ``lens_light_2``,
    ...; centre tied to the lens, starts from :data:`ADDED_LIGHTS`) up to ``N`` (bulge + envelope for 2).
    Unlensed light with its own centre (``neighbour``, ``star``...) is never fitted: its prior mean is no
    start for a galaxy at a random position; mask it in the data instead. The lens lights follow the other
    components.
    """
    count = _lens_light_count(lens_light)
    kept = lens_galaxy_lights(lens_model)
    if count is False:
        kept = []
    elif count is not True:
        kept = kept[:count]
    components = [c for c in lens_model.components if c.role != "lens_light" and (shear or c.profile != "SHEAR")]
    if shear and not any(c.profile == "SHEAR" for c in components):
        added = Component("shear", "SHEAR", "lens", {k: parameter_name("shear", k) for k in ("gamma1", "gamma2")})
        components.insert(components.index(lens_model.component("lens")) + 1, added)
    lights = list(kept)
    taken = {c.name for c in lens_model.components}
    number = 1
    while count is not True and len(lights) < count:
        name = "lens_light" if number == 1 else f"lens_light_{number}"
        number += 1
        if name in taken:
            continue
        keywords = get_profile("SERSIC_ELLIPSE").keyword_names
        parameters = {k: k if k in ("center_x", "center_y") else parameter_name(name, k) for k in keywords}
        lights.append(Component(name, "SERSIC_ELLIPSE", "lens_light", parameters))
    return LensModel(tuple(components + lights))


def _added_light_moments(lens_model: LensModel, moments: Mapping[str, tuple[float, float]]) -> dict:
    """Start and step (:data:`ADDED_LIGHTS`) of the lens lights the prior does not draw (added by
    :func:`fitted_model`): the first lens-galaxy light a bulge, the others envelopes."""
    out = {}
    for rank, c in enumerate(lens_galaxy_lights(lens_model)):
        defaults = ADDED_LIGHTS[min(rank, len(ADDED_LIGHTS) - 1)]
        out |= {n: defaults[k] for k, n in c.own.items() if n not in moments and k in defaults}
    return out


def _start(
    name: str,
    profile: Profile,
    values: Mapping[str, float],
    sigmas: Mapping[str, float],
    moments: Mapping[str, tuple[float, float]],
) -> tuple[float, float | None]:
    """Start value and step of parameter ``name`` of a ``profile``; step ``None``: held fixed.

    The network's mean and sigma where it predicts ``name`` (without a positive sigma: ``SHEAR_SIGMA``
    for a shear, else 10% of the value plus 0.01); a shear it does not predict starts at 0 with
    ``SHEAR_SIGMA``; anything else at the prior's mean with the prior's standard deviation (fixed when
    the prior fixes it)."""
    is_shear = profile.name == "SHEAR"
    if name in values:
        value = float(values[name])
        sigma = float(sigmas.get(name, 0.0))
        return value, sigma if sigma > 0 else (SHEAR_SIGMA if is_shear else 0.1 * abs(value) + 0.01)
    if is_shear:
        return 0.0, SHEAR_SIGMA
    if name not in moments:
        raise ValueError(f"{name} is neither predicted nor drawn by the prior: no start for the fit")
    mean, std = moments[name]
    return mean, std if std > 0 else None


def _bounds(profile: Profile, keyword: str) -> tuple[float, float]:
    """``(lower, upper)`` of a fitted keyword: the tighter of the registry's range and :data:`LOWER`/:data:`UPPER`."""
    registered = profile.keyword(keyword)
    upper = AMP_UPPER if keyword == "amp" else UPPER.get(keyword, BOUND)
    return max(registered.low, LOWER.get(keyword, -BOUND)), min(registered.high, upper)


def _constraints(
    lens_model: LensModel, starts: Mapping[str, tuple[float, float | None]]
) -> tuple[dict[str, list[list[Any]]], set[tuple[str, str]]]:
    """lenstronomy's ``kwargs_constraints`` for the keywords tied to another component's parameter, and
    the ``(component, keyword)`` of those it cannot constrain (held fixed at their start).

    lenstronomy joins equal keywords only, and sets a lens keyword from a light, never a light's from a
    lens: a parameter of the lens that lights are tied to is sampled on the first of them (its carrier),
    and every other keyword tied to it follows the carrier."""
    index = {c.name: lens_model.of_role(c.role).index(c) for c in lens_model.components}
    tied: dict[str, list[tuple[Component, str]]] = {}
    for c in lens_model.components:
        for keyword, name in c.tied.items():
            tied.setdefault(name, []).append((c, keyword))
    held: set[tuple[str, str]] = set()
    joints: dict[tuple[str, int, int], list[str]] = {}  # (constraint, from index, to index) -> keywords
    for name, locations in tied.items():
        owner, keyword = lens_model.owner(name)
        if starts[name][1] is None:  # the prior fixes the parameter, so the keywords tied to it too
            held |= {(c.name, k) for c, k in locations}
            continue
        held |= {(c.name, k) for c, k in locations if k != keyword}
        followers = [c for c, k in locations if k == keyword]
        lights = [c for c in followers if c.role != "lens"]
        carrier = lights[0] if owner.role == "lens" and lights else owner
        for c in [owner, *followers]:
            if c is carrier:
                continue
            joint = JOINTS.get((carrier.role, c.role))
            if joint is None:
                held.add((c.name, keyword))
            else:
                joints.setdefault((joint, index[carrier.name], index[c.name]), []).append(keyword)
    constraints: dict[str, list[list[Any]]] = {}
    for (joint, i, k), keywords in joints.items():
        constraints.setdefault(joint, []).append([i, k, keywords])
    return constraints, held


def _component_kwargs(
    c: Component, starts: Mapping[str, tuple[float, float | None]], held: set[tuple[str, str]]
) -> dict[str, dict[str, Any]]:
    """The kwargs of one component by setup suffix: ``""`` (start values, options and fixed keywords),
    ``_sigma``, ``_lower``, ``_upper`` (of the sampled keywords) and ``_fixed``."""
    profile = c.registered
    constant = {**c.options, **profile.fixed}
    kwargs: dict[str, Any] = {}
    step: dict[str, float] = {}
    fixed: dict[str, Any] = dict(constant)
    for keyword, name in c.parameters.items():
        kwargs[keyword], sigma = starts[name]
        if sigma is None or (c.name, keyword) in held:
            fixed[keyword] = kwargs[keyword]
        else:
            step[keyword] = sigma
    bounds = {k: _bounds(profile, k) for k in step}
    return {
        "": kwargs | constant,
        "_sigma": step,
        "_fixed": fixed,
        "_lower": {k: low for k, (low, _) in bounds.items()},
        "_upper": {k: high for k, (_, high) in bounds.items()},
    }


def lens_model_kwargs(
    values: Mapping[str, float],
    sigmas: Mapping[str, float] | None,
    observation: Mapping[str, Any],
    moments: Mapping[str, tuple[float, float]],
    lens_model: LensModel,
    sky: bool = False,
) -> dict[str, Any]:
    """lenstronomy's model, parameters, step sizes, bounds and constraints for one lens.

    Args:
        values: the network's means by parameter name (any subset of the model's parameters).
        sigmas: the network's standard deviations by name (``None``: no uncertainties).
        observation: :func:`observation_kwargs`.
        moments: :func:`parameter_moments` of the prior: where what the network does not predict starts
            (lens lights the prior lacks, added by :func:`fitted_model`, start from :data:`ADDED_LIGHTS`).
        lens_model: the components to fit (:func:`lenscnn.sim.prior_config.lens_model_of` a prior,
            :func:`fitted_model`).
        sky: append a free sky level to the lens lights: lenstronomy's ``UNIFORM`` profile (its ``amp``, a
            surface brightness, solved linearly like every amplitude; :func:`sky_level` reads it in
            counts/s per pixel). It is no component of ``lens_model``: always the last lens light.

    Returns ``kwargs_model`` (``lens_model.kwargs_model()``, plus ``UNIFORM`` with ``sky``);
    ``kwargs_lens``/``kwargs_source``/``kwargs_lens_light`` with their ``*_sigma``, ``*_lower``, ``*_upper``
    (sampled keywords) and ``*_fixed`` (profile options such as a multipole's ``m``, the shear's origin, what
    the prior fixes and tied keywords lenstronomy cannot constrain, e.g. a multipole's ``r_E`` at the start
    ``theta_E``); ``kwargs_constraints`` (``joint_*``: keywords tied to another component's parameter); the
    observation keys; and ``lenscnn``: ``{"lens_model": lens_model.to_dict(), "network": [names whose
    start and step are the network's mean and sigma], "sky": sky}``, which maps the kwargs back to parameter
    names.
    """
    sigmas = sigmas or {}
    moments = {**_added_light_moments(lens_model, moments), **moments}
    starts = {
        name: _start(name, c.registered, values, sigmas, moments)
        for c in lens_model.components
        for name in c.own.values()
    }
    constraints, held = _constraints(lens_model, starts)
    setup: dict[str, Any] = {"kwargs_model": lens_model.kwargs_model()}
    for role, key in KWARGS.items():
        components = [_component_kwargs(c, starts, held) for c in lens_model.of_role(role)]
        setup |= {f"{key}{part}": [kwargs[part] for kwargs in components] for part in PARTS}
    if sky:
        setup["kwargs_model"]["lens_light_model_list"].append(SKY_PROFILE)
        for part in PARTS:
            setup[f"kwargs_lens_light{part}"].append({"amp": 0.0} if part == "" else {})
    network = [n for n in starts if n in values and float(sigmas.get(n, 0.0)) > 0]
    return {
        **setup,
        "kwargs_constraints": constraints,
        **observation,
        "lenscnn": {"lens_model": lens_model.to_dict(), "network": network, "sky": bool(sky)},
    }


def sky_level(setup: Mapping[str, Any], kwargs: Mapping[str, Any]) -> float | None:
    """The free sky level of a ``sky`` setup in ``kwargs`` (e.g. a best fit) in counts/s per pixel (the
    ``UNIFORM`` surface brightness times the pixel area); ``None`` without one."""
    if not setup.get("lenscnn", {}).get("sky"):
        return None
    area = abs(float(np.linalg.det(np.asarray(setup["kwargs_data"]["transform_pix2angle"], dtype=float))))
    return float(kwargs["kwargs_lens_light"][-1]["amp"]) * area


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


def setup_lens_model(setup: Mapping[str, Any]) -> LensModel:
    """The lens model a :func:`lens_model_kwargs` setup was made for."""
    return LensModel.from_dict(setup["lenscnn"]["lens_model"])


def kwargs_parameters(lens_model: LensModel, kwargs: Mapping[str, Any], role: str) -> dict[str, float]:
    """The parameters by name of the components of ``lens_model`` in ``role`` from lenstronomy's
    ``kwargs`` (``{"kwargs_lens": [...], ...}``, e.g. a setup or a best fit): every parameter the
    components own, fixed ones included."""
    return {
        name: float(kwargs[KWARGS[role]][i][keyword])
        for i, c in enumerate(lens_model.of_role(role))
        for keyword, name in c.own.items()
    }


def seed_source(
    setup: Mapping[str, Any],
    image: np.ndarray,
    noise_rms: float,
    pixel_scale: float,
    mask: np.ndarray | None = None,
) -> dict[str, Any]:
    """``setup`` with the (first) source started where the lens model maps the arcs: the flux-weighted
    mean and spread of the source-plane positions, ray-traced through every lens component
    (:meth:`LensModel.deflection`), of the pixels brighter than 3 noise rms (counts/s per pixel) within
    ``0.5 - 1.5`` Einstein radii of the main lens (which keeps most of the lens light out), among the
    pixels of ``mask`` (``True``: use; ``None``: all).

    A fit that knows the lens only from a prior cannot do this; with the network's lens model the
    source starts close to the truth, so the swarm searches the lens parameters, not the source.
    Unchanged when no pixel qualifies; else ``setup["lenscnn"]["source_seed"]`` records ``noise_rms`` and
    ``pixel_scale``, so that a fit started elsewhere (:func:`lenscnn.modelling.fitting.fit_lens_model`'s other starts)
    seeds its source the same way.
    """
    model = setup_lens_model(setup)
    lens = {k: torch.tensor(v, dtype=torch.float64) for k, v in kwargs_parameters(model, setup, "lens").items()}
    height, width = image.shape
    x, y = pixel_grid(height, width, pixel_scale, dtype=torch.float64)
    alpha_x, alpha_y = model.deflection(x, y, lens)
    radius = torch.hypot(x - lens["center_x"], y - lens["center_y"]) / lens["theta_E"]
    pixels = np.nan_to_num(np.asarray(image, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    weight = torch.as_tensor(pixels, dtype=torch.float64) - 3 * noise_rms
    use = (weight > 0) & (radius > 0.5) & (radius < 1.5)
    if mask is not None:
        use &= torch.as_tensor(np.asarray(mask, dtype=bool))
    weight = torch.where(use, weight, 0.0)
    total = float(weight.sum())
    if total <= 0:
        return dict(setup)
    beta_x, beta_y = x - alpha_x, y - alpha_y
    cx, cy = float((weight * beta_x).sum()) / total, float((weight * beta_y).sum()) / total
    spread = math.sqrt(float((weight * ((beta_x - cx) ** 2 + (beta_y - cy) ** 2)).sum()) / total)
    first, *others = setup["kwargs_source"]
    first_step, *other_steps = setup["kwargs_source_sigma"]
    source = {**first, "center_x": cx, "center_y": cy}
    source["R_sersic"] = min(max(spread, 2 * LOWER["R_sersic"]), UPPER["R_sersic"] / 2)
    step = {**first_step, "center_x": max(0.5 * spread, 0.02), "center_y": max(0.5 * spread, 0.02)}
    record = {**setup["lenscnn"], "source_seed": {"noise_rms": float(noise_rms), "pixel_scale": float(pixel_scale)}}
    return {**setup, "kwargs_source": [source, *others], "kwargs_source_sigma": [step, *other_steps], "lenscnn": record}
