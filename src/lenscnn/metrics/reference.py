"""Predictions scored against reference values that carry their own uncertainties (a real-lens catalogue).

For lens ``i`` with prediction ``mu_i +- sigma_i`` and reference ``r_i`` with errors ``-l_i / +h_i``
(symmetric: ``l_i = h_i``), the *combined* standard deviation is

    s_i = sqrt(sigma_i^2 + e_i^2),   e_i = h_i if mu_i > r_i else l_i

(the reference's error on the side of the residual: a prediction above the reference is compared
with the reference's upper error), and the *z-score* is ``z_i = (mu_i - r_i) / s_i``. A model
without uncertainties has ``sigma_i = 0``; a lens whose combined sigma is 0 has no z-score.

The metrics are those of simulated sets (:func:`lenscnn.metrics.regression.evaluation_metrics`),
with the reference in place of the truth and ``s_i`` in place of the predicted sigma, so
``coverage_68`` / ``coverage_95`` are the shares of ``|z| <= z_p`` (``z_p`` = 0.994 and 1.960, the
central Gaussian intervals of 68% and 95%) and ``nll`` is the Gaussian NLL of the residual under
``s_i``. Added: ``n`` (lenses scored), ``flagged`` (of them, flagged as unlike the training images)
and ``median_abs_z``. Units are the target's.
"""

from __future__ import annotations

import numpy as np
import torch

from lenscnn.metrics.regression import evaluation_metrics


def combined_sigma(
    pred: np.ndarray, sigma: np.ndarray | None, ref: np.ndarray, err_low: np.ndarray, err_high: np.ndarray
) -> np.ndarray:
    """``s_i`` of the module docstring, per lens (arrays ``(N,)``; ``sigma=None``: no model uncertainty)."""
    side = np.where(pred > ref, err_high, err_low)
    model = np.zeros_like(pred) if sigma is None else np.asarray(sigma, dtype=np.float64)
    return np.sqrt(model**2 + side**2)


def z_scores(
    pred: np.ndarray, sigma: np.ndarray | None, ref: np.ndarray, err_low: np.ndarray, err_high: np.ndarray
) -> np.ndarray:
    """``z_i = (mu_i - r_i) / s_i`` per lens; NaN where the combined sigma is 0."""
    s = combined_sigma(pred, sigma, ref, err_low, err_high)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s > 0, (pred - ref) / np.where(s > 0, s, 1.0), np.nan)


def reference_metrics(
    pred: np.ndarray,
    sigma: np.ndarray | None,
    ref: np.ndarray,
    err_low: np.ndarray,
    err_high: np.ndarray,
    flagged: np.ndarray,
) -> dict[str, float | int | None]:
    """The metrics of one target over ``N >= 1`` lenses (arrays ``(N,)``; ``flagged`` boolean).

    The z-based metrics (``nll``, ``median_abs_z``, ``coverage_68``, ``coverage_95``) are ``None`` when
    some lens has a combined sigma of 0 (neither the model nor the reference gives an uncertainty)."""
    pred, ref = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    s = combined_sigma(pred, sigma, ref, err_low, err_high)
    usable = bool(np.all(s > 0))
    values = evaluation_metrics(_column(ref), _column(pred), _column(s) if usable else None, ["x"])["x"]
    values.pop("outlier_fraction")  # a robust spread of a handful of lenses says nothing
    z = z_scores(pred, sigma, ref, err_low, err_high)
    return {
        "n": int(len(pred)),
        "flagged": int(np.count_nonzero(flagged)),
        "rmse": values["rmse"],
        "mae": values["mae"],
        "bias": values["bias"],
        "median_abs_error": values["median_abs_error"],
        "median_abs_z": float(np.median(np.abs(z))) if usable else None,
        "nll": values.get("nll"),
        "coverage_68": values.get("coverage_68"),
        "coverage_95": values.get("coverage_95"),
    }


def _column(values: np.ndarray) -> torch.Tensor:
    """``(N,)`` -> a float64 ``(N, 1)`` tensor (one target)."""
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))[:, None]
