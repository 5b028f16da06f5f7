"""Console entry points of the apps (``lenscnn-train``, ``lenscnn-eval``, ...).

Each checks the command line and composes the config before its app module (and with it torch
and Lightning, seconds of imports) is imported: a typo'd override, a bad value of a config group
or ``--help`` answers at once. The app module ``lenscnn.cli.<app>`` provides ``task(cfg)``, the
Hydra task, run with one-line user errors (:func:`report_user_errors`);
``python -m lenscnn.cli.<app>`` runs the same entry point. ``--help`` says what the app does
(:data:`DESCRIPTIONS`) and lists only the config groups of the app's own config.
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

#: What each app does: the first lines of its ``--help``.
DESCRIPTIONS = {
    "train": "train a CNN that estimates lens parameters with uncertainties, on simulated lenses drawn\n"
    "on the fly; checkpoints, metrics and figures go into the run directory.",
    "eval": "score a checkpoint or an ensemble on a simulated test set or a catalogue of real lenses:\n"
    "metrics, predictions, calibration, plots and a report in the run directory.",
    "predict": "estimate lens parameters with uncertainties for FITS (or HDF5) images with a checkpoint,\n"
    "an ensemble or the shipped pretrained ensemble; predictions.csv in the run directory.",
    "refine": "fit lenstronomy lens models to images, starting from the network's predictions\n"
    "(lenscnn-predict); refined.csv, a report and plots in the run directory.",
    "simulate": "render simulated lenses with their true parameters (HDF5 and/or FITS) and a preview\n"
    "into the run directory.",
    "export": "write weights-only copies of trained models (to ship or share them), and fill a model\n"
    "card's metrics from lenscnn-eval's metrics.json.",
    "galaxies": "build (or check) a real-galaxy source library for the simulator, report its train/val/test\n"
    "splits and preview it.",
    "population": "infer the distribution of lens parameters over many lenses from lenscnn-predict's per-lens\n"
    "posteriors, the training prior divided out; samples, summary and plots in the run directory.",
}

#: The flags that ask Hydra for the app's help.
HELP_FLAGS = ("--help", "-h")


def launch(app: str) -> None:
    """Run app ``app`` (config ``conf/<app>.yaml``, module ``lenscnn.cli.<app>``) on ``sys.argv``."""
    prepare_app()
    check_config(app, sys.argv[1:])
    if any(arg in HELP_FLAGS for arg in sys.argv[1:]):
        # next to the other overrides: argparse takes them as one run of arguments
        where = next((k for k, arg in enumerate(sys.argv) if k and "=" in arg and not arg.startswith("-")), None)
        sys.argv.insert(where or len(sys.argv), f"hydra/help={store_help(app, sys.argv[1:])}")

    @hydra.main(version_base="1.3", config_path="../conf", config_name=app)
    @report_user_errors
    def task(cfg: DictConfig) -> Any:
        result = importlib.import_module(f"lenscnn.cli.{app}").task(cfg)
        log.info("run directory: %s", HydraConfig.get().runtime.output_dir)
        return result

    task()


def config_groups(app: str, argv: list[str]) -> dict[str, tuple[str | None, list[str]]]:
    """The config groups of app ``app``'s own config (``conf/<app>.yaml``, composed with the
    overrides in ``argv``; Hydra's ``hydra/...`` groups left out), each with the option chosen (or
    its default) and its options."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    overrides = [arg for arg in argv if not arg.startswith("-")]
    with initialize_config_module("lenscnn.conf", version_base="1.3"):
        try:
            cfg = compose(app, overrides=overrides, return_hydra_config=True)
        except Exception:  # a sweep (a,b) or a bad override: Hydra reports it; list the defaults' groups
            cfg = compose(app, return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
        choices = cfg.hydra.runtime.choices
        groups = sorted(g for g in choices if g != "hydra" and not g.startswith("hydra/"))
        return {group: (choices[group], loader.get_group_options(group, ObjectType.CONFIG)) for group in groups}


def documented_keys(app: str, chosen: dict[str, str | None]) -> str:
    """What each key of app ``app`` means: the keys of ``conf/<app>.yaml`` and of the chosen options of its
    groups that put their keys at the top level (``# @package _global_``, e.g. ``preparation``), each with
    the comment that explains it, as the files write them (usage lines and the defaults list left out)."""
    from importlib import resources

    conf = resources.files("lenscnn.conf")
    files = {f"{app}.yaml": (conf / f"{app}.yaml").read_text()}
    for group, option in chosen.items():
        path = conf / group / f"{option}.yaml"
        text = path.read_text() if option is not None and path.is_file() else ""
        if text.startswith("# @package _global_"):
            files[f"{group}/{option}.yaml"] = text
    sections = []
    for name, text in files.items():
        lines = text.splitlines()
        keys = next((k for k, line in enumerate(lines) if line[:1].isalpha() and not line.startswith("defaults:")), 0)
        sections.append(f"# conf/{name}\n" + "\n".join(lines[keys:]).strip("\n"))
    return "\n\n".join(sections)


def help_template(app: str, argv: list[str]) -> str:
    """The ``--help`` text of app ``app`` as Hydra's help template (``$CONFIG``: the composed config)."""
    groups = config_groups(app, argv)
    listed = "\n".join(f"{group}: {', '.join(options)}" for group, (_, options) in groups.items())
    text = "\n".join(
        [
            f"lenscnn-{app}: {DESCRIPTIONS[app]}",
            "",
            f"Usage: lenscnn-{app} [group=option ...] [key=value ...]",
            "",
            "== Configuration groups ==",
            "Compose your configuration from those groups (group=option)",
            "",
            listed or "(none)",
            "",
            "== Keys ==",
            "What each key means (key=value)",
            "",
            documented_keys(app, {group: chosen for group, (chosen, _) in groups.items()}),
            "",
            "== Config ==",
            "The composed config: override anything in it (foo.bar=value)",
            "",
            "",
        ]
    )
    footer = "Use --hydra-help for Hydra's own flags and groups (-m sweeps, --cfg job, hydra/launcher=...)\n"
    # escaped for Hydra's string.Template ($$) and then OmegaConf's interpolations (\${), in that order of reading
    return text.replace("$", "$$").replace("$${", "$\\${") + "$CONFIG\n" + footer


def store_help(app: str, argv: list[str]) -> str:
    """Store app ``app``'s help (:func:`help_template`) as an option of Hydra's ``hydra/help`` group;
    return its name."""
    from hydra.core.config_store import ConfigStore

    name = f"lenscnn_{app}"
    node = {"app_name": f"lenscnn-{app}", "header": "", "footer": "", "template": help_template(app, argv)}
    ConfigStore.instance().store(group="hydra/help", name=name, node=node, provider="lenscnn")
    return name


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


def population() -> None:
    """``lenscnn-population``."""
    launch("population")
