"""A lenstronomy lens-model fit of one image, started from the network's estimate.

lenstronomy's ``FittingSequence`` runs a particle-swarm optimisation (PSO) and optionally an
emcee MCMC of the setup's lens model (:func:`lenscnn.fit.kwargs.lens_model_kwargs`: the spec of
the network's prior, e.g. an SIE or EPL with shear and multipoles, Sersic sources and lens lights,
with the spec's constraints); the amplitudes are solved linearly. The swarm starts at the network's
means with the network's sigmas as its spread (times ``sigma_scale``), the parameters the network
does not predict at the prior's means; with ``network_prior`` the network's Gaussian posterior is
also a prior of the fit. lenstronomy is an optional dependency (``pip install lenscnn[fit]``),
imported only here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import numpy as np

from lenscnn.errors import UserError
from lenscnn.fit.kwargs import KWARGS, PARTS, kwargs_parameters, setup_lens_model, with_arrays
from lenscnn.sim.lens_model import LensModel

#: lenstronomy's ``FittingSequence`` parameter group and likelihood prior of each role.
GROUPS = {
    "lens": ("lens_model", "prior_lens"),
    "source": ("source_model", "prior_source"),
    "lens_light": ("lens_light_model", "prior_lens_light"),
}


@dataclass(frozen=True)
class Budget:
    """How much fitting each image gets.

    Attributes:
        n_particles, n_iterations: the PSO swarm and its steps.
        sigma_scale: the swarm's initial spread in units of the starting sigmas.
        mcmc_burn, mcmc_run: emcee steps (0, 0: no MCMC, uncertainties are then not estimated).
        walker_ratio: emcee walkers per fitted parameter.
    """

    n_particles: int = 60
    n_iterations: int = 100
    sigma_scale: float = 1.0
    mcmc_burn: int = 0
    mcmc_run: int = 0
    walker_ratio: int = 4

    def __post_init__(self) -> None:
        for name in ("n_particles", "n_iterations", "walker_ratio"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UserError(f"fit.{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("mcmc_burn", "mcmc_run"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise UserError(f"fit.{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if not self.sigma_scale > 0:
            raise UserError(f"fit.sigma_scale must be > 0, got {self.sigma_scale!r}")


@dataclass
class FitResult:
    """The fit of one image.

    ``lens`` holds the parameters of the lens model's mass components by lenscnn name (``theta_E``,
    ``gamma`` of an EPL, ``gamma1``, ``multipole_4_a_m``...; those the setup holds fixed at their value),
    ``sigma`` the MCMC standard deviations of the fitted ones (empty without MCMC); ``reduced_chi2``
    of the best fit over all pixels; ``model`` and ``normalized_residual`` are images like the data;
    ``seconds`` of wall time; ``pso_chi2`` the reduced chi^2 of the swarm's best position after each
    PSO iteration (``-2 log L / pixels``), which shows when the fit converged.
    """

    lens: dict[str, float]
    sigma: dict[str, float]
    reduced_chi2: float
    seconds: float
    model: np.ndarray
    normalized_residual: np.ndarray
    pso_chi2: list[float] = field(default_factory=list)


def _components(setup: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    """lenstronomy's ``PSF``, ``LensModel`` and source and lens-light ``LightModel`` of a setup
    (whose arrays are already numpy arrays, see :func:`with_arrays`)."""
    from lenstronomy.Data.psf import PSF
    from lenstronomy.LensModel import lens_model
    from lenstronomy.LightModel.light_model import LightModel

    model = setup["kwargs_model"]
    return (
        PSF(**setup["kwargs_psf"]),
        lens_model.LensModel(model["lens_model_list"]),
        LightModel(model["source_light_model_list"]),
        LightModel(model.get("lens_light_model_list", [])),
    )


def image_fit_class(setup: Mapping[str, Any], image: np.ndarray, noise_map: np.ndarray | None) -> Any:
    """lenstronomy's ``ImageLinearFit`` of the setup's model on ``image``."""
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.ImSim.image_linear_solve import ImageLinearFit

    setup = with_arrays(setup)
    data = ImageData(**data_kwargs(setup, image, noise_map))
    return ImageLinearFit(data, *_components(setup), kwargs_numerics=setup["kwargs_numerics"])


def lenstronomy_image(setup: Mapping[str, Any], kwargs: Mapping[str, Any]) -> np.ndarray:
    """The noiseless image lenstronomy's ``ImageModel`` renders for ``kwargs`` (``kwargs_lens``,
    ``kwargs_source``, optional ``kwargs_lens_light``) on the setup's grid, PSF and numerics."""
    from lenstronomy.Data.pixel_grid import PixelGrid
    from lenstronomy.ImSim.image_model import ImageModel

    setup = with_arrays(setup)
    grid = PixelGrid(**setup["kwargs_pixel_grid"])
    image_model = ImageModel(grid, *_components(setup), kwargs_numerics=setup["kwargs_numerics"])
    return image_model.image(kwargs["kwargs_lens"], kwargs["kwargs_source"], kwargs.get("kwargs_lens_light") or None)


def data_kwargs(setup: Mapping[str, Any], image: np.ndarray, noise_map: np.ndarray | None) -> dict[str, Any]:
    """``ImageData`` keyword arguments: the setup's grid and noise, the image, an optional noise map."""
    kwargs = {**setup["kwargs_data"], "image_data": np.asarray(image, dtype=float)}
    if noise_map is not None:
        kwargs["noise_map"] = np.asarray(noise_map, dtype=float)
    elif kwargs.get("exposure_time") is None:
        kwargs["exposure_time"] = 1e30  # no shot noise: lenstronomy needs a number
    return kwargs


