"""``lenscnn-export``: weights-only copies of trained models, and model-card metrics.

lenscnn-export ensemble=survey out_dir=exported/survey             # member_1.pt, member_2.pt, ...
lenscnn-export ckpt_path=outputs/train/runs/<run> out_dir=exported/mine dtype=float32
lenscnn-export card=MODEL_CARD.md metrics=outputs/eval/runs/<run>/metrics.json
lenscnn-export card=MODEL_CARD.md metrics=[main/metrics.json,other_set/metrics.json]   # one table per test set
lenscnn-export card=MODEL_CARD.md metrics=[...] robustness=[clean/metrics.json,pedestal/metrics.json]
lenscnn-export card=MODEL_CARD.md metrics=[...] instruments=[hst/metrics.json,euclid/metrics.json]   # a row each

An exported member holds the checkpoint's hyperparameters, its weights (cast to ``dtype``;
float16 halves the size and is cast back to float32 on loading) and its calibration: what
``lenscnn-eval`` and ``lenscnn-predict`` need, and nothing ``torch.load(weights_only=True)``
refuses. Exporting the same checkpoints again gives byte-identical files, so an existing
ensemble ``calibration.json`` in ``out_dir`` stays valid if (and only if) the members did not
change; otherwise it is removed (re-run ``lenscnn-eval ... calibrate=true``). The ensemble's own
calibration (``ensemble.calibration``) goes with members exported with their weights unchanged
(``dtype`` null or theirs); members cast to another dtype predict a little differently and are
calibrated again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from lenscnn.cli.inference import checkpoint_paths
from lenscnn.errors import UserError
from lenscnn.io.summaries import EvaluationSummary
from lenscnn.models.calibration_record import read_calibration, write_calibration
from lenscnn.models.checkpoint import export_weights, resolve_checkpoint, same_weights
from lenscnn.pretrained import CALIBRATION
from lenscnn.pretrained.card import update_card

log = logging.getLogger(__name__)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def export_members(
    sources: list[str], out_dir: Path, dtype: str | None, calibration_source: str | None = None
) -> list[Path]:
    """Export every checkpoint of ``sources`` to ``out_dir/member_<k>.pt`` with the ensemble calibration
    ``calibration_source`` when their weights are unchanged; returns the files."""
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"dtype={dtype!r}; choose one of {sorted(DTYPES)} or null")
    files = [resolve_checkpoint(s) for s in sources]
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for k, source in enumerate(files, start=1):
        out = out_dir / f"member_{k}.pt"
        export_weights(source, out, None if dtype is None else DTYPES[dtype])
        log.info("%s -> %s (%.2f MB)", source, out, out.stat().st_size / 1e6)
        outputs.append(out)
    for stale in out_dir.glob("member_*.pt"):
        if stale not in outputs:
            stale.unlink()
            log.info("removed %s (not a member any more)", stale)
    calibration = out_dir / CALIBRATION
    if len(outputs) > 1:
        try:
            read_calibration(calibration, outputs)
        except UserError:  # fitted for other members, or unreadable
            calibration.unlink()
            log.info(
                "removed %s: fitted for other members; calibrate again with lenscnn-eval calibrate=true", calibration
            )
        carry_calibration(calibration_source, files, outputs, calibration)
    return outputs


def carry_calibration(source: str | None, members: list[Path], exported: list[Path], out: Path) -> None:
    """Write the calibration ``source`` of ``members`` to ``out`` for their ``exported`` copies when these hold
    the same weights; say why not otherwise."""
    record = read_calibration(Path(source).expanduser(), members) if source else None
    if record is None:
        return
    if all(same_weights(a, b) for a, b in zip(members, exported, strict=True)):
        write_calibration(out, {k: v for k, v in record.items() if k != "members"}, exported)
        log.info("%s -> %s (the members' weights are unchanged)", source, out)
    else:
        log.warning(
            "%s is not copied: the exported members' weights differ from those it was fitted for (dtype); "
            "calibrate them with lenscnn-eval calibrate=true",
            source,
        )


def check_trained(cfg: DictConfig, sources: list[str]) -> None:
    """Refuse, naming the command that trains them, an ensemble whose members are not trained yet
    (its config's ``trained_by``, e.g. ``lenscnn-train -m experiment=realistic_ensemble``)."""
    missing = [s for s in sources if not Path(s).expanduser().exists()]
    trained_by = cfg.ensemble.get("trained_by") if cfg.get("ensemble") else None
    if missing and trained_by:
        raise UserError(f"{missing[0]} does not exist: train the ensemble's members first with {trained_by}")


def export(cfg: DictConfig) -> list[Path]:
    """Run what ``cfg`` asks for: export members and/or update a model card."""
    sources = checkpoint_paths(cfg)
    if (cfg.card is None) != (cfg.metrics is None):
        raise UserError("card=... and metrics=... go together: the card's metrics come from that metrics.json")
    if not (sources or cfg.card):
        raise UserError("nothing to do: give ckpt_path=... or ensemble=... with out_dir=..., or card=... metrics=...")
    outputs: list[Path] = []
    if sources:
        if not cfg.out_dir:
            raise UserError("out_dir=... is needed: where the exported member_<k>.pt files go")
        check_trained(cfg, sources)
        calibration = cfg.ensemble.get("calibration") if cfg.get("ensemble") else None
        outputs = export_members(sources, Path(cfg.out_dir).expanduser(), cfg.dtype, calibration)
    if cfg.card:
        files = [cfg.metrics] if isinstance(cfg.metrics, str) else list(cfg.metrics)
        if not files:
            raise UserError("metrics=[] is empty: give the metrics.json of at least one lenscnn-eval run")
        robustness = [] if cfg.robustness is None else list(cfg.robustness)
        if len(robustness) == 1:
            raise UserError(
                "robustness=[clean, nuisance, ...]: give the clean set's metrics.json and at least one more"
            )
        instruments = [] if cfg.instruments is None else list(cfg.instruments)
        update_card(
            cfg.card,
            *(read_metrics(Path(f).expanduser()) for f in files),
            robustness=[read_metrics(Path(f).expanduser()) for f in robustness],
            instruments=[read_metrics(Path(f).expanduser()) for f in instruments],
        )
        log.info("updated the metrics of %s from %s", cfg.card, ", ".join(files + instruments + robustness))
    return outputs


def read_metrics(path: Path) -> EvaluationSummary:
    """A ``metrics.json`` written by ``lenscnn-eval`` on a simulated test set."""
    try:
        return EvaluationSummary.read(path)
    except UserError as exc:
        raise UserError(f"metrics={exc}; give the metrics.json of a lenscnn-eval run") from None


def task(cfg: DictConfig) -> None:
    """The Hydra task."""
    export(cfg)


if __name__ == "__main__":
    from lenscnn.cli import entry

    entry.export()
