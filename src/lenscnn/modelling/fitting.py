"""A lenstronomy lens-model fit of one image, started from the network's estimate.

lenstronomy's ``FittingSequence`` runs particle-swarm optimisations (PSO) and optionally an emcee
MCMC of the setup's lens model (:func:`lenscnn.modelling.kwargs.lens_model_kwargs`: the spec of the
network's prior as :func:`lenscnn.modelling.kwargs.fitted_model` makes it, e.g. an SIE or EPL with shear and
multipoles, Sersic sources, a bulge and an envelope on the lens centre, with the spec's constraints,
and a free sky level); the amplitudes are solved linearly. Pixels outside the mask do not count.

Several starts (``Budget.starts``): one PSO starts at the network's means, each of the others at a
draw from the network's Gaussian posterior (mean + sigma * N(0, 1) per parameter the network predicts,
clipped to the bounds; the source seeded again through the drawn lens); every swarm spreads by the
network's sigmas (times ``sigma_scale``) and starts what the network does not predict at the prior's
means. The start of lowest chi^2 is kept, so one bad start does not make a bad fit; it goes on in a final
PSO stage (``final_iterations``, its swarm spread anew closer around its best), then is sampled by the
MCMC. With ``network_prior`` the network's posterior is also a prior of the fit.

Converged (:class:`Convergence`): the two best starts agree on ``theta_E``, the last PSO stage has settled
(``theta_E`` stable, chi^2 no longer falling fast over its last iterations), and the reduced chi^2 is not
absurd; a reduced chi^2 near 1 is not required, since a real galaxy always leaves some residual.
lenstronomy is an optional dependency (``pip install lenscnn[fit]``), imported only here; its prints and
warnings are kept out of the output.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from typing import Any

import numpy as np

from lenscnn.errors import UserError, one_line
from lenscnn.modelling.kwargs import (
    KWARGS,
    PARTS,
    kwargs_parameters,
    seed_source,
    setup_lens_model,
    sky_level,
    with_arrays,
)
from lenscnn.sim.lens_model import LensModel

#: lenstronomy's ``FittingSequence`` parameter group and likelihood prior of each role.
GROUPS = {
    "lens": ("lens_model", "prior_lens"),
    "source": ("source_model", "prior_source"),
    "lens_light": ("lens_light_model", "prior_lens_light"),
}
#: A noise rms [counts/s/px] at least this large is a zero weight: the pixel is left out like a masked one.
ZERO_WEIGHT_NOISE = 1e10
#: The edge of an image is left out of the likelihood where the PSF kernel reaches beyond the image by more than
#: this share of its flux (:func:`psf_border`).
EDGE_TAIL = 0.005
#: The share of the PSO iterations, at the end, over which :class:`Convergence` asks the chi^2 to be stable.
PLATEAU_SHARE = 0.2
#: The parameter the starts must agree on.
AGREEMENT_PARAMETER = "theta_E"


@dataclass(frozen=True)
class Budget:
    """How much fitting each image gets.

    Attributes:
        n_particles, n_iterations: the PSO swarm and its steps, per start.
        sigma_scale: the swarm's initial spread in units of the starting sigmas.
        starts: PSO runs from different starts (the first at the network's means, the others at draws
            from its posterior); the one of lowest chi^2 is kept.
        mcmc_burn, mcmc_run: emcee steps from the kept start (0, 0: no MCMC, uncertainties are then not
            estimated).
        walker_ratio: emcee walkers per fitted parameter.
    """

    n_particles: int = 60
    n_iterations: int = 60
    sigma_scale: float = 1.0
    starts: int = 4
    final_iterations: int = 150
    final_sigma_scale: float = 0.3
    mcmc_burn: int = 0
    mcmc_run: int = 0
    walker_ratio: int = 4

    def __post_init__(self) -> None:
        for name in ("n_particles", "n_iterations", "walker_ratio", "starts"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise UserError(f"fit.{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("mcmc_burn", "mcmc_run", "final_iterations"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise UserError(f"fit.{name} must be an integer >= 0, got {getattr(self, name)!r}")
        for name in ("sigma_scale", "final_sigma_scale"):
            if not _is_number(getattr(self, name)) or not getattr(self, name) > 0:
                raise UserError(f"fit.{name} must be > 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Convergence:
    """When a fit is reported as converged: all of

    (a) ``agree``, the starts agree: the ``theta_E`` of the two starts of lowest chi^2 differ by at most the
        tolerance ``max(agree, the network's sigma of theta_E)`` [arcsec] (not tested with a single start);
    (b) the fit has settled: over the last :data:`PLATEAU_SHARE` of the iterations of its last PSO stage (the
        final stage, else the kept start's) the swarm's best ``theta_E`` stayed within the same tolerance of its
        final value, and its reduced chi^2 fell by at most ``plateau`` (a fraction of the final value);
    (c) ``max_chi2``: the reduced chi^2 (over the used pixels) is at most this.

    A reduced chi^2 near 1 is not asked for: a smooth model leaves residuals on a real galaxy (reduced chi^2
    1.5-15 on HST ellipticals) and on a real-galaxy source, and the swarm then keeps lowering the chi^2 slowly
    by fitting the light's details while the lens parameters no longer move, so ``plateau`` is generous and
    ``max_chi2`` only catches fits that failed outright.
    """

    agree: float = 0.01
    plateau: float = 0.1
    max_chi2: float = 50.0

    def __post_init__(self) -> None:
        for name in ("agree", "plateau", "max_chi2"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value < math.inf:
                raise UserError(f"converged.{name} must be a number > 0, got {value!r}")

    def tolerance(self, network_sigma: float | None) -> float:
        """The ``theta_E`` tolerance of (a) and (b) [arcsec]."""
        return max(self.agree, network_sigma or 0.0)

    def describe(self) -> str:
        """The criterion in one sentence (for ``report.md``)."""
        share = f"{PLATEAU_SHARE:.0%}"
        return (
            f"(a) the two best starts agree on theta_E within max({self.agree:g} arcsec, the network's sigma) "
            f"(not tested with one start), (b) over the last {share} of the last PSO stage theta_E moved within "
            f"that tolerance and the reduced chi^2 fell by at most {self.plateau:g} of its value, and "
            f"(c) reduced chi^2 <= {self.max_chi2:g}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class FitResult:
    """The fit of one image.

    ``lens`` holds the parameters of the lens model's mass components by lenscnn name (``theta_E``,
    ``gamma`` of an EPL, ``gamma1``, ``multipole_4_a_m``...; those the setup holds fixed at their value),
    ``sigma`` the MCMC standard deviations of all of them (0 for those held fixed; empty without MCMC);
    ``reduced_chi2`` of the best fit over the used pixels (``pixels`` of them, ``True`` in ``mask``: the
    given mask less the edge and unusable pixels, see :func:`used_pixels`); ``sky`` the fitted sky
    level [counts/s/px] (``None`` without one); ``model`` and ``normalized_residual`` are images like the
    data (the residual 0 outside the mask); ``seconds`` of wall time; ``pso_chi2`` and ``pso_theta`` the
    reduced chi^2 (``-2 log L / pixels``, the network prior included when used) and ``theta_E`` [arcsec] of
    the swarm's best position after each PSO iteration of the kept start, then of the final stage; per start
    (in start order) ``start_chi2`` its final reduced chi^2 and ``start_theta`` its ``theta_E`` [arcsec];
    ``kept_start`` the kept one; ``starts_agreeing`` how many starts found the kept ``theta_E`` within the
    agreement tolerance (itself included); ``chi2_change`` the relative fall of the reduced chi^2 and
    ``theta_change`` [arcsec] the largest distance of ``theta_E`` from its final value, over the last
    :data:`PLATEAU_SHARE` of the last PSO stage; ``agree`` whether the two best starts agree
    (:class:`Convergence` (a)); ``converged`` by :class:`Convergence`.
    """

    lens: dict[str, float]
    sigma: dict[str, float]
    reduced_chi2: float
    seconds: float
    model: np.ndarray
    normalized_residual: np.ndarray
    pso_chi2: list[float] = field(default_factory=list)
    pso_theta: list[float] = field(default_factory=list)
    sky: float | None = None
    pixels: int = 0
    mask: np.ndarray | None = None
    start_chi2: list[float] = field(default_factory=list)
    start_theta: list[float] = field(default_factory=list)
    kept_start: int = 0
    starts_agreeing: int = 1
    chi2_change: float = 0.0
    theta_change: float = 0.0
    agree: bool = True
    converged: bool = False


@dataclass(frozen=True)
class FitOutcome:
    """What ``lenscnn-refine`` reports of one image: a row of ``refined.csv`` (written and read back by
    :mod:`lenscnn.modelling.report`), with the arrays of its figure.

    ``image`` is the image's label (``path`` or ``path[k]``), ``status`` ``ok`` or ``failed: <reason>``
    (the image could not be read or prepared, it has no prediction, or its fit raised). ``network`` and
    ``network_sigma`` hold the network's mean and sigma of each fitted lens parameter it predicts (by lenscnn
    name: ``theta_E`` [arcsec], ``e1``, ``gamma``...; empty when the image failed before its fit);
    ``fitted`` the fit's values and ``fitted_sigma`` its MCMC standard deviations (0 for a parameter held
    fixed; empty without MCMC), both empty unless ``ok``. The rest is set for a fit that succeeded
    (:class:`FitResult`): ``reduced_chi2`` over the used pixels, ``seconds`` of wall time, ``converged``
    (:class:`Convergence`; ``False`` unless ``ok``), ``starts_agreeing`` (starts that found the kept
    ``theta_E``), ``chi2_change`` (the relative fall of the reduced chi^2) and ``theta_E_change`` [arcsec]
    (the largest move of ``theta_E``) over the last :data:`PLATEAU_SHARE` of the last PSO stage, ``sky`` the
    fitted sky level [counts/s/px] (``None`` without one), ``model`` [counts/s/px] and ``residual``
    ((data - model) / noise, 0 outside the used pixels), images like the data (``None`` when read from
    ``refined.csv``; not compared).
    """

    image: str
    status: str
    network: dict[str, float] = field(default_factory=dict)
    network_sigma: dict[str, float] = field(default_factory=dict)
    fitted: dict[str, float] = field(default_factory=dict)
    fitted_sigma: dict[str, float] = field(default_factory=dict)
    reduced_chi2: float | None = None
    seconds: float | None = None
    converged: bool = False
    starts_agreeing: int | None = None
    chi2_change: float | None = None
    theta_E_change: float | None = None  # noqa: N815 (the physics name, refined.csv's column)
    sky: float | None = None
    model: np.ndarray | None = field(default=None, compare=False, repr=False)
    residual: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the image was fitted."""
        return self.status == "ok"


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


