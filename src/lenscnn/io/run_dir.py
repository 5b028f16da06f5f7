"""RunDir: the one place that knows where a run directory keeps its files.

Every app runs in its own directory (``cli/run_dirs.py`` creates it). What lies inside is the same for
every app that writes it::

    .hydra/                 Hydra's config.yaml, hydra.yaml, overrides.yaml (a resume reads overrides.yaml)
    <task>.log              the log file
    checkpoints/            training: epoch_NNN.ckpt (best), last.ckpt (the latest state, for resuming)
    hpc_ckpt_<n>.ckpt       training on SLURM: the checkpoint a requeued job resumes from
    metrics.json            the run's summary, written last (a run directory with it is complete)
    metrics.csv             the per-target metrics of an evaluation
    predictions.csv         one row per lens (eval, predict)
    model.json              predict: the model that made predictions.csv (its simulator config: refine's lens model)
    refined.csv             one row per image: the network's values and the fit's (refine)
    plots/                  an evaluation's, predict's or refine's figures
    figures/                training: figures also sent to the loggers
    report.md               an evaluation's report

Modules ask a :class:`RunDir` for these paths instead of spelling them; ``conf/callbacks/default.yaml`` names
the checkpoint directory for Lightning's ``ModelCheckpoint`` and a test holds it to :attr:`RunDir.checkpoints`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
HYDRA_DIR = ".hydra"


@dataclass(frozen=True)
class RunDir:
    """The files of the run directory ``path`` (nothing is created or read by building one)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser())

    @property
    def checkpoints(self) -> Path:
        """The directory of the training checkpoints."""
        return self.path / CHECKPOINT_DIR

    @property
    def last_checkpoint(self) -> Path:
        """``checkpoints/last.ckpt``: the latest training state, what a resume starts from."""
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def metrics(self) -> Path:
        """``metrics.json``: the run's summary (training or evaluation), written last."""
        return self.path / "metrics.json"

    @property
    def model(self) -> Path:
        """``model.json`` beside ``predictions.csv``: which model made the predictions, with its simulator
        config (instrument and prior), so a fit of them uses the network's lens model and grid."""
        return self.path / "model.json"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions.csv"

    @property
    def refined(self) -> Path:
        """``refined.csv``: the network's and the fit's values per image (``lenscnn-refine``)."""
        return self.path / "refined.csv"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def figures(self) -> Path:
        """Training figures (example validation lenses), also sent to the loggers."""
        return self.path / "figures"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    @property
    def hydra(self) -> Path:
        return self.path / HYDRA_DIR

    @property
    def saved_overrides(self) -> Path:
        """``.hydra/overrides.yaml``: the command-line overrides the run was started with."""
        return self.hydra / "overrides.yaml"

    def is_run(self) -> bool:
        """Whether ``path`` is a run directory of a lenscnn app (Hydra wrote its ``.hydra/`` there)."""
        return self.hydra.is_dir()

    def requeue_checkpoints(self) -> list[Path]:
        """The SLURM requeue checkpoints ``hpc_ckpt_<n>.ckpt`` in the run directory (any order)."""
        return list(self.path.glob("hpc_ckpt_*.ckpt"))

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunDir | None:
        """The run whose ``checkpoints/`` holds ``checkpoint`` (``None`` for a file elsewhere)."""
        checkpoint = Path(checkpoint).expanduser()
        run = cls(checkpoint.parent.parent)
        return run if checkpoint.parent.name == CHECKPOINT_DIR and run.is_run() else None


def finished_runs(sweep_dir: str | Path) -> list[RunDir]:
    """The runs directly under ``sweep_dir`` (a multirun's jobs) that wrote their ``metrics.json``, by name."""
    return [RunDir(path.parent) for path in sorted(Path(sweep_dir).glob("*/metrics.json"))]


def run_name(checkpoint: str | Path) -> str:
    """The name of the run a checkpoint belongs to: the run directory's for a file in a ``checkpoints/``
    directory, else the directory holding the file."""
    checkpoint = Path(checkpoint)
    return (checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent).name
