"""Shared behaviour of the entry points: one-line user errors and atomic outputs."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from lenscnn.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])


def report_user_errors(task: F) -> F:
    """Turn a :class:`UserError` raised by ``task`` into one line on stderr and exit code 2."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; move it onto ``path`` only if the block succeeds.

    Readers never see a half-written file and an existing ``path`` survives a failure.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
        elif len(lines) > 1 and "full_key" not in lines[1]:
            detail = f"{detail} {lines[1]}"
        print(f"error: {detail}", file=sys.stderr)
        raise SystemExit(2) from None
