"""The settings of ``lenscnn-refine``: how much fitting each image gets (:class:`Budget`), when a fit is
reported converged (:class:`Convergence`), and the options of a run over many images (:class:`RefineSettings`).

:class:`Budget` and :class:`Convergence` are checked when made: a bad value is a
:class:`lenscnn.errors.UserError` that names its config key (``fit.<name>``, ``converged.<name>``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from lenscnn.errors import UserError
from lenscnn.modelling.field import FitField

#: The share of the PSO iterations, at the end, over which :class:`Convergence` asks the chi^2 to be stable.
PLATEAU_SHARE = 0.2


@dataclass(frozen=True)
class Budget:
    """How much fitting each image gets.

    Attributes:
        n_particles, n_iterations: the PSO swarm and its steps, per start.
        sigma_scale: the swarm's initial spread in units of the starting sigmas.
        starts: PSO runs from different starts (the first at the network's means, the others at draws
            from its posterior); the one of lowest chi^2 is kept.
        light_iterations: PSO steps of a first stage that fits the lens light alone (the lens and source held at
            the network's start); the starts then fit the lens and source with that light held, and the final
            stage frees it (0, no final stage or no lens light: every stage fits every parameter).
        final_iterations: PSO steps of a final stage of the kept start (0: none).
        final_sigma_scale: the final stage's swarm spread anew around the kept start's best, in units of
            the starting sigmas.
        mcmc_burn, mcmc_run: emcee steps from the kept start (0, 0: no MCMC, uncertainties are then not
            estimated).
        walker_ratio: emcee walkers per fitted parameter.
    """

    n_particles: int = 60
    n_iterations: int = 60
    sigma_scale: float = 1.0
    starts: int = 4
    light_iterations: int = 60
    final_iterations: int = 150
    final_sigma_scale: float = 0.3
    mcmc_burn: int = 0
    mcmc_run: int = 0
    walker_ratio: int = 4

    def __post_init__(self) -> None:
        for name in ("n_particles", "n_iterations", "walker_ratio", "starts"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise UserError(f"fit.{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("mcmc_burn", "mcmc_run", "final_iterations", "light_iterations"):
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
    (c) ``max_chi2``: the reduced chi^2 (over the used pixels) is at most this;
    (d) no lens parameter ended at a bound of its sampled range (:func:`lenscnn.modelling.fitting.at_bounds`);
    (e) ``arcs``: the residual keeps one sign, at more than 5 sigma per stretch, along less than this many
        degrees of the fitted Einstein ring (:func:`lenscnn.modelling.residuals.ring_residual_span`): arcs the
        model misplaces;
    (f) ``arc_snr``: the fitted lensed source has at least this signal-to-noise ratio over the fitted pixels
        (:func:`lenscnn.modelling.lenstronomy_adapter.source_snr`): arcs too faint leave the lens unconstrained,
        whatever the chi^2;
    (g) ``network``: the fitted ``theta_E`` lies within this many of the network's sigmas of the network's
        ``theta_E`` (not tested where the network gives no sigma): two independent measurements that disagree
        beyond their errors are not both right. On 24 simulated SLACS-like lenses fitted with 40 steps per start
        it caught the one fit (a)-(f) passed that was off, 0.07" (3.4 sigma), pulled by a lens light outshining faint
        arcs; on real data, where the network's sigma can be too small, a correct fit may fail it: the fit is then
        worth a look, not wrong.

    Each criterion that fails is named in the fit's ``why``.

    A reduced chi^2 near 1 is not asked for: a smooth model leaves residuals on a real galaxy (reduced chi^2
    1.5-15 on HST ellipticals) and on a real-galaxy source, and the swarm then keeps lowering the chi^2 slowly
    by fitting the light's details while the lens parameters no longer move, so ``plateau`` is generous and
    ``max_chi2`` only catches fits that failed outright.
    """

    agree: float = 0.01
    plateau: float = 0.1
    max_chi2: float = 50.0
    arcs: float = 90.0
    arc_snr: float = 30.0
    network: float = 3.0

    def __post_init__(self) -> None:
        for name in ("agree", "plateau", "max_chi2", "arcs", "arc_snr", "network"):
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
            f"that tolerance and the reduced chi^2 fell by at most {self.plateau:g} of its value, "
            f"(c) reduced chi^2 <= {self.max_chi2:g}, (d) no lens parameter at a bound of its range, (e) no "
            f"residual of one sign at > 5 sigma along {self.arcs:g} degrees or more of the Einstein ring, (f) "
            f"the fitted arcs' S/N at least {self.arc_snr:g}, and (g) theta_E within {self.network:g} of the "
            "network's sigmas of its answer"
        )


@dataclass(frozen=True)
class RefineSettings:
    """How :func:`lenscnn.modelling.pipeline.refine_images` fits its images (``lenscnn-refine``'s options).

    Attributes:
        predictions_source: where the predictions come from (e.g. the path of ``predictions.csv``), named in
            the status of an image without one.
        budget: the fit of each image.
        convergence: when a fit is reported converged.
        sky: fit a constant sky level [counts/s/px] (lenstronomy's ``UNIFORM`` light, solved linearly).
        seed_source: start the source where the network's lens model maps the arcs
            (:func:`lenscnn.modelling.kwargs.seed_source`).
        network_prior: the network's Gaussian posterior is also a prior of the fit.
        seed: the fit of the ``k``-th image is seeded with ``seed + k``.
        workers: fits run in this many processes (1: in this one).
        fit_field: the field fitted and the neighbours masked around each lens
            (:class:`lenscnn.modelling.field.FitField`, the ``field`` keys).
    """

    predictions_source: str
    budget: Budget = field(default_factory=Budget)
    convergence: Convergence = field(default_factory=Convergence)
    sky: bool = True
    seed_source: bool = True
    network_prior: bool = False
    seed: int = 0
    workers: int = 1
    fit_field: FitField = field(default_factory=FitField)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
