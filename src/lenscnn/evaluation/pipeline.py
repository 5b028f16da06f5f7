"""One evaluation: optionally calibrate on a validation set, predict a test set, score it,
compare the members; everything ``lenscnn-eval`` then writes is in the returned
:class:`EvaluationResult`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenscnn.errors import UserError
from lenscnn.evaluation.datasets import EvaluationSet
from lenscnn.evaluation.scoring import Predictions, calibrate, coverage_table, normalised_rmse, predict_set, score
from lenscnn.io.run_dir import run_name
from lenscnn.io.summaries import EvaluationSummary
from lenscnn.metrics.calibration import SigmaCalibration
from lenscnn.metrics.tables import markdown_table
from lenscnn.models.ensemble import Ensemble
from lenscnn.models.symmetry import symmetry_group


@dataclass
class EvaluationResult:
    """What an evaluation found.

    Attributes:
        summary: the ``metrics.json`` content: members, data, ``metrics`` per target, ``nrmse``,
            the ``calibration`` record (if fitted) and the member ``comparison`` (if asked).
        test: the test-set predictions (sigma calibrated when a calibration was fitted).
        comparison_md: the member comparison as markdown (``None`` unless asked).
    """

    summary: EvaluationSummary
    test: Predictions
    comparison_md: str | None = None

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        return self.summary.metrics

    @property
    def calibration(self) -> dict[str, Any] | None:
        return self.summary.calibration


def member_label(source: str, k: int) -> str:
    """``<k>: <run directory name>/<checkpoint file>`` (short enough for a table)."""
    return f"{k}: {run_name(source)}/{Path(source).name}"


def comparison_table(comparison: Mapping[str, Any], label: Callable[[str], str] = str) -> str:
    """The member comparison as a markdown table: a row per member (``label`` of its key in
    ``comparison["members"]``), then the ensemble in bold; normalised RMSE to 4 decimals.
    ``comparison`` is the ``comparison`` record of ``metrics.json`` (:func:`compare_members`)."""
    rows = [[label(name), f"{value:.4f}"] for name, value in comparison["members"].items()]
    rows.append(["**ensemble**", f"**{comparison['ensemble']:.4f}**"])
    return markdown_table(["model", "normalised RMSE"], rows)


def ensemble_gain_sentence(improvement: float) -> str:
    """One sentence on the ensemble's normalised RMSE against its best member's, given
    ``improvement`` = 1 - ensemble / best member (positive when the ensemble is better)."""
    shown = round(100 * improvement, 1)  # the percentage as printed
    if shown == 0:
        return "The ensemble's normalised RMSE is within 0.05% of its best member's"
    return f"The ensemble's normalised RMSE is {abs(shown):.1f}% {'below' if shown > 0 else 'above'} its best member's"


def compare_members(ensemble: Ensemble, test: Predictions) -> tuple[dict[str, Any], str]:
    """Normalised RMSE of every member and the ensemble on the same lenses; and as markdown."""
    prior_std = ensemble.reference.scaler.std
    labels = [member_label(src, k) for k, src in enumerate(ensemble.sources)]
    rows = {label: normalised_rmse(test.truth, m, prior_std) for label, m in zip(labels, test.members, strict=True)}
    best = min(rows, key=rows.get)
    ens = normalised_rmse(test.truth, test.mean, prior_std)
    result = {
        "members": rows,
        "ensemble": ens,
        "best_member": best,
        "best_member_nrmse": rows[best],
        "improvement_over_best": 1 - ens / rows[best],
    }
    text = comparison_table(result)
    text += f"\n\n{ensemble_gain_sentence(result['improvement_over_best'])} ({rows[best]:.4f})."
    return result, text


def evaluate(
    ensemble: Ensemble,
    dataset: EvaluationSet,
    *,
    val_set: EvaluationSet | None = None,
    batch_size: int = 256,
    mc_samples: int = 0,
    compare: bool = False,
    outlier_nsigma: float = 3.0,
    show_progress: bool = False,
    symmetries: int = 1,
) -> EvaluationResult:
    """Evaluate ``ensemble`` on ``dataset`` (on the ensemble's device).

    With ``val_set`` the sigma recalibration per target is first fitted on it (from an uncalibrated
    ensemble) and set as ``ensemble.sigma_calibration``; the result then holds the calibration
    record with the coverage on both sets before and after. ``compare`` also scores each member.
    ``symmetries=8`` averages every prediction over the image's flips and quarter-turns (the
    calibration record notes it, as it notes ``mc_samples``).
    """
    if mc_samples < 0:
        raise UserError(f"mc_samples must be >= 0, got {mc_samples}")
    symmetry_group(symmetries, ensemble.target_names)  # refuse a bad value or targets before predicting
    dataset.check_geometry(ensemble.image_size, ensemble.pixel_scale)
    if val_set is not None and not ensemble.gives_sigma(mc_samples, symmetries):
        raise UserError(
            "calibrate=true needs uncertainties: a gaussian_nll model, an ensemble, mc_samples > 0 or symmetries=8"
        )
    if val_set is not None:
        ensemble.sigma_calibration = SigmaCalibration.identity(len(ensemble.target_names))
        val = predict_set(ensemble, val_set, batch_size, mc_samples, show_progress=show_progress, symmetries=symmetries)
        fit = calibrate(val)
    test = predict_set(ensemble, dataset, batch_size, mc_samples, compare, show_progress, symmetries)
    names = test.names
    calibration = None
    if val_set is not None:
        before = coverage_table(test.residual, test.sigma, names)
        test.sigma = fit.apply(test.sigma.double()).float()
        ensemble.sigma_calibration = fit
        calibration = {
            **fit.by_target(names),
            "fitted_on": val_set.description,
            "mc_samples": mc_samples,
            "symmetries": symmetries,
            "coverage_val_before": coverage_table(val.residual, val.sigma, names),
            "coverage_val_after": coverage_table(val.residual, fit.apply(val.sigma.double()), names),
            "coverage_before": before,
            "coverage_after": coverage_table(test.residual, test.sigma, names),
        }
    summary = EvaluationSummary(
        members=list(ensemble.sources),
        dataset=dataset.description,
        n=int(test.truth.shape[0]),
        mc_samples=mc_samples,
        symmetries=symmetries,
        outlier_nsigma=outlier_nsigma,
        **ensemble.sigma_calibration.by_target(names),
        metrics=score(test, outlier_nsigma),
        nrmse=normalised_rmse(test.truth, test.mean, ensemble.reference.scaler.std),
        calibration=calibration,
    )
    comparison_md = None
    if compare:
        summary.comparison, comparison_md = compare_members(ensemble, test)
    return EvaluationResult(summary, test, comparison_md)
