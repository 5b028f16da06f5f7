"""Experiment loggers that resume into the same run (same CSV file, TensorBoard version, wandb id)."""

from __future__ import annotations

import csv
import hashlib
import logging
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

log = logging.getLogger(__name__)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is continued, not deleted."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))

    def _check_log_dir_exists(self) -> None:
        return None


class ResumableCSVLogger(CSVLogger):
    """:class:`CSVLogger` that appends to the run's ``metrics.csv`` when a run is resumed."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def wandb_api_key_configured() -> bool:
    """True if ``WANDB_API_KEY`` is set or ``~/.netrc`` holds a login for api.wandb.ai."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def run_id(run_dir: str | Path) -> str:
    """A stable id for a run directory: the same run resumed keeps the same id."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def build_loggers(cfg: Mapping[str, Any] | None, run_dir: str | Path) -> list[Logger]:
    """Instantiate the ``logger`` config group; wandb gets the run's stable id and, unless
    an API key is configured (or ``offline`` is set explicitly), runs offline."""
    loggers: list[Logger] = []
    for name, spec in (cfg or {}).items():
        if not spec or "_target_" not in spec:
            continue
        extra: dict[str, Any] = {}
        if spec["_target_"].endswith("WandbLogger"):
            extra["id"] = spec.get("id") or run_id(run_dir)
            if spec.get("offline") is None:
                extra["offline"] = not wandb_api_key_configured()
                if extra["offline"]:
                    log.info("wandb: no API key configured, logging offline (sync later with `wandb sync`)")
        logger = instantiate(spec, **extra)
        loggers.append(logger)
        log.info("logger %s -> %s", name, getattr(logger, "log_dir", None) or getattr(logger, "save_dir", ""))
    return loggers


def finish_loggers(loggers: list[Logger]) -> None:
    """Close the runs of loggers that keep one open (wandb), so the next job of a sweep starts its own."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()


__all__ = ["ResumableCSVLogger", "WandbLogger", "build_loggers", "finish_loggers", "run_id", "wandb_api_key_configured"]
