"""``lenscnn-eval``: score a checkpoint or an ensemble; metrics, predictions, plots and a report.

lenscnn-eval ckpt_path=outputs/train/runs/<run>             # its best checkpoint, fixed test set
lenscnn-eval ensemble=quickstart compare_members=true      # the ensemble against each member
lenscnn-eval ensemble=quickstart calibrate=true            # fit + store the sigma scale per target
lenscnn-eval ckpt_path=... prior=galaxy_galaxy              # robustness to another prior
lenscnn-eval ckpt_path=... dataset=lenses.h5                # a file from lenscnn-simulate

Writes into the Hydra run directory: ``metrics.json``, ``metrics.csv``, ``predictions.csv``,
``plots/*.png``, ``report.md`` (and ``comparison.{csv,md}`` with ``compare_members=true``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import matplotlib.pyplot as plt
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import Progress

from lenscnn.cli.common import check_config, load_ensemble, report_user_errors, resolve_device
from lenscnn.errors import UserError
from lenscnn.evaluation import plots
from lenscnn.evaluation.datasets import EvaluationSet, file_set, simulated_set
from lenscnn.evaluation.evaluate import (
    CURVE_LEVELS,
    Predictions,
    calibrate,
    coverage_table,
    curve,
    normalised_rmse,
    predict_set,
    score,
)
from lenscnn.evaluation.report import (
    markdown_table,
    metrics_rich_table,
    write_metrics_csv,
    write_predictions_csv,
    write_report,
)
from lenscnn.io.atomic import write_json, write_text
from lenscnn.models.checkpoint import read_checkpoint, save_checkpoint_atomic
from lenscnn.models.ensemble import Ensemble, write_calibration
from lenscnn.training.figures import send_figure
from lenscnn.training.loggers import build_loggers, finish_loggers

log = logging.getLogger(__name__)


def simulator_config(ensemble: Ensemble, cfg: DictConfig) -> dict[str, Any]:
    """The checkpoint's simulator config, with ``instrument`` / ``prior`` replaced if chosen."""
    config = ensemble.simulator_config
    if not config:
        raise UserError("the checkpoint has no simulator config; evaluate it on a file with dataset=PATH")
    for part in ("instrument", "prior"):
        if cfg.get(part) is not None:
            config[part] = OmegaConf.to_container(cfg[part], resolve=True)
    return config


def prior_name() -> str | None:
    """The ``prior=NAME`` chosen on the command line (``None``: the checkpoint's own)."""
    return HydraConfig.get().runtime.choices.get("prior") if HydraConfig.initialized() else None


def store_calibration(ensemble: Ensemble, calibration_file: Path | None, record: dict[str, Any]) -> Path:
    """Write the calibration into the single checkpoint, or next to the ensemble as JSON."""
    sources = ensemble.sources
    if len(sources) == 1:
        checkpoint = read_checkpoint(sources[0])
        checkpoint["calibration"] = record
        save_checkpoint_atomic(checkpoint, sources[0])
        return Path(sources[0])
    write_calibration(calibration_file, record, sources)
    return calibration_file


def member_label(source: str, k: int) -> str:
    """``<k>: <run directory name>/<checkpoint file>`` (short enough for a table)."""
    path = Path(source)
    run = path.parent.parent.name if path.parent.name == "checkpoints" else path.parent.name
    return f"{k}: {run}/{path.name}"


def compare_members(ensemble: Ensemble, test: Predictions) -> tuple[dict[str, Any], str]:
    """Normalised RMSE of every member and the ensemble on the same lenses; and as markdown."""
    prior_std = ensemble.reference.scaler.std
    labels = [member_label(src, k) for k, src in enumerate(ensemble.sources)]
    rows = {label: normalised_rmse(test.truth, m, prior_std) for label, m in zip(labels, test.members, strict=True)}
    best = min(rows, key=rows.get)
    ens = normalised_rmse(test.truth, test.mean, prior_std)
    result = {
        "members": rows,
        "ensemble": ens,
        "best_member": best,
        "best_member_nrmse": rows[best],
        "improvement_over_best": 1 - ens / rows[best],
    }
    table = [[label, f"{v:.4f}"] for label, v in rows.items()] + [["**ensemble**", f"**{ens:.4f}**"]]
    text = markdown_table(["model", "normalised RMSE"], table)
    text += (
        f"\n\nThe ensemble's normalised RMSE is {100 * result['improvement_over_best']:.1f}% "
        f"below its best member's ({rows[best]:.4f})."
    )
    return result, text


