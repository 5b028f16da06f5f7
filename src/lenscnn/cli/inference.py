"""The one way an app opens a model for inference: options checked, model loaded on its device.

Every app that predicts (``lenscnn-predict``, ``lenscnn-eval`` on a simulated set or a catalogue) checks
its inference options with :meth:`InferenceOptions.from_config` before anything is read, then calls
:func:`open_model`: the seed, the device, the model the config names (``ckpt_path``, ``ensemble=...``
or the shipped pretrained ensemble), the symmetries it predicts with, and the check that its stored
sigma calibration fits those settings.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenscnn import pretrained
from lenscnn.errors import UserError

log = logging.getLogger(__name__)


def _count(value: Any, key: str, least: int) -> int:
    """``value`` as an integer >= ``least`` (a boolean is not one), else a :class:`UserError` naming ``key``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise UserError(f"{key}={value!r}: give an integer >= {least}")
    return value


@dataclass(frozen=True)
class InferenceOptions:
    """How a model predicts: ``mc_samples`` MC-dropout passes per member (0: dropout off),
    ``symmetries`` (1 or 8 flips/rotations averaged; ``None``: as the model was calibrated) and
    ``batch_size`` images per forward pass (memory only; changes no answer); ``workers``: processes that prepare
    input files while this one predicts (1: this one alone; ``auto`` in a config: one per CPU core this process may
    use but one, which predicts; 1 on two cores; changes no answer)."""

    mc_samples: int = 0
    symmetries: int | None = None
    batch_size: int = 256
    workers: int = 1

    @classmethod
    def from_config(cls, cfg: Any) -> InferenceOptions:
        """The options of an app config (keys ``mc_samples``, ``symmetries``, ``batch_size`` and, where it reads
        files, ``workers``), checked."""
        from lenscnn.models.symmetry import check_symmetries

        symmetries = None if cfg.symmetries is None else check_symmetries(cfg.symmetries)
        workers = cfg.get("workers", 1)
        if workers == "auto":
            workers = max(1, len(os.sched_getaffinity(0)) - 1)  # a core left to the predicting process
        elif not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise UserError(f"workers={workers!r}: give auto or a number of processes (an integer >= 1)")
        return cls(
            _count(cfg.mc_samples, "mc_samples", 0), symmetries, _count(cfg.batch_size, "batch_size", 1), workers
        )


@dataclass
class OpenedModel:
    """A model ready to predict: the ensemble (a single checkpoint is an ensemble of one) on its device,
    the file its sigma calibration is stored in (``None`` for a single checkpoint, whose calibration lives
    in the checkpoint, or the shipped ensemble's) and the number of symmetries it predicts with."""

    ensemble: Any
    calibration_file: Path | None
    symmetries: int


def open_model(
    cfg: Any,
    options: InferenceOptions,
    *,
    default_pretrained: bool = False,
    calibrating: bool = False,
    images: bool = False,
    pretrained_name: str = pretrained.DEFAULT,
) -> OpenedModel:
    """Seed torch with ``cfg.seed`` (MC dropout), load the model ``cfg`` names (:func:`load_ensemble`) onto
    ``cfg.device`` and resolve its symmetries (refusing targets the image's flips cannot carry). Unless
    ``calibrating`` (a calibration is being fitted, with 1 symmetry unless told otherwise), warn when the
    stored calibration was fitted with other settings. ``images``: the model will predict cutouts read from
    files, one band each (a multi-band model is refused). ``pretrained_name``: the shipped ensemble a config naming no
    model gets (with ``default_pretrained``)."""
    import torch

    from lenscnn.models.symmetry import symmetry_group

    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    ensemble, calibration_file = load_ensemble(cfg, default_pretrained=default_pretrained, name=pretrained_name)
    if images and len(ensemble.bands) > 1:
        raise UserError(
            f"this model takes {len(ensemble.bands)} bands ({', '.join(ensemble.bands)}) in every image; "
            "cutouts are read one band each: evaluate it on simulated images (lenscnn-eval), or use a single-band model"
        )
    ensemble.to(device)
    symmetries = 1 if calibrating and options.symmetries is None else ensemble.symmetries(options.symmetries)
    symmetry_group(symmetries, ensemble.target_names)
    if not calibrating:
        ensemble.check_calibration_mode(options.mc_samples, symmetries)
    return OpenedModel(ensemble, calibration_file, symmetries)


def resolve_device(name: str) -> Any:
    """``auto`` (CUDA if present, else CPU) or an explicit torch device name."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name!r} but CUDA is not available here; use device=cpu")
    return device


def checkpoint_paths(cfg: Any) -> list[str]:
    """The checkpoints a config names: ``[ckpt_path]``, or ``ensemble.checkpoints``, or ``[]``."""
    single = cfg.get("ckpt_path")
    members = list(cfg.ensemble.get("checkpoints") or [])
    if single and members:
        raise UserError("give ckpt_path=... or ensemble=..., not both")
    return [single] if single else members


def load_ensemble(
    cfg: Any, default_pretrained: bool = False, name: str = pretrained.DEFAULT
) -> tuple[Any, Path | None]:
    """The model an eval/predict config names: ``ckpt_path`` (one checkpoint) or
    ``ensemble.checkpoints``; returns it with the path of its ensemble calibration file
    (``None`` for a single checkpoint, whose calibration lives in the checkpoint).
    With ``default_pretrained``, a config naming no model gets the shipped pretrained ensemble ``name``."""
    from lenscnn.models.ensemble import Ensemble

    paths = checkpoint_paths(cfg)
    if not paths and default_pretrained:
        files = pretrained.checkpoints(name)
        log.info("no ckpt_path or ensemble given: using the shipped pretrained ensemble (%s)", files[0].parent)
        calibration = pretrained.calibration_file(name)
        return Ensemble.from_checkpoints(files, calibration), calibration
    if not paths:
        raise UserError(
            "no model: give ckpt_path=<checkpoint or run dir> or ensemble=<name> / ensemble.checkpoints=[...]"
        )
    missing = [p for p in paths if not Path(p).expanduser().exists()]
    if missing and cfg.ensemble.get("trained_by"):
        raise UserError(
            f"{missing[0]} does not exist: train the ensemble's members first with {cfg.ensemble.trained_by}"
        )
    calibration = None
    if len(paths) > 1:
        common = Path(os.path.commonpath([Path(p).expanduser().resolve() for p in paths]))
        common = common.parent if common.is_file() else common
        calibration = Path(cfg.ensemble.get("calibration") or common / "calibration.json")
    return Ensemble.from_checkpoints(paths, calibration), calibration
