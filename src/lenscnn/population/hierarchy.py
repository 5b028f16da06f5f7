"""Hierarchical inference of a lens population from per-lens network posteriors.

A network trained on lenses drawn from the interim prior ``pi(theta)`` returns for lens ``i`` a posterior
``p(theta | d_i) ~ L(d_i | theta) pi(theta)``, here Gaussian per target (mean and calibrated sigma of
``predictions.csv``). For a population ``p(theta | Omega)`` with hyperparameters ``Omega``, the likelihood of
the data is (Hogg et al. 2010; Wagner-Carena et al. 2021, eq. 5)::

    p({d} | Omega) ~ prod_i  (1/K) sum_k  p(theta_ik | Omega) / pi(theta_ik),    theta_ik ~ p(theta | d_i)

with ``K`` posterior samples per lens (the same samples for every ``Omega``: a smooth likelihood). The
interim prior is the model's own training prior, drawn with :class:`lenscnn.sim.prior.Prior` from its
``model.json`` and tabulated per target (:class:`InterimPrior`); samples outside its support get no weight,
and the population is normalised over that support (the reweighting cannot see beyond it).

Population models per target (:class:`TargetPopulation`): ``normal`` (mean, scatter) and ``truncated_normal``
(mean, scatter within ``[low, high]``); each hyperparameter has a uniform hyperprior over a stated range. The
hyperparameter posterior is sampled with emcee's affine-invariant ensemble (vectorised over walkers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor

from lenscnn.errors import UserError

#: Population distributions a target may follow.
DISTRIBUTIONS = ("normal", "truncated_normal")
#: Draws of the training prior tabulated into the interim density, and the number of histogram bins.
INTERIM_DRAWS = 1_000_000
INTERIM_BINS = 400


@dataclass(frozen=True)
class InterimPrior:
    """The training prior's marginal density of one target, tabulated from draws: ``edges`` (bins+1,) and
    ``density`` (bins,) [1/unit], zero outside ``[edges[0], edges[-1]]`` (the training support)."""

    edges: np.ndarray
    density: np.ndarray

    @classmethod
    def from_draws(cls, draws: np.ndarray, bins: int = INTERIM_BINS) -> InterimPrior:
        """The histogram density of ``draws`` over their range (a constant target is refused)."""
        low, high = float(np.min(draws)), float(np.max(draws))
        if not high > low:
            raise UserError(f"the training prior holds this target fixed at {low:g}: it has no population to infer")
        density, edges = np.histogram(draws, bins=bins, range=(low, high), density=True)
        return cls(edges, density)

    @property
    def support(self) -> tuple[float, float]:
        return float(self.edges[0]), float(self.edges[-1])

    def log_density(self, theta: np.ndarray) -> np.ndarray:
        """``log pi(theta)``, ``-inf`` outside the support or in an empty bin."""
        index = np.clip(np.searchsorted(self.edges, theta, side="right") - 1, 0, len(self.density) - 1)
        inside = (theta >= self.edges[0]) & (theta <= self.edges[-1])
        with np.errstate(divide="ignore"):
            return np.where(inside, np.log(self.density[index]), -np.inf)


@dataclass(frozen=True)
class TargetPopulation:
    """The population of one target: ``dist`` (:data:`DISTRIBUTIONS`) with a mean and a scatter (standard
    deviation) drawn uniformly from ``mean_range`` and ``scatter_range`` [the target's unit]; a
    ``truncated_normal`` is truncated to ``[low, high]``, and both to the training support."""

    target: str
    dist: str
    mean_range: tuple[float, float]
    scatter_range: tuple[float, float]
    low: float = -math.inf
    high: float = math.inf

    @classmethod
    def from_config(cls, target: str, spec: Mapping) -> TargetPopulation:
        """From ``{dist, mean: [lo, hi], scatter: [lo, hi][, low, high]}``, checked."""
        spec = dict(spec)
        dist = spec.pop("dist", "normal")
        if dist not in DISTRIBUTIONS:
            raise UserError(f"population.{target}.dist={dist!r}: choose one of {list(DISTRIBUTIONS)}")
        allowed = {"mean", "scatter"} | ({"low", "high"} if dist == "truncated_normal" else set())
        unknown = sorted(set(spec) - allowed)
        if unknown or not {"mean", "scatter"} <= set(spec):
            raise UserError(
                f"population.{target}: give mean: [low, high] and scatter: [low, high] (keys {sorted(allowed)})"
            )
        ranges = {}
        for key in ("mean", "scatter"):
            value = spec[key]
            if not isinstance(value, Sequence) or len(value) != 2 or not all(_finite(v) for v in value):
                raise UserError(f"population.{target}.{key}={value!r}: give the hyperprior's range [low, high]")
            if not value[0] < value[1]:
                raise UserError(f"population.{target}.{key}={list(value)}: low must be below high")
            ranges[key] = (float(value[0]), float(value[1]))
        if ranges["scatter"][0] <= 0:
            raise UserError(f"population.{target}.scatter={list(ranges['scatter'])}: a scatter is > 0")
        low, high = float(spec.get("low", -math.inf)), float(spec.get("high", math.inf))
        if not low < high:
            raise UserError(f"population.{target}: low={low:g} must be below high={high:g}")
        return cls(target, dist, ranges["mean"], ranges["scatter"], low, high)

    @property
    def hyperparameters(self) -> list[str]:
        return [f"{self.target}.mean", f"{self.target}.scatter"]

    def bounds(self, interim: InterimPrior) -> tuple[float, float]:
        """Where the population lives: its truncation within the training support."""
        low, high = interim.support
        return max(low, self.low), min(high, self.high)

    def check_support(self, interim: InterimPrior) -> None:
        """Refuse a population the reweighting cannot reach: a mean range or truncation outside the training
        support of the target (the network's posteriors carry no information there)."""
        low, high = interim.support
        slack = interim.edges[1] - interim.edges[0]  # the tabulated support ends at the extreme draws
        low, high = low - slack, high + slack
        outside = [f"mean {list(self.mean_range)}"] if self.mean_range[0] < low or self.mean_range[1] > high else []
        outside += [f"low={self.low:g}"] if math.isfinite(self.low) and self.low < low else []
        outside += [f"high={self.high:g}"] if math.isfinite(self.high) and self.high > high else []
        if outside:
            raise UserError(
                f"population.{self.target}: {', '.join(outside)} reaches outside the training prior's support "
                f"[{interim.support[0]:.4g}, {interim.support[1]:.4g}]: the reweighting of the network's posteriors "
                "cannot reach there; keep the population inside it"
            )

    def log_density(self, theta: Tensor, mean: Tensor, scatter: Tensor, bounds: tuple[float, float]) -> Tensor:
        """``log p(theta | mean, scatter)`` normalised over ``bounds``: ``theta`` (N, K) against the walkers'
        ``mean`` and ``scatter`` (W,) gives (W, N, K), ``-inf`` outside ``bounds``."""
        m, s = mean[:, None, None], scatter[:, None, None]
        z = (theta[None] - m) / s
        mass = torch.special.ndtr((bounds[1] - mean) / scatter) - torch.special.ndtr((bounds[0] - mean) / scatter)
        out = -0.5 * z * z - torch.log(s) - torch.log(mass)[:, None, None] - 0.5 * math.log(2 * math.pi)
        inside = (theta >= bounds[0]) & (theta <= bounds[1])
        return out.masked_fill(~inside[None], -math.inf)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Hierarchy:
    """The hierarchical likelihood of a population (``populations`` per target) given per-lens posterior
    ``samples[target]`` (N, K) and their ``log_interim[target]`` (N, K), held as float32 tensors (the sums
    over lenses in float64): one evaluation for 32 walkers, 1,000 lenses and 128 samples each takes ~20 ms
    on one CPU core."""

    populations: tuple[TargetPopulation, ...]
    samples: Mapping[str, Tensor]
    log_interim: Mapping[str, Tensor]
    bounds: Mapping[str, tuple[float, float]]
    kept: np.ndarray

    @classmethod
    def build(
        cls,
        populations: Sequence[TargetPopulation],
        means: Mapping[str, np.ndarray],
        sigmas: Mapping[str, np.ndarray],
        interim: Mapping[str, InterimPrior],
        samples_per_lens: int,
        seed: int = 0,
    ) -> Hierarchy:
        """Draw ``samples_per_lens`` samples of each lens's Gaussian posterior (``means``, ``sigmas`` per
        target, (N,)), with a fixed ``seed`` (the same samples for every hyperparameter). A lens none of whose
        samples lies where the population lives (``kept`` False: a posterior outside the training support)
        carries no information on it and is left out."""
        rng = np.random.default_rng(seed)
        samples, log_interim, bounds = {}, {}, {}
        kept = np.ones(len(next(iter(means.values()))), dtype=bool)
        for population in populations:
            t = population.target
            population.check_support(interim[t])
            draws = rng.standard_normal((len(means[t]), samples_per_lens))
            samples[t] = np.asarray(means[t], float)[:, None] + np.asarray(sigmas[t], float)[:, None] * draws
            log_interim[t] = interim[t].log_density(samples[t])
            bounds[t] = population.bounds(interim[t])
            inside = np.isfinite(log_interim[t]) & (samples[t] >= bounds[t][0]) & (samples[t] <= bounds[t][1])
            kept &= inside.any(axis=1)
        as_tensor = partial(torch.as_tensor, dtype=torch.float32)
        samples = {t: as_tensor(v[kept]) for t, v in samples.items()}
        log_interim = {t: as_tensor(v[kept]) for t, v in log_interim.items()}
        return cls(tuple(populations), samples, log_interim, bounds, kept)

    @property
    def names(self) -> list[str]:
        return [name for p in self.populations for name in p.hyperparameters]

    @property
    def ranges(self) -> np.ndarray:
        """(D, 2): the uniform hyperprior's range of each hyperparameter."""
        return np.array([r for p in self.populations for r in (p.mean_range, p.scatter_range)])

    @property
    def samples_per_lens(self) -> int:
        return next(iter(self.samples.values())).shape[1]

    def log_weights(self, omega: np.ndarray) -> Tensor:
        """``log p(theta_ik | Omega) - log pi(theta_ik)`` summed over targets: (W, N, K) for ``omega`` (W, D);
        ``-inf`` where a sample lies outside the training support."""
        omega = torch.as_tensor(omega, dtype=torch.float32)
        total = torch.zeros(())
        for j, population in enumerate(self.populations):
            t = population.target
            log_p = population.log_density(self.samples[t], omega[:, 2 * j], omega[:, 2 * j + 1], self.bounds[t])
            total = total + (log_p - self.log_interim[t][None]).nan_to_num(nan=-math.inf, posinf=-math.inf)
        return total

    def log_likelihood(self, omega: np.ndarray) -> np.ndarray:
        """``log p({d} | Omega)`` up to a constant, per walker (W,): per lens the log of the mean importance
        weight over its samples, summed over lenses (a lens no sample of which the population reaches adds
        ``-inf``)."""
        per_lens = torch.logsumexp(self.log_weights(omega), dim=2).double() - math.log(self.samples_per_lens)
        return per_lens.sum(dim=1).numpy()

    def log_posterior(self, omega: np.ndarray) -> np.ndarray:
        """The hyperparameters' log posterior (up to a constant) for walkers ``omega`` (W, D): the uniform
        hyperpriors times :meth:`log_likelihood`."""
        omega = np.atleast_2d(omega)
        ranges = self.ranges
        inside = np.all((omega >= ranges[:, 0]) & (omega <= ranges[:, 1]), axis=1)
        out = np.full(len(omega), -np.inf)
        if inside.any():
            out[inside] = self.log_likelihood(omega[inside])
        return out

    def normalised_weights(self, omega: np.ndarray) -> Tensor:
        """Each lens's importance weights at ``omega`` (D,), summing to 1 over its samples: (N, K)."""
        log_w = self.log_weights(np.asarray(omega)[None])[0]
        return torch.softmax(log_w, dim=1).nan_to_num(0.0)

    def shrunk(self, omega: np.ndarray) -> dict[str, np.ndarray]:
        """Each lens's posterior mean given the population at ``omega`` (D,): the network's samples
        reweighted by ``p(theta | Omega) / pi(theta)`` (the shrinkage toward the population)."""
        w = self.normalised_weights(omega)
        return {p.target: (w * self.samples[p.target]).sum(dim=1).double().numpy() for p in self.populations}

    def effective_samples(self, omega: np.ndarray) -> np.ndarray:
        """Per lens, the importance sampling's effective number of samples at ``omega`` (D,) (Kish's)."""
        w = self.normalised_weights(omega).double()
        return (1.0 / (w**2).sum(dim=1).clamp_min(1e-300)).numpy()


def starting_point(hierarchy: Hierarchy) -> np.ndarray:
    """Where the walkers start (D,): per target the mean of the lenses' posterior means and the scatter of
    those means less their mean variance (the naive moments), moved into the hyperprior's range."""
    start = []
    for population in hierarchy.populations:
        samples = hierarchy.samples[population.target].double()
        means, variances = samples.mean(dim=1), samples.var(dim=1)
        start += [float(means.mean()), math.sqrt(max(float(means.var() - variances.mean()), 0.0))]
    ranges = hierarchy.ranges
    inner = 0.02 * (ranges[:, 1] - ranges[:, 0])
    return np.clip(start, ranges[:, 0] + inner, ranges[:, 1] - inner)


def sample_hyperparameters(
    hierarchy: Hierarchy,
    walkers: int,
    steps: int,
    burn: int,
    seed: int = 0,
    on_step: Callable[[], None] | None = None,
) -> np.ndarray:
    """emcee's affine-invariant ensemble sampler on :meth:`Hierarchy.log_posterior` (vectorised over walkers),
    the ``walkers`` started in a small ball around :func:`starting_point`; ``steps`` steps of which the first
    ``burn`` are discarded; returns the flattened chain (S, D). ``seed`` makes the chain reproducible;
    ``on_step`` is called after every step (progress)."""
    import emcee

    ranges = hierarchy.ranges
    rng = np.random.default_rng(seed)
    ball = 0.01 * (ranges[:, 1] - ranges[:, 0]) * rng.uniform(-1, 1, (walkers, len(ranges)))
    start = np.clip(starting_point(hierarchy) + ball, ranges[:, 0], ranges[:, 1])
    sampler = emcee.EnsembleSampler(walkers, len(ranges), hierarchy.log_posterior, vectorize=True)
    sampler.random_state = np.random.RandomState(seed).get_state()
    for _ in sampler.sample(start, iterations=steps):
        if on_step is not None:
            on_step()
    return sampler.get_chain(discard=burn, flat=True)