def make_figures(test: Predictions, calibration: dict[str, Any] | None) -> dict[str, plt.Figure]:
    names = test.names
    truth, mean = test.truth.numpy(), test.mean.numpy()
    sigma = None if test.sigma is None else test.sigma.numpy()
    figures = {
        "predicted_vs_true": plots.predicted_vs_true_figure(truth, mean, sigma, names),
        "residuals": plots.residual_histograms_figure(truth, mean, names),
    }
    if sigma is not None:
        curves = {"as predicted": curve(test)}
        if calibration is not None:
            scale = torch.tensor([calibration["sigma_scale"][n] for n in names])
            curves = {"before calibration": curve(test, 1 / scale), "after calibration": curves["as predicted"]}
        figures["calibration"] = plots.calibration_figure(CURVE_LEVELS, curves, names)
    return figures


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run one evaluation; returns the ``metrics.json`` payload."""
    run_dir = Path(cfg.paths.output_dir)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    ensemble, calibration_file = load_ensemble(cfg)
    ensemble.to(device)
    if not cfg.calibrate:
        ensemble.check_calibration_mode(cfg.mc_samples)
    if cfg.mc_samples < 0:
        raise UserError(f"mc_samples must be >= 0, got {cfg.mc_samples}")
    dataset: EvaluationSet = (
        file_set(cfg.dataset)
        if cfg.dataset
        else simulated_set(simulator_config(ensemble, cfg), "test", cfg.test_size, prior_name())
    )
    dataset.check_geometry(ensemble.image_size, ensemble.pixel_scale)
    has_sigma = ensemble.predicts_uncertainty or len(ensemble.members) > 1 or cfg.mc_samples > 0
    if cfg.calibrate and not has_sigma:
        raise UserError("calibrate=true needs uncertainties: a gaussian_nll model, an ensemble or mc_samples > 0")

    calibration = None
    with Progress(transient=True) as progress:
        if cfg.calibrate:
            ensemble.sigma_scale.fill_(1.0)
            val_set = simulated_set(simulator_config(ensemble, cfg), "val", cfg.val_size, prior_name())
            val = predict_set(ensemble, val_set, cfg.batch_size, cfg.mc_samples, progress=progress)
            scale = calibrate(val)
        test = predict_set(ensemble, dataset, cfg.batch_size, cfg.mc_samples, cfg.compare_members, progress)
    names = test.names
    if cfg.calibrate:
        before = coverage_table(test.residual, test.sigma, names)
        test.sigma = test.sigma * scale
        ensemble.sigma_scale.copy_(scale)
        calibration = {
            "sigma_scale": {n: float(s) for n, s in zip(names, scale, strict=True)},
            "fitted_on": val_set.description,
            "mc_samples": cfg.mc_samples,
            "coverage_val_before": coverage_table(val.residual, val.sigma, names),
            "coverage_val_after": coverage_table(val.residual, val.sigma * scale, names),
            "coverage_before": before,
            "coverage_after": coverage_table(test.residual, test.sigma, names),
        }

    metrics = score(test, cfg.outlier_nsigma)
    payload: dict[str, Any] = {
        "members": ensemble.sources,
        "dataset": dataset.description,
        "n": int(test.truth.shape[0]),
        "mc_samples": cfg.mc_samples,
        "outlier_nsigma": cfg.outlier_nsigma,
        "sigma_scale": {n: float(s) for n, s in zip(names, ensemble.sigma_scale.cpu(), strict=True)},
        "metrics": metrics,
        "nrmse": normalised_rmse(test.truth, test.mean, ensemble.reference.scaler.std),
    }
    if calibration:
        payload["calibration"] = calibration
    comparison_md = None
    if cfg.compare_members:
        payload["comparison"], comparison_md = compare_members(ensemble, test)

    run_dir.mkdir(parents=True, exist_ok=True)
    write_predictions_csv(run_dir / "predictions.csv", test)
    write_metrics_csv(run_dir / "metrics.csv", metrics)
    figure_files = []
    loggers = build_loggers(cfg.get("logger"), run_dir)
    if cfg.plots:
        (run_dir / "plots").mkdir(exist_ok=True)
        for key, fig in make_figures(test, calibration).items():
            fig.savefig(run_dir / "plots" / f"{key}.png", dpi=100)
            figure_files.append(f"plots/{key}.png")
            send_figure(loggers, f"eval/{key}", fig)
            plt.close(fig)
    for logger in loggers:
        logger.log_metrics(
            {f"eval/{m}/{n}": v for n, values in metrics.items() for m, v in values.items()}
            | {"eval/nrmse": payload["nrmse"]},
            step=0,
        )
        logger.save()
    finish_loggers(loggers)
    if comparison_md:
        write_text(run_dir / "comparison.md", comparison_md + "\n")
        rows = [[src, f"{v:.6f}"] for src, v in payload["comparison"]["members"].items()]
        rows.append(["ensemble", f"{payload['comparison']['ensemble']:.6f}"])
        write_text(run_dir / "comparison.csv", "model,nrmse\n" + "\n".join(",".join(r) for r in rows) + "\n")
    write_report(run_dir / "report.md", payload, figure_files, comparison_md)
    write_json(run_dir / "metrics.json", payload)
    if calibration:
        stored = store_calibration(ensemble, calibration_file, calibration)
        log.info("stored the calibration in %s", stored)
    Console().print(metrics_rich_table(metrics, f"{dataset.description}: errors in physical units"))
    if comparison_md:
        Console().print(comparison_md)
    log.info("wrote %s", run_dir / "report.md")
    return payload


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@report_user_errors
def _main(cfg: DictConfig) -> float:
    return evaluate(cfg)["nrmse"]


def main() -> None:
    check_config("eval", sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
