"""``lenscnn-eval``: score a checkpoint or an ensemble; metrics, predictions, plots and a report.

lenscnn-eval ckpt_path=outputs/train/runs/<run>             # its best checkpoint, fixed test set
lenscnn-eval ensemble=quickstart compare_members=true      # the ensemble against each member
lenscnn-eval ensemble=quickstart calibrate=true            # fit + store the sigma calibration per target
lenscnn-eval ckpt_path=... prior=galaxy_galaxy              # robustness to another prior
lenscnn-eval ckpt_path=... dataset=lenses.h5                # a file from lenscnn-simulate
lenscnn-eval ensemble=quickstart symmetries=8              # average over each image's 8 flips/rotations
lenscnn-eval catalog=slacs_hst                              # real lenses with references; no model: the pretrained
lenscnn-eval catalog.references=refs.csv hdu=SCI ckpt_path=...   # your own catalogue (:mod:`lenscnn.cli.eval_catalog`)

Writes into the Hydra run directory: ``metrics.json``, ``metrics.csv``, ``predictions.csv``,
``plots/*.png``, ``report.md`` (and ``comparison.{csv,md}`` with ``compare_members=true``); on a
catalogue the same files, with the errors against the references and their z-scores.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lenscnn.cli.common import console
from lenscnn.cli.inference import InferenceOptions, open_model
from lenscnn.errors import UserError
from lenscnn.evaluation.catalog import CatalogSpec
from lenscnn.evaluation.datasets import file_set, simulated_set
from lenscnn.evaluation.pipeline import evaluate
from lenscnn.evaluation.report import evaluation_figures, write_outputs
from lenscnn.io.run_dir import RunDir
from lenscnn.io.summaries import CatalogSummary, EvaluationSummary
from lenscnn.metrics.tables import MetricsTable
from lenscnn.models.calibration_record import store_calibration
from lenscnn.models.ensemble import Ensemble
from lenscnn.training.figures import send_figure
from lenscnn.training.loggers import build_loggers, finish_loggers

log = logging.getLogger(__name__)


def evaluation_simulator(ensemble: Ensemble, cfg: DictConfig) -> dict[str, Any]:
    """The simulator config of the evaluation sets: the checkpoint's (:attr:`Ensemble.simulator_config`), with
    ``instrument`` / ``prior`` / ``observation`` replaced where chosen."""
    config = ensemble.simulator_config
    if not config:
        raise UserError("the checkpoint has no simulator config; evaluate it on a file with dataset=PATH")
    for part in ("instrument", "prior", "observation"):
        if cfg.get(part) is not None:
            config[part] = OmegaConf.to_container(cfg[part], resolve=True)
    return config


def prior_name() -> str | None:
    """The ``prior=NAME`` (and ``observation=NAME``) chosen on the command line (``None``: the checkpoint's own)."""
    if not HydraConfig.initialized():
        return None
    choices = HydraConfig.get().runtime.choices
    prior, observation = choices.get("prior"), choices.get("observation")
    if observation is None:
        return prior
    return f"{prior or 'as trained'}, observation {observation}"


def log_to_loggers(
    cfg: DictConfig,
    run_dir: Path,
    metrics: dict[str, dict[str, Any]],
    nrmse: float | None,
    figures: dict[str, Any],
) -> None:
    """The metrics (``eval/<metric>/<target>``, ``eval/nrmse``; missing ones left out) and figures to
    the ``logger`` group."""
    loggers = build_loggers(cfg.get("logger"), run_dir)
    try:
        for key, fig in figures.items():
            send_figure(loggers, f"eval/{key}", fig)
        scalars = {f"eval/{m}/{n}": v for n, values in metrics.items() for m, v in values.items() if v is not None}
        if nrmse is not None:
            scalars["eval/nrmse"] = nrmse
        for logger in loggers:
            logger.log_metrics(scalars, step=0)
            logger.save()
    finally:
        finish_loggers(loggers)


def run_catalog(cfg: DictConfig, spec: CatalogSpec) -> CatalogSummary:
    """Evaluate the model ``cfg`` names (the shipped pretrained ensemble if none) on the real-lens
    catalogue ``spec``; write the outputs; returns ``metrics.json``'s content. Refused (after
    writing ``predictions.csv``) when no cutout could be predicted."""
    # the preparation pipeline (astropy, L.A.Cosmic) only when a catalogue is evaluated
    from lenscnn.cli.eval_catalog import catalog_evaluation, print_tables
    from lenscnn.evaluation.catalog_report import catalog_figure, write_catalog_outputs

    run_dir = Path(cfg.paths.output_dir)
    result = catalog_evaluation(cfg, spec)
    summary = result.summary
    figures = {"catalog": catalog_figure(result)} if cfg.plots and summary.n_ok else {}
    log_to_loggers(cfg, run_dir, result.metrics, summary.nrmse, figures)
    write_catalog_outputs(run_dir, result, figures.get("catalog"))
    if not summary.n_ok:
        raise UserError(f"none of the {summary.n} cutouts could be predicted; {RunDir(run_dir).predictions} says why")
    print_tables(result)
    log.info(
        "scored %d of %d lenses (%d flagged, %d failed) -> %s",
        summary.n_ok,
        summary.n,
        summary.n_flagged,
        summary.n_failed,
        RunDir(run_dir).report,
    )
    return summary


def run(cfg: DictConfig) -> EvaluationSummary | CatalogSummary:
    """Evaluate the model ``cfg`` names on its data (a real-lens catalogue when ``catalog.references``
    is set: :func:`run_catalog`); write the outputs; returns ``metrics.json``'s content."""
    spec = CatalogSpec.from_config(cfg.get("catalog"))
    if spec is not None:
        return run_catalog(cfg, spec)
    run_dir = Path(cfg.paths.output_dir)
    options = InferenceOptions.from_config(cfg)
    model = open_model(cfg, options, calibrating=cfg.calibrate)
    ensemble = model.ensemble
    dataset = (
        file_set(cfg.dataset)
        if cfg.dataset
        else simulated_set(evaluation_simulator(ensemble, cfg), "test", cfg.test_size, prior_name())
    )
    val_set = (
        simulated_set(evaluation_simulator(ensemble, cfg), "val", cfg.val_size, prior_name()) if cfg.calibrate else None
    )
    result = evaluate(
        ensemble,
        dataset,
        val_set=val_set,
        batch_size=options.batch_size,
        mc_samples=options.mc_samples,
        compare=cfg.compare_members,
        outlier_nsigma=cfg.outlier_nsigma,
        show_progress=True,
        symmetries=model.symmetries,
    )
    figures = evaluation_figures(result.test, result.calibration) if cfg.plots else {}
    log_to_loggers(cfg, run_dir, result.metrics, result.summary.nrmse, figures)
    write_outputs(run_dir, result, figures)
    if result.calibration:
        stored = store_calibration(ensemble, result.calibration, model.calibration_file)
        log.info("stored the calibration in %s", stored)
    out = console()
    out.print(MetricsTable(result.metrics).rich(f"{dataset.description}: errors in physical units", out.width))
    if result.comparison_md:
        out.print(result.comparison_md)
    log.info("wrote %s", RunDir(run_dir).report)
    return result.summary


def task(cfg: DictConfig) -> float:
    """The Hydra task: evaluate; returns ``nrmse`` (what a sweep minimises; ``None`` on a catalogue
    without any reference predicted)."""
    return run(cfg).nrmse


if __name__ == "__main__":
    from lenscnn.cli import entry

    entry.evaluate()
