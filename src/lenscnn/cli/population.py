"""``lenscnn-population``: hierarchical inference of a lens population from lenscnn's per-lens posteriors.

lenscnn-population predictions=outputs/predict/mine                  # theta_E ~ normal(mean, scatter)
lenscnn-population predictions=[run1,run2] population=epl             # and the EPL slope gamma
lenscnn-population predictions=... population.theta_E.mean=[1.0,1.5]  # a narrower hyperprior

Reads each ``predictions.csv`` with the ``model.json`` of the model that made it (one model for all), draws the
training prior from that model's config, divides it out of every lens's Gaussian posterior by importance
weighting and samples the hyperparameters of the population stated in ``population`` with emcee
(:mod:`lenscnn.population.hierarchy`). Writes ``samples.csv``, ``summary.csv``, ``lenses.csv``, ``report.md``,
``corner.png`` and ``shrinkage.png`` into the run directory (:mod:`lenscnn.population.report`).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lenscnn.cli.common import console
from lenscnn.errors import UserError
from lenscnn.metrics.tables import markdown_table
from lenscnn.population.hierarchy import Hierarchy, TargetPopulation, sample_hyperparameters
from lenscnn.population.lenses import interim_priors, read_lenses
from lenscnn.population.report import SUMMARY_COLUMNS, PopulationResult, write_outputs
from lenscnn.progress import progress

log = logging.getLogger(__name__)


def check_options(cfg: DictConfig) -> tuple[list[str], list[TargetPopulation]]:
    """The predictions named, the population model per target and the sampler's numbers, checked before
    anything is read."""
    missing = [name for name in ("emcee", "corner") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"lenscnn-population needs {' and '.join(missing)}: pip install 'lenscnn[population]'")
    predictions = cfg.predictions
    paths = (
        [str(p) for p in predictions] if OmegaConf.is_list(predictions) else [str(predictions)] if predictions else []
    )
    spec = OmegaConf.to_container(cfg.population, resolve=True) or {}
    if not spec:
        raise UserError("population: no target; choose a population model (population=theta_E|epl) or give its keys")
    populations = [TargetPopulation.from_config(target, values or {}) for target, values in spec.items()]
    for key in ("samples_per_lens", "sampler.walkers", "sampler.steps"):
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{key}={value!r}: give an integer >= 1")
    walkers, burn = cfg.sampler.walkers, cfg.sampler.burn
    if walkers < 2 * 2 * len(populations):
        raise UserError(
            f"sampler.walkers={walkers}: emcee needs at least twice the {2 * len(populations)} hyperparameters"
        )
    if not isinstance(burn, int) or isinstance(burn, bool) or not 0 <= burn < cfg.sampler.steps:
        raise UserError(f"sampler.burn={burn!r}: give an integer in [0, sampler.steps)")
    return paths, populations


def run(cfg: DictConfig) -> PopulationResult:
    """Infer the population; write the outputs; returns the result."""
    paths, populations = check_options(cfg)
    targets = [p.target for p in populations]
    lenses = read_lenses(paths, targets, keep_flagged=cfg.keep_flagged)
    interim = interim_priors(lenses.model, targets)
    hierarchy = Hierarchy.build(populations, lenses.means, lenses.sigmas, interim, cfg.samples_per_lens, cfg.seed)
    log.info("%d lenses of %s: sampling %s", len(lenses), ", ".join(paths), ", ".join(hierarchy.names))
    begin = time.perf_counter()
    sampler = cfg.sampler
    with progress("sampling", total=sampler.steps, unit="steps", logger=log) as bar:
        samples = sample_hyperparameters(
            hierarchy, sampler.walkers, sampler.steps, sampler.burn, cfg.seed, on_step=lambda: bar.advance(1)
        )
    result = PopulationResult(lenses, hierarchy, samples, time.perf_counter() - begin)
    written = write_outputs(Path(cfg.paths.output_dir), result, cfg.plots)
    out = console()
    rows = [[r[0], *(f"{v:.4g}" for v in r[1:])] for r in result.summary_rows()]
    out.print(markdown_table(SUMMARY_COLUMNS, rows))
    log.info("%d posterior samples in %.1f s -> %s", len(samples), result.seconds, ", ".join(p.name for p in written))
    return result


def task(cfg: DictConfig) -> None:
    """The Hydra task."""
    run(cfg)


if __name__ == "__main__":
    from lenscnn.cli import entry

    entry.population()
