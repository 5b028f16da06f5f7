"""Resume a run into its own directory with its own overrides.

``lenscnn-train ckpt_path=last`` resumes the run under ``<paths.log_dir>/train/runs`` whose ``last.ckpt``
was written last, or
the run in ``hydra.run.dir`` when that is given; ``ckpt_path=<file>`` resumes the run whose
``checkpoints/`` holds that file, ``ckpt_path=<run directory>`` that run from its ``last.ckpt``. Before Hydra
composes the config, the command line is rewritten to: the run's saved overrides, then the
new ones (which win), then ``hydra.run.dir=<run>`` — so the run continues in the same
directory, with the same config, logger versions and wandb id.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lenscnn.errors import UserError
from lenscnn.io.run_dir import CHECKPOINT_DIR, LAST_CHECKPOINT, RunDir


def override_key(override: str) -> str:
    """The key a command-line override sets: ``+a.b=1``, ``~a.b`` and ``a.b=1`` all set ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")


def _last_of(run_dir: Path, given: str) -> tuple[Path, Path]:
    last = RunDir(run_dir).last_checkpoint
    if not last.is_file():
        raise UserError(f"{given}: {run_dir} has no {CHECKPOINT_DIR}/{LAST_CHECKPOINT}; give a checkpoint file")
    return run_dir, last


def find_run_dir(
    ckpt_path: str, log_dir: str, task_name: str = "train", run_dir: str | None = None
) -> tuple[Path, Path]:
    """``(run_dir, checkpoint)`` of the run to resume (``run_dir``: an explicit ``hydra.run.dir``)."""
    if ckpt_path == "last":
        if run_dir:
            return _last_of(Path(run_dir).expanduser(), f"ckpt_path=last hydra.run.dir={run_dir}")
        runs = Path(log_dir) / task_name / "runs"
        # the run whose last.ckpt was written last: names sort by start time only within one naming
        # scheme (a slurm-<id> run or a _2 suffix would win alphabetically), and a run started earlier
        # may have been resumed since
        candidates = sorted(
            runs.glob(f"*/{CHECKPOINT_DIR}/{LAST_CHECKPOINT}"), key=lambda p: (p.stat().st_mtime_ns, str(p))
        )
        if not candidates:
            raise UserError(
                f"ckpt_path=last: no run with {CHECKPOINT_DIR}/{LAST_CHECKPOINT} under {runs}; give a checkpoint path"
            )
        return candidates[-1].parent.parent, candidates[-1]
    checkpoint = Path(ckpt_path).expanduser()
    if checkpoint.is_dir():
        return _last_of(checkpoint, f"ckpt_path={ckpt_path}")
    if not checkpoint.is_file():
        raise UserError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    if RunDir.of_checkpoint(checkpoint) is None:
        raise UserError(f"ckpt_path={ckpt_path}: not inside a lenscnn run's {CHECKPOINT_DIR}/ directory")
    return checkpoint.parent.parent, checkpoint


def resume_arguments(argv: list[str]) -> list[str]:
    """Command-line overrides rewritten for a resume (unchanged when not resuming)."""
    overrides = dict((override_key(a), a) for a in argv if "=" in a and not a.startswith("-"))
    if "ckpt_path" not in overrides or any(a in ("-m", "--multirun") for a in argv):
        return argv
    ckpt_path = overrides["ckpt_path"].split("=", 1)[1]
    if ckpt_path in ("", "null", "None"):
        return argv
    log_dir = overrides.get("paths.log_dir", "paths.log_dir=outputs").split("=", 1)[1]
    given_dir = overrides["hydra.run.dir"].split("=", 1)[1] if "hydra.run.dir" in overrides else None
    run_dir, checkpoint = find_run_dir(ckpt_path, log_dir, run_dir=given_dir)
    saved_file = RunDir(run_dir).saved_overrides
    saved = yaml.safe_load(saved_file.read_text()) if saved_file.is_file() else []
    replaced = ("ckpt_path", "hydra.run.dir")
    kept = [o for o in saved if override_key(o) not in overrides and override_key(o) not in replaced]
    new = [a for a in argv if override_key(a) not in replaced]
    return kept + new + [f"ckpt_path={checkpoint.resolve()}", f"hydra.run.dir={run_dir.resolve()}"]


#: What a checkpoint Lightning wrote during a fit holds besides the weights: what a resume restores.
TRAINING_STATE = ("state_dict", "optimizer_states", "loops", "global_step")


def check_training_checkpoint(path: str | Path) -> None:
    """Refuse, with one line naming ``path``, a checkpoint a lenscnn training cannot resume from: a file that
    is not a PyTorch checkpoint (text, a truncated file), one holding Python objects (read weights-only,
    as the resume does), one without Lightning's training state (a ``lenscnn-export`` file, plain weights)
    or one of another model than lenscnn's."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"ckpt_path={path}: no such checkpoint file")
    why = _not_resumable(path)
    if why:
        raise UserError(
            f"{path}: not a lenscnn/Lightning checkpoint ({why}); "
            "resume from a checkpoint that lenscnn-train wrote (a run's checkpoints/last.ckpt)"
        )


def _not_resumable(path: Path) -> str | None:
    """Why ``path`` is no checkpoint of a lenscnn training (a phrase), ``None`` if it is one."""
    import pickle
    import zipfile

    import torch

    from lenscnn.models.checkpoint import hparams_problem, reason

    if not zipfile.is_zipfile(path):  # what torch.save writes (Lightning's checkpoints) is a zip archive
        with open(path, "rb") as file:
            started = file.read(4) == b"PK\x03\x04"
        return "a truncated or corrupted file" if started else "not a file torch.save writes"
    try:  # the tensors are mapped, not read: only the structure is looked at
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            return "it holds Python objects, not only tensors and plain containers"
        return "its contents cannot be read (corrupted?)"
    except Exception as exc:  # RuntimeError, EOFError, zipfile errors of a truncated or corrupted file
        return f"its contents cannot be read: {reason(exc)}"
    if not isinstance(checkpoint, dict):
        return f"it holds a {type(checkpoint).__name__}, not a checkpoint dictionary"
    missing = [k for k in TRAINING_STATE if k not in checkpoint]
    if missing:
        return f"no training state: no {', '.join(missing)}"
    hparams = checkpoint.get("hyper_parameters")
    problem = hparams_problem(hparams) if isinstance(hparams, dict) else "hyper_parameters are missing"
    return f"a Lightning checkpoint of another model: {problem}" if problem else None
