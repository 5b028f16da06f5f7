"""Console entry points of the apps (``lenscnn-train``, ``lenscnn-eval``, ...).

Each checks the command line and composes the config before its app module (and with it torch
and Lightning, seconds of imports) is imported: a typo'd override, a bad value of a config group
or ``--help`` answers at once. The app module ``lenscnn.cli.<app>`` provides ``task(cfg)``, the
Hydra task, run with one-line user errors (:func:`report_user_errors`);
``python -m lenscnn.cli.<app>`` runs the same entry point.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lenscnn.cli.common import check_config, prepare_app, report_user_errors
from lenscnn.errors import UserError

log = logging.getLogger(__name__)


def launch(app: str) -> None:
    """Run app ``app`` (config ``conf/<app>.yaml``, module ``lenscnn.cli.<app>``) on ``sys.argv``."""
    prepare_app()
    check_config(app, sys.argv[1:])

    @hydra.main(version_base="1.3", config_path="../conf", config_name=app)
    @report_user_errors
    def task(cfg: DictConfig) -> Any:
        result = importlib.import_module(f"lenscnn.cli.{app}").task(cfg)
        log.info("run directory: %s", HydraConfig.get().runtime.output_dir)
        return result

    task()


def train() -> None:
    """``lenscnn-train``: rewrites ``ckpt_path=...`` into a resume of that run, then runs Hydra."""
    from lenscnn.training.distributed import launch_arguments
    from lenscnn.training.resume import resume_arguments

    try:
        sys.argv[1:] = resume_arguments(sys.argv[1:])
        sys.argv[1:] = launch_arguments(sys.argv[1:])  # DDP/SLURM ranks: one run directory, written once
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    launch("train")


def simulate() -> None:
    """``lenscnn-simulate``."""
    launch("simulate")


def evaluate() -> None:
    """``lenscnn-eval``."""
    launch("eval")


def predict() -> None:
    """``lenscnn-predict``."""
    launch("predict")


def export() -> None:
    """``lenscnn-export``."""
    launch("export")


def galaxies() -> None:
    """``lenscnn-galaxies``."""
    launch("galaxies")


def refine() -> None:
    """``lenscnn-refine``."""
    launch("refine")
