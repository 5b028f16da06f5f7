"""A lenstronomy lens-model fit of one image, started from the network's estimate.

lenstronomy's ``FittingSequence`` (:mod:`lenscnn.modelling.lenstronomy_adapter`) runs particle-swarm
optimisations (PSO) and optionally an emcee MCMC of the setup's lens model
(:class:`lenscnn.modelling.fit_setup.FitSetup`, made of :func:`lenscnn.modelling.kwargs.lens_model_kwargs`:
the spec of the network's prior as :func:`lenscnn.modelling.kwargs.fitted_model` makes it, e.g. an SIE or EPL
with shear and multipoles, Sersic sources, a bulge and an envelope on the lens centre, with the spec's
constraints, and a free sky level); the amplitudes are solved linearly. Pixels outside the mask do not count
(:mod:`lenscnn.modelling.pixels`).

The lens light is fitted first (:attr:`lenscnn.modelling.settings.Budget.light_iterations`), the lens and source held
at the network's start: on a real elliptical the lens light is 10-1000x brighter than the arcs and dominates the
chi^2, and a swarm searching both at once trades the lens parameters against the light's (on 48 simulated SLACS-like
lenses, ``benchmarks/refine_slacs_like.py`` seeds 5 and 6: theta_E RMSE 0.097" unstaged, 0.054" staged). Then several
starts (:attr:`lenscnn.modelling.settings.Budget.starts`) search the lens and source with that light held: one PSO
starts at the network's means, each of the others at a draw from the network's Gaussian posterior (mean + sigma *
N(0, 1) per parameter the network predicts, clipped to the bounds; the source seeded again through the drawn lens);
every swarm spreads by the network's sigmas (times ``sigma_scale``) and starts what the network does not predict at
the prior's means. The start of lowest chi^2 is kept, so one bad start does not make a bad fit; it goes on in a
final PSO stage of every parameter, the light freed again (``final_iterations``, its swarm spread anew closer around
its best), then is sampled by the MCMC. With ``network_prior`` the network's posterior is also a prior of the fit.

Converged (:class:`lenscnn.modelling.settings.Convergence`): the two best starts agree on ``theta_E``, the
last PSO stage has settled (``theta_E`` stable, chi^2 no longer falling fast over its last iterations), the
reduced chi^2 is not absurd, no lens parameter stopped at a bound, the residual has no arc along the
Einstein ring (:mod:`lenscnn.modelling.residuals`), the fitted arcs are bright enough to constrain the lens, and the
fitted ``theta_E`` agrees with the network's within a few of its sigmas; a reduced chi^2 near 1 is not required,
since a real galaxy always leaves some residual.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from lenscnn.modelling.fit_setup import FitSetup
from lenscnn.modelling.kwargs import KWARGS, kwargs_parameters, sky_level
from lenscnn.modelling.lenstronomy_adapter import fitting_sequence, likelihood_kwargs, quiet, reduced_chi2, source_snr
from lenscnn.modelling.pixels import psf_border, used_pixels
from lenscnn.modelling.records import FitResult
from lenscnn.modelling.residuals import describe_span, ring_residual_span
from lenscnn.modelling.settings import PLATEAU_SHARE, Budget, Convergence
from lenscnn.sim.lens_model import LensModel

#: The parameter the starts must agree on.
AGREEMENT_PARAMETER = "theta_E"


def drawn_start(setup: FitSetup, rng: np.random.Generator) -> FitSetup:
    """``setup`` started at a draw from the network's posterior: every parameter the network predicts at
    its mean + sigma * N(0, 1), clipped to its bounds, in every component that takes it (tied keywords
    included, fixed ones such as a multipole's ``r_E`` too)."""
    draws = {}
    for name in setup.network:
        sampled = setup.sampled(name)
        if sampled is not None:
            start, step, lower, upper = sampled
            draws[name] = float(np.clip(start + step * rng.standard_normal(), lower, upper))
    kwargs = dict(setup.kwargs)
    for role, key in KWARGS.items():
        for part in ("", "_fixed"):
            lists = [dict(values) for values in setup.kwargs[f"{key}{part}"]]
            for i, c in enumerate(setup.lens_model.of_role(role)):
                for keyword, name in c.parameters.items():
                    if name in draws and keyword in lists[i]:
                        lists[i][keyword] = draws[name]
            kwargs[f"{key}{part}"] = lists
    return replace(setup, kwargs=kwargs)


def _agreement_value(model: LensModel, kwargs: Mapping[str, Any]) -> float:
    """The main lens's ``theta_E`` [arcsec] in lenstronomy ``kwargs`` (NaN for a lens without one)."""
    return kwargs_parameters(model, kwargs, "lens").get(AGREEMENT_PARAMETER, math.nan)


def _last_share(trace: list[float]) -> list[float]:
    """The values of a per-iteration ``trace`` over its last :data:`PLATEAU_SHARE` of iterations, from the
    one before them on (all of a trace of up to 2)."""
    return trace[max(0, math.ceil((1 - PLATEAU_SHARE) * len(trace)) - 1) :]


def plateau_change(trace: list[float]) -> float:
    """The relative fall of a PSO's reduced chi^2 ``trace`` over its last :data:`PLATEAU_SHARE` of
    iterations: ``(trace[at 80%] - trace[-1]) / |trace[-1]|`` (0 for a trace too short to tell)."""
    if len(trace) < 2:
        return 0.0
    before = _last_share(trace)[0]
    return max(0.0, (before - trace[-1]) / max(abs(trace[-1]), 1e-12))


def parameter_change(trace: list[float]) -> float:
    """The largest distance of a parameter's per-iteration ``trace`` over its last :data:`PLATEAU_SHARE`
    of iterations from its final value (0 for an empty trace)."""
    last = _last_share(trace)
    return max((abs(v - trace[-1]) for v in last), default=0.0)


def fit_lens_model(
    image: np.ndarray,
    setup: FitSetup,
    budget: Budget,
    noise_map: np.ndarray | None = None,
    network_prior: bool = False,
    seed: int = 0,
    mask: np.ndarray | None = None,
    convergence: Convergence | None = None,
) -> FitResult:
    """Fit ``image`` (counts/s per pixel, sky subtracted up to what the setup's sky level fits, on the grid
    of ``setup``) starting from ``setup``; ``noise_map``: the rms per pixel [counts/s/px] (``None``: the
    setup's background and shot noise); ``mask``: ``True`` where a pixel counts in the likelihood (``None``:
    every pixel); ``seed`` seeds the starts' draws and lenstronomy's swarms and walkers. The pixels within
    :func:`lenscnn.modelling.pixels.psf_border` of the edge are left out too. Raises on a fit that fails."""
    begin = time.perf_counter()
    convergence = convergence or Convergence()
    image, noise_map, use = used_pixels(image, noise_map, mask, psf_border(setup.kwargs["kwargs_psf"]))
    pixels = int(use.sum())
    model = setup.lens_model
    likelihood = likelihood_kwargs(setup, use, network_prior)
    np.random.seed(seed)  # lenstronomy's PSO and emcee draw from numpy's global generator
    rng = np.random.default_rng(seed)
    pso = {"sigma_scale": budget.sigma_scale, "n_particles": budget.n_particles, "n_iterations": budget.n_iterations}
    runs = []  # (sequence, final -2 log L / pixels, chi^2 trace, best kwargs, theta_E trace) per start
    lights = setup.free_keywords("lens_light")
    staged = budget.light_iterations > 0 and budget.final_iterations > 0 and bool(lights)  # a final stage frees all
    if staged:  # the lens light first, the lens and source held at the network's start
        with quiet():
            sequence = fitting_sequence(setup, image, noise_map, likelihood)
            held = {"lens_add_fixed": setup.free_keywords("lens"), "source_add_fixed": setup.free_keywords("source")}
            light_pso = {**pso, "n_iterations": budget.light_iterations}
            sequence.fit_sequence([["update_settings", held], ["PSO", light_pso]])
            light = sequence.best_fit()["kwargs_lens_light"]
        setup = replace(setup, kwargs={**setup.kwargs, "kwargs_lens_light": light})
    for k in range(budget.starts):
        start = setup if k == 0 else drawn_start(setup, rng).reseeded_source(image, use)
        if staged:  # each start searches the lens and source with that light held (a lens centre on it included)
            start = replace(start, kwargs={**start.kwargs, "kwargs_lens_light": light})
        with quiet():
            sequence = fitting_sequence(start, image, noise_map, likelihood)
            stages = [["update_settings", {"lens_light_add_fixed": lights}]] if staged else []
            chain = sequence.fit_sequence([*stages, ["PSO", pso]])
            best = sequence.best_fit()
        trace = [-2.0 * float(log_l) / pixels for log_l in chain[0][1][0]]
        path = [_agreement_value(model, sequence.param_class.args2kwargs(a)) for a in chain[0][1][1]]
        runs.append((sequence, trace[-1] if trace else math.inf, trace, best, path))
    order = sorted(range(len(runs)), key=lambda k: runs[k][1])
    kept = order[0]
    sequence, _, trace, best, path = runs[kept]
    theta = [_agreement_value(model, run[3]) for run in runs]
    settling = (trace, path)  # where (b) of the criterion looks: the last PSO stage
    if staged:  # the final stage and the MCMC fit every parameter
        with quiet():
            sequence.update_settings(lens_light_remove_fixed=lights)
    if budget.final_iterations > 0:  # the kept start goes on, its swarm respread closer around its best
        final = {
            "sigma_scale": budget.final_sigma_scale,
            "n_particles": budget.n_particles,
            "n_iterations": budget.final_iterations,
        }
        with quiet():
            chain = sequence.fit_sequence([["PSO", final]])
            best = sequence.best_fit()
        settling = (
            [-2.0 * float(log_l) / pixels for log_l in chain[0][1][0]],
            [_agreement_value(model, sequence.param_class.args2kwargs(a)) for a in chain[0][1][1]],
        )
        trace, path = trace + settling[0], path + settling[1]
    tolerance = convergence.tolerance(setup.network_sigma(AGREEMENT_PARAMETER))
    agreeing = sum(abs(t - theta[kept]) <= tolerance for t in theta)
    agree = len(runs) < 2 or abs(theta[order[1]] - theta[kept]) <= tolerance
    sigma: dict[str, float] = {}
    if budget.mcmc_run > 0:
        mcmc = {"n_burn": budget.mcmc_burn, "n_run": budget.mcmc_run, "walkerRatio": budget.walker_ratio}
        with quiet():
            chain = sequence.fit_sequence([["MCMC", {**mcmc, "sigma_scale": 0.1, "progress": False}]])
            best = sequence.best_fit()
        sigma = mcmc_sigmas(setup, sequence.param_class, chain[-1][1])
    lens = kwargs_parameters(model, best, "lens")
    with quiet():
        chi2, model_image, residual = reduced_chi2(setup.kwargs, image, noise_map, best, use)
        snr = source_snr(setup.kwargs, image, noise_map, best, use)
    if not math.isfinite(chi2):
        raise RuntimeError("the best fit has a non-finite chi^2")
    change, moved = plateau_change(settling[0]), parameter_change(settling[1])
    why = []  # each reason the fit is not trusted, named (refined.csv's why)
    if not agree:
        why.append(f"starts disagree: theta_E {theta[order[1]]:.3f} vs {theta[kept]:.3f}")
    if change > convergence.plateau:
        why.append(f"chi^2 still falling ({change:.0%} over the last steps)")
    if moved > tolerance:  # NaN (no theta_E): not tested
        why.append(f"theta_E still moving ({moved:.3f} arcsec)")
    if chi2 > convergence.max_chi2:
        why.append(f"reduced chi^2 {chi2:.3g} > {convergence.max_chi2:g}")
    why += [f"{name} at its bound" for name in at_bounds(setup, lens)]
    if snr < convergence.arc_snr:
        why.append(f"arcs too faint (S/N {snr:.3g} < {convergence.arc_snr:g})")
    network = setup.sampled(AGREEMENT_PARAMETER) if AGREEMENT_PARAMETER in setup.network else None
    if network is not None:  # the network's mean and sigma: the start and step of the first start
        fitted = lens[AGREEMENT_PARAMETER]
        distance = abs(fitted - network[0]) / network[1]
        if distance > convergence.network:
            why.append(f"theta_E {fitted:.3f} is {distance:.1f} sigma from the network's {network[0]:.3f}")
    span = math.nan
    if {"theta_E", "center_x", "center_y"} <= set(lens):
        scale = abs(float(np.asarray(setup.kwargs["kwargs_data"]["transform_pix2angle"])[0, 0]))
        span = ring_residual_span(residual, use, lens["center_x"], lens["center_y"], lens["theta_E"], scale)
        if span >= convergence.arcs:
            why.append(describe_span(span))
    return FitResult(
        lens=lens,
        sigma=sigma,
        reduced_chi2=chi2,
        seconds=time.perf_counter() - begin,
        model=model_image,
        normalized_residual=residual,
        pso_chi2=trace,
        pso_theta=path,
        sky=sky_level(setup.as_kwargs(), best),
        pixels=pixels,
        mask=use,
        start_chi2=[run[1] for run in runs],
        start_theta=theta,
        kept_start=kept,
        starts_agreeing=int(agreeing),
        arc_span=span,
        arc_snr=snr,
        chi2_change=change,
        theta_change=moved,
        agree=bool(agree),
        converged=not why,
        why=why,
    )


def at_bounds(setup: FitSetup, lens: Mapping[str, float], share: float = 1e-3) -> list[str]:
    """The fitted lens parameters within ``share`` of their sampled range from a bound: a fit stopped by its
    box, not by the data."""
    out = []
    for name, value in lens.items():
        sampled = setup.sampled(name)
        if sampled is not None:
            _, _, low, high = sampled
            if min(value - low, high - value) <= share * (high - low):
                out.append(name)
    return out


def mcmc_sigmas(setup: FitSetup, param_class: Any, samples: np.ndarray) -> dict[str, float]:
    """The standard deviation over the MCMC ``samples`` of every lens parameter (0 for those the setup
    holds fixed). Each sample is turned into lenstronomy kwargs with the constraints applied
    (``param_class.args2kwargs``), so a parameter sampled in another component (the lens centre on the
    first lens light) reads where the lens uses it."""
    values = [kwargs_parameters(setup.lens_model, param_class.args2kwargs(s), "lens") for s in np.asarray(samples)]
    fixed = setup.fixed_names("lens")
    return {name: 0.0 if name in fixed else float(np.std([v[name] for v in values])) for name in values[0]}
