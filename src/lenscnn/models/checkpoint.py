"""Loading trained models safely, and the calibration stored with them.

Checkpoints are read with ``torch.load(..., weights_only=True)``: only tensors and plain
containers are unpickled, never arbitrary Python objects, so a checkpoint from an untrusted
source cannot run code. A model is rebuilt from its hyperparameters (backbone chosen by name
from :data:`lenscnn.models.BACKBONES`) and its ``state_dict``; that is all a file needs, so a
Lightning checkpoint and a weights-only export (:func:`export_weights`) load alike.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lenscnn.errors import UserError
from lenscnn.io.atomic import atomic_path
from lenscnn.models.regressor import LensRegressor

#: Keys a usable checkpoint has.
REQUIRED_KEYS = ("hyper_parameters", "state_dict")
#: Hyperparameters that only matter for training, reset when a model is loaded for inference.
INFERENCE_OVERRIDES = {"compile": False}
#: Hyperparameters of older checkpoints that the model no longer takes (``example_lenses`` is now
#: the ``ExampleLenses`` callback); ignored when loading.
RETIRED_HPARAMS = ("example_lenses",)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a path: the file itself, or for a training run directory its
    best checkpoint (from ``metrics.json``), else its ``checkpoints/last.ckpt``."""
    path = Path(path).expanduser()
    if path.is_dir():
        metrics = path / "metrics.json"
        if metrics.is_file():
            best = json.loads(metrics.read_text()).get("best_checkpoint")
            if best and Path(best).is_file():
                return Path(best)
        last = path / "checkpoints" / "last.ckpt"
        if last.is_file():
            return last
        raise UserError(f"{path}: a directory without metrics.json or checkpoints/last.ckpt; give a .ckpt file")
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dictionary, unpickled with ``weights_only=True``; one-line errors for a missing,
    corrupted, unsafe or incomplete file."""
    path = resolve_checkpoint(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported content"
        raise UserError(f"{path}: refused, it holds objects a weights-only load may not unpickle ({first})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise UserError(f"{path}: not a readable PyTorch checkpoint (corrupted or truncated: {exc})") from None
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in REQUIRED_KEYS):
        raise UserError(f"{path}: not a lenscnn checkpoint (needs {list(REQUIRED_KEYS)}); was it written by lenscnn?")
    return checkpoint


def model_from_checkpoint(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> LensRegressor:
    """Rebuild the :class:`LensRegressor` of a checkpoint dictionary, in eval mode on the CPU."""
    saved = {k: v for k, v in checkpoint["hyper_parameters"].items() if k not in RETIRED_HPARAMS}
    hparams = {**saved, **INFERENCE_OVERRIDES}
    try:
        model = LensRegressor(**hparams)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    except (TypeError, KeyError, ValueError) as exc:
        raise UserError(f"{source}: hyperparameters do not describe a lenscnn model ({exc})") from None
    state = {k.replace("._orig_mod.", "."): v for k, v in checkpoint["state_dict"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise UserError(f"{source}: weights do not fit the model its hyperparameters describe ({detail})") from None
    return model.eval()


def load_regressor(path: str | Path) -> LensRegressor:
    """A trained model from a checkpoint file or run directory (see :func:`resolve_checkpoint`)."""
    path = resolve_checkpoint(path)
    return model_from_checkpoint(read_checkpoint(path), str(path))


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes: identifies the exact members a calibration was fitted for."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint_atomic(checkpoint: Mapping[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary sibling, then rename: the old file survives any failure."""
    with atomic_path(path) as tmp:
        torch.save(dict(checkpoint), tmp)


def export_weights(path: str | Path, out: str | Path, dtype: torch.dtype | None = None) -> None:
    """Write a weights-only copy of a checkpoint: hyperparameters, ``state_dict`` (optionally cast
    to ``dtype``, e.g. ``torch.float16`` to halve the size) and calibration; no optimizer state."""
    checkpoint = read_checkpoint(path)
    state = {
        k: v.to(dtype) if dtype is not None and v.is_floating_point() else v
        for k, v in checkpoint["state_dict"].items()
    }
    slim = {"hyper_parameters": checkpoint["hyper_parameters"], "state_dict": state}
    if "calibration" in checkpoint:
        slim["calibration"] = checkpoint["calibration"]
    save_checkpoint_atomic(slim, out)
