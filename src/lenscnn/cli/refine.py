"""``lenscnn-refine``: lenstronomy lens-model fits of images, started from the network's predictions.

lenscnn-predict input=cutouts/ hydra.run.dir=outputs/predict/mine
lenscnn-refine input=cutouts/ predictions=outputs/predict/mine                # PSO, 2 processes
lenscnn-refine input=cutouts/ predictions=... fit.mcmc_burn=100 fit.mcmc_run=200 network_prior=true
lenscnn-refine -m input=cutouts/ predictions=... shard=0/4,1/4,2/4,3/4 hydra/launcher=slurm  # by file
lenscnn-refine merge=outputs/refine/multiruns/<time>                          # collect the shards

The lens model to fit and the grid the images are prepared on are those of the model that made the
predictions (its instrument and prior, in ``model.json`` beside ``predictions.csv``); ``instrument=``
and ``prior=`` replace them. Images are prepared as for lenscnn-predict (``conf/preparation``: sky,
noise map, masks, cosmic rays, resampling; the ``psf`` file is also the fit's PSF); masked pixels do
not count in the fit. Writes ``refined.csv`` (network and fit per image), ``plots/<image>.png`` (data,
model, residual) and ``report.md`` (with the ``converged`` criterion) into the Hydra run directory. A
failed image is reported in its row and in one log line; it never stops the others. Predictions that
match none of the input images are refused. Needs lenstronomy (``pip install lenscnn[fit]``).
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from lenscnn.errors import UserError
from lenscnn.io.cutouts import image_stem
from lenscnn.io.predictions import predictions_file, read_model_record
from lenscnn.io.run_dir import RunDir
from lenscnn.modelling.configuration import FitConfiguration, check_installed
from lenscnn.modelling.field import FitField
from lenscnn.modelling.inputs import read_predictions
from lenscnn.modelling.pipeline import fitted_names, refine
from lenscnn.modelling.records import FitOutcome
from lenscnn.modelling.report import merge_shards, write_refined_csv, write_report
from lenscnn.modelling.settings import Budget, Convergence, RefineSettings
from lenscnn.plots import fit_figure, save_figure
from lenscnn.preparation.pipeline import Preparation

log = logging.getLogger(__name__)


def fit_configuration(cfg: DictConfig, preparation: Preparation) -> FitConfiguration:
    """What every image is fitted with: the network's instrument and prior (:func:`network_configs`), the
    ``shear`` and ``lens_light`` switches and the preparation's PSF."""
    instrument, prior = network_configs(cfg)
    return FitConfiguration.build(instrument, prior, preparation, shear=cfg.shear, lens_light=cfg.lens_light)


