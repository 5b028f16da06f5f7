"""Loading trained models safely, and the calibration stored with them.

Checkpoints are read with ``torch.load(..., weights_only=True)``: only tensors and plain
containers are unpickled, never arbitrary Python objects, so a checkpoint from an untrusted
source cannot run code. A model is rebuilt from its hyperparameters (backbone chosen by name
from :data:`lenscnn.models.BACKBONES`) and its ``state_dict``; that is all a file needs, so a
Lightning checkpoint and a weights-only export (:func:`export_weights`) load alike.
"""

from __future__ import annotations

import hashlib
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lenscnn.errors import UserError, one_line
from lenscnn.io.atomic import atomic_path
from lenscnn.io.run_dir import RunDir
from lenscnn.io.summaries import TrainingSummary
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
        run = RunDir(path)
        best = best_checkpoint(run.metrics)
        if best is not None:
            return best
        if run.last_checkpoint.is_file():
            return run.last_checkpoint
        raise UserError(f"{path}: a directory without metrics.json or checkpoints/last.ckpt; give a .ckpt file")
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    return path


def best_checkpoint(metrics: Path) -> Path | None:
    """The ``best_checkpoint`` a run's ``metrics.json`` names, if that file exists (``None`` for a
    missing, unreadable or foreign ``metrics.json``: the run's ``last.ckpt`` is used instead)."""
    try:
        best = TrainingSummary.read(metrics).best_checkpoint
    except UserError:  # missing, not JSON, not a training summary
        return None
    return Path(best) if isinstance(best, str) and best and Path(best).is_file() else None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dictionary, unpickled with ``weights_only=True``; one-line errors for a missing,
    corrupted, unsafe or incomplete file."""
    path = resolve_checkpoint(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        why = [line for line in lines if line.startswith("WeightsUnpickler error")] or lines or ["unsupported content"]
        raise UserError(f"{path}: refused, it holds objects a weights-only load may not unpickle ({why[0]})") from None
    except Exception as exc:  # RuntimeError, EOFError, KeyError, zipfile errors, ...: a corrupted or foreign file
        raise UserError(f"{path}: not a readable PyTorch checkpoint (corrupted or truncated: {reason(exc)})") from None
    if (
        not isinstance(checkpoint, dict)
        or any(k not in checkpoint for k in REQUIRED_KEYS)
        or not all(isinstance(checkpoint[k], Mapping) for k in REQUIRED_KEYS)
    ):
        raise UserError(
            f"{path}: not a lenscnn checkpoint (needs dictionaries {list(REQUIRED_KEYS)}); was it written by lenscnn?"
        )
    return checkpoint


def reason(exc: BaseException) -> str:
    """One line saying why a library call failed: exception type and message, shortened."""
    return one_line(exc, limit=300, with_type=True)


def model_from_checkpoint(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> LensRegressor:
    """Rebuild the :class:`LensRegressor` of a checkpoint dictionary, in eval mode on the CPU."""
    saved = {k: v for k, v in checkpoint["hyper_parameters"].items() if k not in RETIRED_HPARAMS}
    problem = hparams_problem(saved)
    if problem:
        raise UserError(f"{source}: hyperparameters do not describe a lenscnn model ({problem})")
    try:
        model = LensRegressor(**{**saved, **INFERENCE_OVERRIDES})
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    except Exception as exc:  # the backbone refuses its options: TypeError, ValueError, RuntimeError, ...
        raise UserError(f"{source}: hyperparameters do not describe a lenscnn model ({reason(exc)})") from None
    load_weights(model, checkpoint["state_dict"], source)
    return model.eval()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(values: Any, n: int) -> bool:
    return isinstance(values, (list, tuple)) and len(values) == n and all(_number(v) for v in values)


def hparams_problem(h: Mapping[str, Any]) -> str | None:
    """What makes saved hyperparameters unusable (a sentence), ``None`` if nothing: the model and
    its normalisations are built from them, so nonsense must stop here with a clear message."""
    for key in ("net", "targets", "input_normalization"):
        if not isinstance(h.get(key), Mapping):
            return f"{key} is missing or not a mapping"
    if not isinstance(h["net"].get("name"), str):
        return "net.name is not a backbone name"
    names, mean, std = (h["targets"].get(k) for k in ("names", "mean", "std"))
    if not (isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names)):
        return "targets.names is not a list of parameter names"
    if len(set(names)) != len(names) or not (_numbers(mean, len(names)) and _numbers(std, len(names))):
        return "targets need distinct names and finite mean and std, one per target"
    if min(std) <= 0:
        return "targets.std must be positive"
    norm = [h["input_normalization"].get(k) for k in ("softening", "offset", "scale")]
    bands = h.get("bands")
    named = isinstance(bands, (list, tuple)) and bands and all(isinstance(b, str) for b in bands)
    if bands is not None and not named:
        return "bands is not a list of band names"
    if bands is not None and len(bands) > 1:  # one number per band
        per_band = all(_numbers(v, len(bands)) for v in norm)
        if not (per_band and min(norm[0]) > 0 and min(norm[2]) > 0):
            return f"input_normalization needs finite softening > 0, offset and scale > 0 in each of {len(bands)} bands"
    elif not (all(_number(v) for v in norm) and norm[0] > 0 and norm[2] > 0):
        return "input_normalization needs finite softening > 0, offset and scale > 0"
    size = h.get("image_size", (64, 64))
    pixels = isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) for s in size)
    if not (pixels and _numbers(size, 2) and min(size) > 0):
        return f"image_size {size!r} is not (height, width) in pixels"
    if not (_number(h.get("pixel_scale", 0.08)) and h.get("pixel_scale", 0.08) > 0):
        return "pixel_scale is not a positive number of arcsec/pixel"
    if not isinstance(h.get("loss", ""), str) or not _number(h.get("nll_beta", 0.0)):
        return "loss is not a loss name or nll_beta not a number"
    if not all(h.get(k) is None or isinstance(h[k], Mapping) for k in ("optimizer", "scheduler", "simulator")):
        return "optimizer, scheduler and simulator must be mappings"
    if not isinstance(h.get("channels_last", False), bool):
        return "channels_last is not true or false"
    return None


def load_weights(model: LensRegressor, state: Mapping[Any, Any], source: str) -> None:
    """Load a checkpoint's ``state_dict`` (also of a compiled model) into ``model``; refuses
    entries that are not named tensors, tensors that do not fit, and NaN or infinite weights."""
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UserError(
            f"{source}: the state_dict holds entries that are not named tensors; was it written by lenscnn?"
        )
    try:
        model.load_state_dict({k.replace("._orig_mod.", "."): v for k, v in state.items()})
    except Exception as exc:  # RuntimeError for missing, unexpected or misshapen tensors; others for odd dtypes
        raise UserError(
            f"{source}: weights do not fit the model its hyperparameters describe ({reason(exc)})"
        ) from None
    broken = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise UserError(
            f"{source}: {len(broken)} weight tensors hold NaN or infinite values (first: {broken[0]}); "
            "the training diverged or the file is corrupted"
        )


def load_initial_weights(model: LensRegressor, path: str | Path) -> Path:
    """Start ``model`` from the network weights of a trained checkpoint (file or run directory): fine-tuning.

    Only the weights are taken; the optimizer, learning-rate schedule and step count start afresh (a
    resume, ``ckpt_path=``, restores those too). The checkpoint must be of the same backbone, with the
    same targets in the same order, since the head's outputs are the targets' standardised values.

    Returns:
        The checkpoint file the weights came from.
    """
    path = resolve_checkpoint(path)
    checkpoint = read_checkpoint(path)
    targets = checkpoint["hyper_parameters"].get("targets")
    names = list(targets.get("names", [])) if isinstance(targets, Mapping) else []
    if names != list(model.scaler.names):
        raise UserError(
            f"init_from={path}: its targets {names} are not this run's {list(model.scaler.names)}; "
            "start from a checkpoint trained for the same targets, or set data.targets to its targets"
        )
    load_weights(model, checkpoint["state_dict"], f"init_from={path}")
    return path


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


def same_weights(a: str | Path, b: str | Path) -> bool:
    """Whether two checkpoints hold the same weights (names, dtypes and values): they predict alike."""
    first, second = read_checkpoint(a)["state_dict"], read_checkpoint(b)["state_dict"]
    return first.keys() == second.keys() and all(
        first[k].dtype == second[k].dtype and torch.equal(first[k], second[k]) for k in first
    )


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