def reduced_chi2(setup: Mapping[str, Any], image: np.ndarray, noise_map: np.ndarray | None, kwargs: Mapping) -> tuple:
    """``(reduced chi^2, model image, normalised residual)`` of ``kwargs`` (lens, source, lens light;
    amplitudes solved linearly) on ``image``."""
    fit = image_fit_class(setup, image, noise_map)
    model, error_map, _, _ = fit.image_linear_solve(
        kwargs["kwargs_lens"], kwargs["kwargs_source"], kwargs.get("kwargs_lens_light") or None
    )
    return float(fit.reduced_chi2(model, error_map)), model, fit.reduced_residuals(model, error_map)


def _fixed_names(setup: Mapping[str, Any], model: LensModel, role: str) -> set[str]:
    """Names of the parameters of ``role`` that the setup holds fixed (not sampled by the fit)."""
    fixed = setup[f"{KWARGS[role]}_fixed"]
    return {name for i, c in enumerate(model.of_role(role)) for keyword, name in c.own.items() if keyword in fixed[i]}


def refine(
    image: np.ndarray,
    setup: Mapping[str, Any],
    budget: Budget,
    noise_map: np.ndarray | None = None,
    network_prior: bool = False,
    seed: int = 0,
) -> FitResult:
    """Fit ``image`` (counts/s per pixel, the grid of ``setup``) starting from ``setup``
    (:func:`lenscnn.fit.kwargs.lens_model_kwargs`); raises on a fit that fails."""
    from lenstronomy.Workflow.fitting_sequence import FittingSequence

    start = time.perf_counter()
    setup = with_arrays(setup)
    model = setup_lens_model(setup)
    np.random.seed(seed)  # lenstronomy's PSO and emcee draw from numpy's global generator
    # every role, empty lists included: lenstronomy expects the keys
    params = {group: [setup[f"{KWARGS[role]}{part}"] for part in PARTS] for role, (group, _) in GROUPS.items()}
    likelihood: dict[str, Any] = {"check_bounds": True}
    if network_prior:
        network = set(setup["lenscnn"]["network"])
        for role, (_, prior) in GROUPS.items():
            key = KWARGS[role]
            gaussians = [
                [i, keyword, setup[key][i][keyword], setup[f"{key}_sigma"][i][keyword]]
                for i, c in enumerate(model.of_role(role))
                for keyword, name in c.own.items()
                if name in network
            ]
            if gaussians:
                likelihood[prior] = gaussians
    data = [[data_kwargs(setup, image, noise_map), setup["kwargs_psf"], setup["kwargs_numerics"]]]
    sequence = FittingSequence(
        {"multi_band_list": data, "multi_band_type": "single-band"},
        setup["kwargs_model"],
        setup["kwargs_constraints"],
        likelihood,
        params,
        verbose=False,
    )
    steps: list[list[Any]] = [
        [
            "PSO",
            {"sigma_scale": budget.sigma_scale, "n_particles": budget.n_particles, "n_iterations": budget.n_iterations},
        ]
    ]
    if budget.mcmc_run > 0:
        mcmc = {"n_burn": budget.mcmc_burn, "n_run": budget.mcmc_run, "walkerRatio": budget.walker_ratio}
        steps.append(["MCMC", {**mcmc, "sigma_scale": 0.1, "progress": False}])
    chain = sequence.fit_sequence(steps)
    best = sequence.best_fit()
    lens = kwargs_parameters(model, best, "lens")
    sigma: dict[str, float] = {}
    if budget.mcmc_run > 0:
        # each sample as lenstronomy kwargs, constraints applied: a parameter may be sampled in another component
        samples = [kwargs_parameters(model, sequence.param_class.args2kwargs(s), "lens") for s in chain[-1][1]]
        fixed = _fixed_names(setup, model, "lens")
        sigma = {name: float(np.std([s[name] for s in samples])) for name in lens if name not in fixed}
    chi2, model_image, residual = reduced_chi2(setup, image, noise_map, best)
    pixels = np.asarray(image).size
    pso_chi2 = [-2.0 * float(log_l) / pixels for log_l in chain[0][1][0]]
    if not math.isfinite(chi2):
        raise RuntimeError("the best fit has a non-finite chi^2")
    return FitResult(
        lens=lens,
        sigma=sigma,
        reduced_chi2=chi2,
        seconds=time.perf_counter() - start,
        model=model_image,
        normalized_residual=residual,
        pso_chi2=pso_chi2,
    )


def fit_task(
    task: dict[str, Any], setup: dict[str, Any], budget: Budget, network_prior: bool, seed: int
) -> dict[str, Any]:
    """Fit one image in a worker process; never raises (a failure is returned as its status)."""
    try:
        result = refine(task["data"], setup, budget, task["noise"], network_prior, seed)
    except Exception as exc:  # a fit that fails must not stop the others: reported in its row
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {"status": f"failed: {type(exc).__name__}: {first}"}
    return {
        "status": "ok",
        "lens": result.lens,
        "sigma": result.sigma,
        "reduced_chi2": result.reduced_chi2,
        "seconds": result.seconds,
        "model": result.model,
        "residual": result.normalized_residual,
    }


def fit_all(jobs: list[tuple], workers: int) -> Iterator[tuple[dict, dict, dict]]:
    """``(row, item, outcome)`` of every job as it finishes: in ``workers`` processes, or in this
    one for ``workers=1``."""
    if workers == 1 or len(jobs) <= 1:
        for row, item, arguments in jobs:
            yield row, item, fit_task(*arguments)
        return
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(fit_task, *arguments): (row, item) for row, item, arguments in jobs}
        for future in as_completed(futures):
            yield (*futures[future], future.result())