def network_configs(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The instrument and prior configs of the network that made the predictions (``model.json`` beside
    them: :func:`lenscnn.io.predictions.read_model_record`), each replaced by ``instrument=`` / ``prior=``
    when given; refused when neither says."""
    record = read_model_record(cfg.predictions) if cfg.predictions else None
    simulator = (record or {}).get("simulator") or {}
    configs = {}
    for part in ("instrument", "prior"):
        if cfg.get(part) is not None:
            configs[part] = OmegaConf.to_container(cfg[part], resolve=True)
        elif part in simulator:
            configs[part] = simulator[part]
        else:
            raise UserError(
                f"predictions={predictions_file(cfg.predictions)} do not say which model made them (no model.json "
                f"with its {part} beside them); give instrument=<name> prior=<name> of the network that made them"
            )
    if record is not None:
        replaced = [part for part in ("instrument", "prior") if cfg.get(part) is not None]
        log.info(
            "fitting with the lens model and grid of the network that made the predictions (%s)%s",
            RunDir(predictions_file(cfg.predictions).parent).model,
            f", {' and '.join(replaced)} as given" if replaced else "",
        )
    return configs["instrument"], configs["prior"]


def check_options(cfg: DictConfig) -> tuple[Preparation, RefineSettings]:
    """Every option checked before anything is read: the preparation and the fit's settings."""
    if not cfg.input or not cfg.predictions:
        raise UserError("give input=<images> and predictions=<predictions.csv or lenscnn-predict run directory>")
    if not isinstance(cfg.workers, int) or isinstance(cfg.workers, bool) or cfg.workers < 1:
        raise UserError(f"workers must be a positive integer, got {cfg.workers!r}")
    if not isinstance(cfg.fit_sky, bool):
        raise UserError(f"fit_sky must be true or false, got {cfg.fit_sky!r}")
    settings = RefineSettings(
        predictions_source=cfg.predictions,
        budget=Budget(**OmegaConf.to_container(cfg.fit, resolve=True)),
        convergence=Convergence(**OmegaConf.to_container(cfg.converged, resolve=True)),
        sky=cfg.fit_sky,
        seed_source=cfg.seed_source,
        network_prior=cfg.network_prior,
        seed=cfg.seed,
        workers=cfg.workers,
        fit_field=FitField.from_config(OmegaConf.to_container(cfg.field, resolve=True)),
    )
    return Preparation.from_config(cfg), settings


def run(cfg: DictConfig) -> Path:
    """Refine every input image (of this shard); returns the path of ``refined.csv``."""
    run_dir = Path(cfg.paths.output_dir)
    if cfg.merge:
        return merge(cfg, Path(cfg.merge))
    preparation, settings = check_options(cfg)
    check_installed(settings.budget)
    predictions = read_predictions(cfg.predictions)
    configuration = fit_configuration(cfg, preparation)
    configuration.check_predictions(predictions)
    plots = RunDir(run_dir).plots
    outcomes = refine(
        cfg.input,
        cfg.shard,
        preparation,
        predictions,
        configuration,
        settings,
        on_fitted=partial(save_fit_figure, plots, configuration.instrument.pixel_scale) if cfg.plots else None,
    )
    return write_outputs(cfg, run_dir, outcomes, fitted_names(configuration.model), settings.convergence)


def save_fit_figure(plots: Path, pixel_scale: float, outcome: FitOutcome, data: np.ndarray) -> None:
    """``plots/<image>.png`` of a fit: the ``data``, its model and normalised residual."""
    theta_E = outcome.fitted["theta_E"]
    title = f'{Path(outcome.image).name}: reduced chi^2 {outcome.reduced_chi2:.3f}, theta_E {theta_E:.4f}"'
    fig = fit_figure(data, outcome.model, outcome.residual, pixel_scale, title)
    plots.mkdir(parents=True, exist_ok=True)
    save_figure(fig, plots / f"{image_stem(outcome.image)}.png", dpi=90)


def write_outputs(
    cfg: DictConfig, run_dir: Path, outcomes: list[FitOutcome], names: list[str], convergence: Convergence
) -> Path:
    """``refined.csv`` and ``report.md`` in ``run_dir``, and the log line that says how many images were
    fitted; returns the path of ``refined.csv``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    out = RunDir(run_dir).refined
    write_refined_csv(out, outcomes, names)
    settings = {
        "fit": OmegaConf.to_container(cfg.fit),
        "network_prior": cfg.network_prior,
        "lens_light": cfg.lens_light,
        "sky": cfg.fit_sky,
        "converged": convergence.describe(),
    }
    write_report(RunDir(run_dir).report, outcomes, names, settings)
    ok = sum(o.ok for o in outcomes)
    log.info("fitted %d of %d images -> %s, %s", ok, len(outcomes), out, RunDir(run_dir).report)
    if ok == 0:  # reported, not an error: in a sweep, one shard of bad images must not stop the others
        log.warning("no image could be fitted; see the status column of %s", out)
    return out


def merge(cfg: DictConfig, directory: Path) -> Path:
    """Collect the ``refined.csv`` of every shard of a ``lenscnn-refine`` multirun into
    ``<directory>/refined.csv`` (see :func:`merge_shards` for what is refused)."""
    outcomes, names, shards = merge_shards(directory)
    if shards.missing:
        log.warning("merge=%s: shards %s of %d are not in this multirun", directory, shards.missing, shards.count)
    out = RunDir(directory).refined
    write_refined_csv(out, outcomes, names)
    settings = {
        "fit": "see the shards' .hydra/config.yaml",
        "converged": shards.converged or "see the shards' report.md",
        "shards": f"{len(shards.jobs)} of {shards.count}",
    }
    write_report(RunDir(directory).report, outcomes, names, settings)
    log.info("merged %d rows of %d shards -> %s", len(outcomes), len(shards.jobs), out)
    return out


def task(cfg: DictConfig) -> None:
    """The Hydra task."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one fit per process; numpy threads would oversubscribe
    run(cfg)


if __name__ == "__main__":
    from lenscnn.cli import entry

    entry.refine()
