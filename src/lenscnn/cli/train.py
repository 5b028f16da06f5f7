"""``lenscnn-train``: train a lens-parameter network on simulated lenses.

lenscnn-train experiment=quickstart
lenscnn-train model=resnet18 instrument=hst_ensai prior=ensai trainer=gpu
lenscnn-train -m model=fast,alexnet,resnet18       # sweep; writes a leaderboard
lenscnn-train ckpt_path=last                       # resume the newest run in place
lenscnn-train init_from=<run dir or .ckpt> seed=1  # fine-tune: start from its weights, schedule afresh
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lenscnn.cli.common import console
from lenscnn.data.normalization import TargetScaler
from lenscnn.errors import UserError, one_line
from lenscnn.io.run_dir import RunDir
from lenscnn.io.summaries import TrainingSummary
from lenscnn.models.checkpoint import load_initial_weights
from lenscnn.training.checkpoint_io import AtomicCheckpointIO
from lenscnn.training.distributed import check_sweep_launch, close_process_group, requeued_checkpoint
from lenscnn.training.loggers import build_loggers, finish_loggers
from lenscnn.training.quiet import quiet_lightning
from lenscnn.training.resume import check_training_checkpoint
from lenscnn.training.summary import error_table, prior_mean_rmse
from lenscnn.training.time_budget import TimeBudget

log = logging.getLogger(__name__)

#: ``ckpt_path`` values Lightning resolves itself (inside a multirun, where no resume rewrites them).
LIGHTNING_CKPT_NAMES = ("last", "hpc", "best", "registry")


def _instantiate(node: DictConfig, what: str, **kwargs: Any) -> Any:
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except UserError:
        raise
    except Exception as exc:  # Hydra wraps constructor errors in InstantiationException
        cause = exc.__cause__ or exc
        if isinstance(cause, UserError):
            raise cause from None
        raise UserError(f"{what}: {one_line(cause)}") from None


def build_model(node: DictConfig, datamodule: Any, scaler: TargetScaler | None = None) -> pl.LightningModule:
    """The ``model`` config with what the data fixes: targets and their moments, input
    normalisation, image size, pixel scale, the simulator config and the bands (``None`` for one)."""
    scaler = scaler or datamodule.target_scaler()
    return _instantiate(
        node,
        "model",
        targets=scaler.to_dict(),
        input_normalization=datamodule.input_normalizer().to_dict(),
        image_size=list(datamodule.image_size),
        pixel_scale=datamodule.pixel_scale,
        simulator=datamodule.simulator_config,
        bands=datamodule.bands,
    )


def build_callbacks(cfg: DictConfig | None) -> list[pl.Callback]:
    return [
        _instantiate(spec, f"callbacks.{name}") for name, spec in (cfg or {}).items() if spec and "_target_" in spec
    ]


def train(cfg: DictConfig) -> TrainingSummary:
    """Fit, test and summarise one run; return its summary (also written to ``metrics.json``)."""
    run_dir = Path(cfg.paths.output_dir)
    if cfg.train and cfg.ckpt_path and cfg.ckpt_path not in LIGHTNING_CKPT_NAMES:
        check_training_checkpoint(cfg.ckpt_path)  # before anything is built: torch's advice would not help
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))

    datamodule = _instantiate(cfg.data, "data")
    scaler = datamodule.target_scaler()
    model = build_model(cfg.model, datamodule, scaler)
    if cfg.get("init_from") and cfg.train and not cfg.ckpt_path:  # a resume restores its own weights
        log.info(
            "network weights from %s (fine-tuning: optimizer and schedule start afresh)",
            load_initial_weights(model, cfg.init_from),
        )
    loggers = build_loggers(cfg.get("logger"), run_dir)
    completed = False
    try:
        summary = fit_and_test(cfg, datamodule, model, loggers)
        completed = True
        return summary
    finally:  # also when the run fails: close wandb's run and the process group for the next job
        finish_loggers(loggers)
        close_process_group(wait=completed)


def fit_and_test(cfg: DictConfig, datamodule: Any, model: pl.LightningModule, loggers: list) -> TrainingSummary:
    """Fit (or resume) and test ``model`` with the configured trainer; write ``metrics.json``."""
    run_dir = Path(cfg.paths.output_dir)
    scaler = model.scaler
    quiet_lightning(simulated=getattr(datamodule, "simulator", None) is not None)
    trainer: pl.Trainer = _instantiate(
        cfg.trainer,
        "trainer",
        callbacks=build_callbacks(cfg.get("callbacks")),
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],  # a run killed while checkpointing keeps its last good checkpoint
    )
    check_sweep_launch(trainer)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    if cfg.train:
        try:
            ckpt_path = cfg.ckpt_path or requeued_checkpoint(run_dir)  # a requeued SLURM job continues
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except SIGTERMException:
            log.warning("SIGTERM: saved %s; resume with ckpt_path=last", RunDir(run_dir).last_checkpoint)
            raise SystemExit(128 + 15) from None
    val_score = trainer.callback_metrics.get(cfg.optimized_metric)
    summary = TrainingSummary(
        run_dir=str(run_dir),
        overrides=list(HydraConfig.get().overrides.task),
        model=OmegaConf.to_container(cfg.model.net, resolve=True),
        optimized_metric=cfg.optimized_metric,
        val={cfg.optimized_metric: None if val_score is None else float(val_score)},
        precision=str(trainer.precision),
    )
    budgets = [cb.summary for cb in trainer.callbacks if isinstance(cb, TimeBudget)]
    if budgets:
        summary.time_budget = budgets[0]
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_path:
        summary.best_checkpoint = checkpoint.best_model_path
        summary.val[cfg.optimized_metric] = float(checkpoint.best_model_score)
    if cfg.test:
        best = "best" if cfg.train and summary.best_checkpoint else None
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)[0]
        baseline = prior_mean_rmse(scaler, datamodule.test_dataloader(), trainer)
        summary.test = {k: float(v) for k, v in results.items()}
        summary.prior_mean_rmse = baseline
        summary.rmse_ratio = {n: results[f"test/rmse/{n}"] / baseline[n] for n in scaler.names}
        if trainer.is_global_zero:
            out = console()
            out.print(error_table(results, baseline, scaler.names, out.width))
    if trainer.is_global_zero:
        summary.write(RunDir(run_dir).metrics)
        log_outputs(run_dir, summary)
    return summary


def log_outputs(run_dir: Path, summary: TrainingSummary) -> None:
    """Where the run's checkpoints and metrics are (what a time budget cut, its callback said when it did)."""
    if summary.best_checkpoint:
        log.info("best checkpoint: %s", summary.best_checkpoint)
    last = RunDir(run_dir).last_checkpoint
    if last.is_file():
        log.info("last checkpoint: %s (resume with ckpt_path=%s)", last, run_dir)
    log.info("metrics: %s", RunDir(run_dir).metrics)


def task(cfg: DictConfig) -> float | None:
    """The Hydra task: train; returns the optimized metric (what a sweep minimises)."""
    return train(cfg).score


if __name__ == "__main__":
    from lenscnn.cli import entry

    entry.train()