def image_fit_class(
    setup: Mapping[str, Any], image: np.ndarray, noise_map: np.ndarray | None, mask: np.ndarray | None = None
) -> Any:
    """lenstronomy's ``ImageLinearFit`` of the setup's model on ``image``, counting the pixels of ``mask``."""
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.ImSim.image_linear_solve import ImageLinearFit

    setup = with_arrays(setup)
    data = ImageData(**data_kwargs(setup, image, noise_map))
    return ImageLinearFit(
        data,
        *_components(setup),
        kwargs_numerics=setup["kwargs_numerics"],
        likelihood_mask=None if mask is None else np.asarray(mask, dtype=bool),
    )


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


def reduced_chi2(
    setup: Mapping[str, Any],
    image: np.ndarray,
    noise_map: np.ndarray | None,
    kwargs: Mapping,
    mask: np.ndarray | None = None,
) -> tuple:
    """``(reduced chi^2, model image, normalised residual)`` of ``kwargs`` (lens, source, lens light;
    amplitudes solved linearly) on ``image``: chi^2 summed over the pixels of ``mask`` (``True``: use;
    ``None``: all) and divided by their number; the residual is 0 outside the mask."""
    fit = image_fit_class(setup, image, noise_map, mask)
    model, error_map, _, _ = fit.image_linear_solve(
        kwargs["kwargs_lens"], kwargs["kwargs_source"], kwargs.get("kwargs_lens_light") or None
    )
    return float(fit.reduced_chi2(model, error_map)), model, fit.reduced_residuals(model, error_map)


