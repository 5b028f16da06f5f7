"""Run summaries: the typed content of a run directory's ``metrics.json``, with its one reader and writer.

Three apps write a ``metrics.json`` (:attr:`lenscnn.io.run_dir.RunDir.metrics`), each a dataclass here:

- :class:`TrainingSummary`: ``lenscnn-train``; read by the sweep leaderboard and by the checkpoint
  resolver (a run directory given as a model names its best checkpoint);
- :class:`EvaluationSummary`: ``lenscnn-eval`` on a simulated test set; read by the model card
  (``lenscnn-export card=...``);
- :class:`CatalogSummary`: ``lenscnn-eval`` on a catalogue of real lenses with references.

Every file carries ``"schema": "lenscnn.<kind>/<version>"``. :meth:`Summary.read` refuses, in one line, a
file of another kind or of a newer version, and still reads the files written before the schema key
existed (version 0: the same keys without ``schema``). Metrics are in physical units (arcsec for
``theta_E`` and the centre); ``metrics`` maps a target name to ``{metric: value}``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from lenscnn.errors import UserError
from lenscnn.io.atomic import write_json

#: Version of every summary's layout; bump it (and read the older ones) when a field changes meaning.
SCHEMA_VERSION = 1

S = TypeVar("S", bound="Summary")


@dataclass
class Summary:
    """Fields common to every summary's (de)serialisation; subclasses set :attr:`KIND` and their fields."""

    KIND: ClassVar[str] = ""

    @classmethod
    def schema(cls) -> str:
        """``lenscnn.<kind>/<version>``, the ``schema`` key of the files this class writes."""
        return f"lenscnn.{cls.KIND}/{SCHEMA_VERSION}"

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``metrics.json`` (the fields, ``schema`` added)."""
        return {"schema": self.schema(), **dataclasses.asdict(self)}

    def write(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path`` atomically (indented, key-sorted)."""
        write_json(path, self.to_json())

    @classmethod
    def from_json(cls: type[S], payload: Any, source: str = "metrics.json") -> S:
        """The summary in ``payload`` (a parsed ``metrics.json``); a :class:`UserError` naming ``source``
        for another kind, a newer version or missing fields. Unknown keys are ignored."""
        if not isinstance(payload, dict):
            raise UserError(f"{source}: not a lenscnn {cls.KIND} summary (not a JSON object)")
        schema = payload.get("schema")
        if schema is not None:
            kind, _, version = str(schema).removeprefix("lenscnn.").partition("/")
            if kind != cls.KIND:
                raise UserError(f"{source}: a lenscnn {kind} summary, not a {cls.KIND} one ({schema})")
            if not version.isdigit() or int(version) > SCHEMA_VERSION:
                raise UserError(
                    f"{source}: schema {schema} is newer than this lenscnn reads ({cls.schema()}); upgrade lenscnn"
                )
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(payload))
        if missing:
            listed = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise UserError(f"{source}: not a lenscnn {cls.KIND} summary (no {listed})")
        return cls(**{k: v for k, v in payload.items() if k in names})

    @classmethod
    def read(cls: type[S], path: str | Path) -> S:
        """The summary in the file ``path``; a :class:`UserError` when it is missing, not JSON or not one."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text())
        except OSError as exc:
            raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        except ValueError:
            raise UserError(f"{path}: not JSON; give the metrics.json a lenscnn run wrote") from None
        return cls.from_json(payload, str(path))


@dataclass
class TrainingSummary(Summary):
    """What ``lenscnn-train`` found.

    Attributes:
        run_dir: the run directory.
        overrides: the command-line overrides of the run (Hydra's task overrides).
        model: the network's config (``model.net``).
        optimized_metric: the validation metric the checkpoints and sweeps rank by (lower is better).
        val: ``{optimized_metric: value}`` (the best checkpoint's value; ``None`` before any validation).
        test: Lightning's test results, ``test/<metric>/<target>`` (empty without ``test=true``).
        prior_mean_rmse: per target, the test RMSE of always predicting the prior mean.
        rmse_ratio: per target, the test RMSE over ``prior_mean_rmse``.
        time_budget: the time-budget record (:class:`lenscnn.training.time_budget.TimeBudget`), if any.
        best_checkpoint: the path of the best checkpoint, if one was kept.
        precision: Lightning's training precision (``trainer=cpu`` picks ``bf16-mixed`` on CPUs with AMX).
    """

    KIND: ClassVar[str] = "training"

    run_dir: str
    overrides: list[str]
    model: dict[str, Any]
    optimized_metric: str
    val: dict[str, float | None]
    test: dict[str, float] = field(default_factory=dict)
    prior_mean_rmse: dict[str, float] = field(default_factory=dict)
    rmse_ratio: dict[str, float] = field(default_factory=dict)
    time_budget: dict[str, Any] | None = None
    best_checkpoint: str | None = None
    precision: str | None = None

    @property
    def score(self) -> float | None:
        """The value of the optimized metric (``None`` when the run never validated)."""
        value = self.val.get(self.optimized_metric)
        return None if value is None else float(value)

    def test_rmse(self, target: str) -> float | None:
        """The test RMSE of ``target`` in its physical unit (``None`` when not tested)."""
        value = self.test.get(f"test/rmse/{target}")
        return None if value is None else float(value)


@dataclass
class EvaluationSummary(Summary):
    """What ``lenscnn-eval`` found on a simulated test set.

    Attributes:
        members: the checkpoint or weight file of every ensemble member.
        dataset: a description of the test set (prior, instrument, seed, size).
        n: the number of lenses.
        mc_samples: MC-dropout passes per member (0: none).
        symmetries: predictions averaged over this many flips/rotations of each image (1 or 8).
        outlier_nsigma: the outlier threshold, in robust (NMAD) standard deviations.
        sigma_scale, sigma_power, sigma_pivot: per target, the recalibration applied to the predicted
            sigma, ``sigma_scale * sigma * (sigma / sigma_pivot) ** (sigma_power - 1)``
            (:class:`lenscnn.metrics.calibration.SigmaCalibration`; files written before the power
            law have no power and pivot: a plain scale).
        metrics: per target, ``{metric: value}`` (:func:`lenscnn.metrics.regression.evaluation_metrics`).
        nrmse: the mean over targets of RMSE / prior standard deviation.
        calibration: the calibration record when ``calibrate=true`` fitted the recalibration.
        comparison: each member's and the ensemble's normalised RMSE when ``compare_members=true``.
    """

    KIND: ClassVar[str] = "evaluation"

    members: list[str]
    dataset: str
    n: int
    mc_samples: int
    symmetries: int
    outlier_nsigma: float
    sigma_scale: dict[str, float]
    metrics: dict[str, dict[str, float]]
    nrmse: float
    calibration: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None
    sigma_power: dict[str, float] = field(default_factory=dict)
    sigma_pivot: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """As :meth:`Summary.to_json`, without the absent (or empty) optional records."""
        payload = super().to_json()
        optional = ("calibration", "comparison", "sigma_power", "sigma_pivot")
        return {k: v for k, v in payload.items() if v or k not in optional}


@dataclass
class CatalogSummary(Summary):
    """What ``lenscnn-eval`` found on a catalogue of real lenses (:mod:`lenscnn.metrics.reference`).

    Attributes:
        members, mc_samples, symmetries, sigma_scale, sigma_power, sigma_pivot: as in
            :class:`EvaluationSummary`.
        dataset: a description of the catalogue.
        references: the path of the catalogue's reference table.
        n, n_ok, n_failed, n_flagged: lenses in all, predicted, that failed, flagged as unlike training.
        targets: the targets scored (those with a reference column).
        reference_errors: per target, which error columns were read (``symmetric``, ``asymmetric``, ``none``).
        reference_columns: per target, the reference table's column.
        preparation: the input-preparation settings (:class:`lenscnn.preparation.pipeline.Preparation`).
        metrics: per target, ``{metric: value}`` against the references.
        nrmse: the mean over targets of RMSE / the training prior's standard deviation (``None``: none).
    """

    KIND: ClassVar[str] = "catalog"

    members: list[str]
    dataset: str
    references: str
    n: int
    n_ok: int
    n_failed: int
    n_flagged: int
    targets: list[str]
    reference_errors: dict[str, str]
    reference_columns: dict[str, str]
    mc_samples: int
    symmetries: int
    sigma_scale: dict[str, float]
    preparation: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    nrmse: float | None
    sigma_power: dict[str, float] = field(default_factory=dict)
    sigma_pivot: dict[str, float] = field(default_factory=dict)
