"""Losses on standardised targets, and how many network outputs each needs.

For ``T`` targets the network emits:

* ``mse``: ``T`` means;
* ``gaussian_nll``: ``T`` means and ``T`` log standard deviations (diagonal Gaussian);
* ``full_gaussian_nll``: ``T`` means and the ``T(T+1)/2`` entries of the lower-triangular
  Cholesky factor ``L`` of the covariance (diagonal through ``exp``), ``Sigma = L L^T``.

All NLLs drop the constant ``T/2 log 2 pi`` and are averaged over the batch.

``beta`` (diagonal NLL only) is the beta-NLL of Seitzer et al. (2022, ICLR): each term is
weighted by ``sigma^(2 beta)`` (without gradient). With ``beta = 0`` it is the NLL, whose
mean gradients ``r / sigma^2`` neglect the hard, uncertain lenses; ``beta = 1`` gives the
mean the gradients of MSE; ``0.5`` learns the mean nearly as well as MSE and keeps
calibrated variances.
"""

from __future__ import annotations

import torch
from torch import Tensor

LOSSES = ("mse", "gaussian_nll", "full_gaussian_nll")

#: Log standard deviations are clamped here (standardised units) for numerical safety.
LOG_SIGMA_RANGE = (-7.0, 5.0)


def num_outputs(loss: str, num_targets: int) -> int:
    """Network outputs needed by ``loss`` for ``num_targets`` targets."""
    t = num_targets
    return {"mse": t, "gaussian_nll": 2 * t, "full_gaussian_nll": t + t * (t + 1) // 2}[loss]


def split_outputs(loss: str, outputs: Tensor, num_targets: int) -> tuple[Tensor, Tensor | None]:
    """``(mean (B, T), scale)`` where ``scale`` is ``None`` (mse), the std ``(B, T)`` or ``L (B, T, T)``."""
    t = num_targets
    mean = outputs[:, :t]
    if loss == "mse":
        return mean, None
    if loss == "gaussian_nll":
        return mean, torch.exp(outputs[:, t : 2 * t].clamp(*LOG_SIGMA_RANGE))
    rows, cols = torch.tril_indices(t, t, device=outputs.device)
    entries = outputs[:, t:]
    on_diagonal = rows == cols
    entries = torch.where(on_diagonal, torch.exp(entries.clamp(*LOG_SIGMA_RANGE)), entries)
    cholesky = outputs.new_zeros(outputs.shape[0], t, t)
    cholesky[:, rows, cols] = entries
    return mean, cholesky


def covariance(loss: str, scale: Tensor | None) -> Tensor | None:
    """Covariance ``(B, T, T)`` from the scale of :func:`split_outputs` (``None`` for mse)."""
    if scale is None:
        return None
    if loss == "gaussian_nll":
        return torch.diag_embed(scale**2)
    return scale @ scale.transpose(-1, -2)


def loss_value(loss: str, mean: Tensor, scale: Tensor | None, target: Tensor, beta: float = 0.0) -> Tensor:
    """The batch-mean loss of predictions ``(mean, scale)`` for standardised ``target`` ``(B, T)``."""
    residual = target - mean
    if loss == "mse":
        return residual.square().mean()
    if loss == "gaussian_nll":
        nll = 0.5 * (residual / scale).square() + torch.log(scale)
        if beta:
            nll = nll * scale.detach() ** (2 * beta)
        return nll.sum(-1).mean()
    # full covariance: 0.5 |L^-1 r|^2 + sum log diag L
    whitened = torch.linalg.solve_triangular(scale, residual.unsqueeze(-1), upper=False).squeeze(-1)
    log_det = torch.log(torch.diagonal(scale, dim1=-2, dim2=-1)).sum(-1)
    return (0.5 * whitened.square().sum(-1) + log_det).mean()