def psf_border(setup: Mapping[str, Any]) -> int:
    """How many pixels at each edge of the image the fit leaves out: those for which more than
    :data:`EDGE_TAIL` of the setup's PSF kernel (``PIXEL``; 0 for any other PSF) falls beyond the edge.

    lenstronomy convolves with zeros beyond the image, so its model of light that continues past the edge
    (a sky level, an envelope; always so in a real image) is too faint there: a flat sky would come out
    biased by the edge pixels."""
    psf = setup["kwargs_psf"]
    if psf.get("psf_type") != "PIXEL":
        return 0
    kernel = np.abs(np.asarray(psf["kernel_point_source"], dtype=float))
    border = 0
    for marginal in (kernel.sum(axis=0), kernel.sum(axis=1)):
        marginal = marginal / marginal.sum()
        centre = len(marginal) // 2
        # the flux beyond the edge seen from the pixel d pixels inside it: kernel offsets beyond d, either side
        tails = [max(marginal[centre + d + 1 :].sum(), marginal[: centre - d].sum()) for d in range(centre)]
        border = max(border, next((d for d, tail in enumerate(tails) if tail <= EDGE_TAIL), centre))
    return border


def used_pixels(
    image: np.ndarray, noise_map: np.ndarray | None, mask: np.ndarray | None, border: int = 0
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``(image, noise map, mask)`` ready for lenstronomy: the mask (``True``: use) also leaves out the
    ``border`` pixels at each edge (:func:`psf_border`) and pixels whose value or noise is not finite, whose
    noise is not positive or is a zero weight (at least :data:`ZERO_WEIGHT_NOISE`); left-out pixels get the
    value 0 and the median noise of the used ones (they do not count, but lenstronomy computes with them).
    Raises ``ValueError`` when no pixel is left."""
    image = np.asarray(image, dtype=float)
    use = np.ones(image.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).copy()
    if use.shape != image.shape:
        raise ValueError(f"the mask's shape {use.shape} is not the image's {image.shape}")
    if border > 0:
        use[:border], use[-border:], use[:, :border], use[:, -border:] = False, False, False, False
    use &= np.isfinite(image)
    noise = None
    if noise_map is not None:
        noise = np.asarray(noise_map, dtype=float)
        if noise.shape != image.shape:
            raise ValueError(f"the noise map's shape {noise.shape} is not the image's {image.shape}")
        use &= np.isfinite(noise) & (noise > 0) & (noise < ZERO_WEIGHT_NOISE)
    if not use.any():
        raise ValueError("no pixel to fit: every pixel is masked, not finite or of zero weight")
    if noise is not None:
        noise = np.where(use, noise, float(np.median(noise[use])))
    return np.where(use, image, 0.0), noise, use


def _fixed_names(setup: Mapping[str, Any], model: LensModel, role: str) -> set[str]:
    """Names of the parameters of ``role`` that the setup holds fixed (not sampled by the fit)."""
    fixed = setup[f"{KWARGS[role]}_fixed"]
    return {name for i, c in enumerate(model.of_role(role)) for keyword, name in c.own.items() if keyword in fixed[i]}


def _sampled(setup: Mapping[str, Any], model: LensModel, name: str) -> tuple[float, float, float, float] | None:
    """``(start, step, lower, upper)`` of parameter ``name`` where the setup samples it (the component of
    any role whose keyword of that name has a step: a tied centre may be sampled on a lens light);
    ``None`` when it is held fixed."""
    for role, key in KWARGS.items():
        for i, c in enumerate(model.of_role(role)):
            for keyword, parameter in c.parameters.items():
                sampled = keyword in setup[f"{key}_sigma"][i] and keyword not in setup[f"{key}_fixed"][i]
                if parameter == name and sampled:
                    return (
                        float(setup[key][i][keyword]),
                        float(setup[f"{key}_sigma"][i][keyword]),
                        float(setup[f"{key}_lower"][i][keyword]),
                        float(setup[f"{key}_upper"][i][keyword]),
                    )
    return None


def network_sigma(setup: Mapping[str, Any], name: str) -> float | None:
    """The network's sigma of parameter ``name`` (the step the fit starts it with), ``None`` when the
    network does not predict it."""
    if name not in setup["lenscnn"].get("network", []):
        return None
    sampled = _sampled(setup, setup_lens_model(setup), name)
    return None if sampled is None else sampled[1]


def drawn_start(setup: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """``setup`` started at a draw from the network's posterior: every parameter the network predicts at
    its mean + sigma * N(0, 1), clipped to its bounds, in every component that takes it (tied keywords
    included, fixed ones such as a multipole's ``r_E`` too)."""
    model = setup_lens_model(setup)
    draws = {}
    for name in setup["lenscnn"].get("network", []):
        sampled = _sampled(setup, model, name)
        if sampled is not None:
            start, step, lower, upper = sampled
            draws[name] = float(np.clip(start + step * rng.standard_normal(), lower, upper))
    out = dict(setup)
    for role, key in KWARGS.items():
        for part in ("", "_fixed"):
            lists = [dict(kwargs) for kwargs in setup[f"{key}{part}"]]
            for i, c in enumerate(model.of_role(role)):
                for keyword, name in c.parameters.items():
                    if name in draws and keyword in lists[i]:
                        lists[i][keyword] = draws[name]
            out[f"{key}{part}"] = lists
    return out


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """lenstronomy's prints (PSO and MCMC progress, timings), its warnings and its log lines below WARNING
    ("Running with SerialPool") kept out of the output."""
    logger = logging.getLogger("lenstronomy")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _likelihood(setup: Mapping[str, Any], model: LensModel, mask: np.ndarray, network_prior: bool) -> dict[str, Any]:
    """lenstronomy's ``kwargs_likelihood``: bounds checked, the mask, with ``network_prior`` the network's
    Gaussian posterior as priors."""
    likelihood: dict[str, Any] = {"check_bounds": True, "image_likelihood_mask_list": [mask.astype(int)]}
    if network_prior:
        network = set(setup["lenscnn"]["network"])
        for role, (_, prior) in GROUPS.items():
            key = KWARGS[role]
            gaussians = [
                [i, keyword, setup[key][i][keyword], setup[f"{key}_sigma"][i][keyword]]
                for i, c in enumerate(model.of_role(role))
                for keyword, name in c.own.items()
                if name in network and keyword in setup[f"{key}_sigma"][i]
            ]
            if gaussians:
                likelihood[prior] = gaussians
    return likelihood


def _sequence(
    setup: Mapping[str, Any],
    image: np.ndarray,
    noise_map: np.ndarray | None,
    likelihood: Mapping[str, Any],
) -> Any:
    """lenstronomy's ``FittingSequence`` of ``setup`` on ``image``."""
    from lenstronomy.Workflow.fitting_sequence import FittingSequence

    # every role, empty lists included: lenstronomy expects the keys
    params = {group: [setup[f"{KWARGS[role]}{part}"] for part in PARTS] for role, (group, _) in GROUPS.items()}
    data = [[data_kwargs(setup, image, noise_map), setup["kwargs_psf"], setup["kwargs_numerics"]]]
    return FittingSequence(
        {"multi_band_list": data, "multi_band_type": "single-band"},
        setup["kwargs_model"],
        setup["kwargs_constraints"],
        dict(likelihood),
        params,
        verbose=False,
    )


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
    setup: Mapping[str, Any],
    budget: Budget,
    noise_map: np.ndarray | None = None,
    network_prior: bool = False,
    seed: int = 0,
    mask: np.ndarray | None = None,
    convergence: Convergence | None = None,
) -> FitResult:
    """Fit ``image`` (counts/s per pixel, sky subtracted up to what the setup's sky level fits, on the grid
    of ``setup``) starting from ``setup`` (:func:`lenscnn.modelling.kwargs.lens_model_kwargs`); ``noise_map``: the
    rms per pixel (``None``: the setup's background and shot noise); ``mask``: ``True`` where a pixel counts
    in the likelihood (``None``: every pixel); ``seed`` seeds the starts' draws and lenstronomy's swarms and
    walkers. The pixels within :func:`psf_border` of the edge are left out too. Raises on a fit that fails."""
    begin = time.perf_counter()
    convergence = convergence or Convergence()
    setup = with_arrays(setup)
    image, noise_map, use = used_pixels(image, noise_map, mask, psf_border(setup))
    pixels = int(use.sum())
    model = setup_lens_model(setup)
    likelihood = _likelihood(setup, model, use, network_prior)
    np.random.seed(seed)  # lenstronomy's PSO and emcee draw from numpy's global generator
    rng = np.random.default_rng(seed)
    pso = {"sigma_scale": budget.sigma_scale, "n_particles": budget.n_particles, "n_iterations": budget.n_iterations}
    runs = []  # (sequence, final -2 log L / pixels, chi^2 trace, best kwargs, theta_E trace) per start
    for k in range(budget.starts):
        start = setup if k == 0 else drawn_start(setup, rng)
        seeding = start["lenscnn"].get("source_seed")
        if k > 0 and seeding:
            start = seed_source(start, image, seeding["noise_rms"], seeding["pixel_scale"], use)
        with quiet():
            sequence = _sequence(start, image, noise_map, likelihood)
            chain = sequence.fit_sequence([["PSO", pso]])
            best = sequence.best_fit()
        trace = [-2.0 * float(log_l) / pixels for log_l in chain[0][1][0]]
        path = [_agreement_value(model, sequence.param_class.args2kwargs(a)) for a in chain[0][1][1]]
        runs.append((sequence, trace[-1] if trace else math.inf, trace, best, path))
    order = sorted(range(len(runs)), key=lambda k: runs[k][1])
    kept = order[0]
    sequence, _, trace, best, path = runs[kept]
    theta = [_agreement_value(model, run[3]) for run in runs]
    settling = (trace, path)  # where (b) of the criterion looks: the last PSO stage
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
    tolerance = convergence.tolerance(network_sigma(setup, AGREEMENT_PARAMETER))
    agreeing = sum(abs(t - theta[kept]) <= tolerance for t in theta)
    agree = len(runs) < 2 or abs(theta[order[1]] - theta[kept]) <= tolerance
    sigma: dict[str, float] = {}
    if budget.mcmc_run > 0:
        mcmc = {"n_burn": budget.mcmc_burn, "n_run": budget.mcmc_run, "walkerRatio": budget.walker_ratio}
        with quiet():
            chain = sequence.fit_sequence([["MCMC", {**mcmc, "sigma_scale": 0.1, "progress": False}]])
            best = sequence.best_fit()
        sigma = mcmc_sigmas(setup, model, sequence.param_class, chain[-1][1])
    lens = kwargs_parameters(model, best, "lens")
    with quiet():
        chi2, model_image, residual = reduced_chi2(setup, image, noise_map, best, use)
    if not math.isfinite(chi2):
        raise RuntimeError("the best fit has a non-finite chi^2")
    change, moved = plateau_change(settling[0]), parameter_change(settling[1])
    settled = change <= convergence.plateau and not moved > tolerance  # NaN (no theta_E): not tested
    return FitResult(
        lens=lens,
        sigma=sigma,
        reduced_chi2=chi2,
        seconds=time.perf_counter() - begin,
        model=model_image,
        normalized_residual=residual,
        pso_chi2=trace,
        pso_theta=path,
        sky=sky_level(setup, best),
        pixels=pixels,
        mask=use,
        start_chi2=[run[1] for run in runs],
        start_theta=theta,
        kept_start=kept,
        starts_agreeing=int(agreeing),
        chi2_change=change,
        theta_change=moved,
        agree=bool(agree),
        converged=bool(agree and settled and chi2 <= convergence.max_chi2),
    )


def mcmc_sigmas(setup: Mapping[str, Any], model: LensModel, param_class: Any, samples: np.ndarray) -> dict[str, float]:
    """The standard deviation over the MCMC ``samples`` of every lens parameter (0 for those the setup
    holds fixed). Each sample is turned into lenstronomy kwargs with the constraints applied
    (``param_class.args2kwargs``), so a parameter sampled in another component (the lens centre on the
    first lens light) reads where the lens uses it."""
    values = [kwargs_parameters(model, param_class.args2kwargs(s), "lens") for s in np.asarray(samples)]
    fixed = _fixed_names(setup, model, "lens")
    return {name: 0.0 if name in fixed else float(np.std([v[name] for v in values])) for name in values[0]}


def fit_task(
    pending: FitOutcome,
    task: Mapping[str, Any],
    setup: Mapping[str, Any],
    budget: Budget,
    network_prior: bool,
    seed: int,
    convergence: Convergence | None = None,
) -> FitOutcome:
    """``pending`` (an image's :class:`FitOutcome` before its fit: its label and the network's values)
    completed by the fit of that image (``task``: ``data``, ``noise`` and optional ``mask``, see
    :func:`fit_lens_model`), in a worker process; never raises (a failure is returned as its status)."""
    try:
        result = fit_lens_model(
            task["data"],
            setup,
            budget,
            task.get("noise"),
            network_prior,
            seed,
            mask=task.get("mask"),
            convergence=convergence,
        )
    except Exception as exc:  # a fit that fails must not stop the others: reported in its row
        return replace(pending, status=f"failed: {one_line(exc, with_type=True)}")
    return replace(
        pending,
        status="ok",
        fitted=result.lens,
        fitted_sigma=result.sigma,
        reduced_chi2=result.reduced_chi2,
        seconds=result.seconds,
        converged=result.converged,
        starts_agreeing=result.starts_agreeing,
        chi2_change=result.chi2_change,
        theta_E_change=result.theta_change,
        sky=result.sky,
        model=result.model,
        residual=result.normalized_residual,
    )


def fit_all(jobs: Sequence[tuple[Any, tuple]], workers: int) -> Iterator[tuple[Any, FitOutcome]]:
    """``(key, outcome)`` of every job ``(key, arguments of fit_task)`` as it finishes: in ``workers``
    processes, or in this one for ``workers=1``."""
    if workers == 1 or len(jobs) <= 1:
        for key, arguments in jobs:
            yield key, fit_task(*arguments)
        return
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(fit_task, *arguments): key for key, arguments in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()
