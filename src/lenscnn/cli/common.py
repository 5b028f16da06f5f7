"""Shared behaviour of the entry points: set-up, one-line user errors, config checks (opening a model:
:mod:`lenscnn.cli.inference`)."""

from __future__ import annotations

import difflib
import functools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lenscnn import pretrained
from lenscnn.cli import run_dirs
from lenscnn.errors import UserError
from lenscnn.training import precision

F = TypeVar("F", bound=Callable[..., Any])

#: Width of rich tables when the output is not a terminal (a log file, ``| tee``, CI): wide
#: enough that no column is cut.
PIPE_WIDTH = 200


def prepare_app() -> None:
    """What every command-line app does first: matplotlib's non-interactive Agg backend (figures
    are only written to files), and the config resolvers, before any config is composed.
    matplotlib itself is imported only by the apps that draw (a fast command line)."""
    if "matplotlib" in sys.modules:
        sys.modules["matplotlib"].use("Agg")
    else:
        os.environ["MPLBACKEND"] = "Agg"
    register_resolvers()


def register_resolvers() -> None:
    """``${lenscnn_pretrained:<name>}`` (``conf/ensemble/pretrained.yaml``), ``${lenscnn_run_dir:...}``
    (``conf/hydra/default.yaml``), ``${lenscnn_cpu_precision:}`` (``conf/trainer/cpu.yaml``) and
    ``${lenscnn_checkout:}`` (``conf/catalog/slacs_hst.yaml``)."""
    from omegaconf import OmegaConf

    pretrained.register_resolver()
    run_dirs.register_resolver()
    precision.register_resolver()
    if not OmegaConf.has_resolver("lenscnn_checkout"):
        OmegaConf.register_new_resolver("lenscnn_checkout", source_checkout)


def source_checkout() -> str:
    """The root of the source checkout lenscnn runs from (the directory of its ``pyproject.toml``), so shipped
    configs can name data beside the repository from any working directory; else the working directory."""
    root = Path(__file__).resolve().parents[3]
    return str(root if (root / "pyproject.toml").is_file() else Path.cwd())


def console() -> Any:
    """A rich console for tables: the terminal's width (or ``$COLUMNS``), or :data:`PIPE_WIDTH` when
    stdout is not a terminal. Tables given its ``width`` transpose rather than cut when too wide."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=PIPE_WIDTH)


def report_user_errors(task: F) -> F:
    """Turn a :class:`UserError` raised by ``task`` into one line on stderr and exit code 2; the
    run directory is removed if the run wrote nothing into it."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            remove_unused_run_dir()
            raise SystemExit(2) from None

    return wrapper  # type: ignore[return-value]


def remove_unused_run_dir() -> None:
    """Remove the current Hydra run's directory if this process created it and nothing but Hydra's
    own files are in it (:func:`lenscnn.cli.run_dirs.remove_if_unused`)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        run_dirs.remove_if_unused(HydraConfig.get().runtime.output_dir)


def check_config(config_name: str, argv: list[str]) -> None:
    """Compose ``config_name`` with the command-line overrides before Hydra runs the app, so a
    typo, an unknown option or a wrong type is reported as one line (exit 2) instead of Hydra's
    multi-line report. Multirun sweeps and Hydra's own flags are left to Hydra."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if any(a.startswith("-") for a in argv):  # -m/--multirun, --cfg, --help, ...: Hydra's business
        return
    try:
        with initialize_config_module("lenscnn.conf", version_base="1.3"):
            compose(config_name, overrides=list(argv), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[0]
        options = [line for line in lines if line.startswith("Available options")]
        if options:
            listed = lines[lines.index(options[0]) + 1 :]
            listed = listed[: listed.index("Config search path:")] if "Config search path:" in listed else listed
            choices = ", ".join(listed)
            detail = f"{detail} Available: {choices}"
        elif (unknown := re.match(r"Could not override '([^']+)'", detail)) is not None:
            detail = f"no config key {unknown.group(1)!r}" + did_you_mean(config_name, unknown.group(1))
        elif len(lines) > 1 and "full_key" not in lines[1]:
            detail = f"{detail} {lines[1]}"
        print(f"error: {detail}", file=sys.stderr)
        raise SystemExit(2) from None


def did_you_mean(config_name: str, key: str) -> str:
    """``"; did you mean 'model=...'?"`` for an override key close to a key of the composed config
    (at the same level), else ``"; append a new key with +<key>=..."``."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    parent, _, leaf = key.rpartition(".")
    with initialize_config_module("lenscnn.conf", version_base="1.3"):
        cfg = compose(config_name, return_hydra_config=False)
    node = OmegaConf.select(cfg, parent) if parent else cfg
    keys = [str(k) for k in node] if OmegaConf.is_dict(node) else []
    close = difflib.get_close_matches(leaf, keys, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {'.'.join(filter(None, (parent, close[0])))!r}?"
    return f"; append a new key with +{key}=..."
