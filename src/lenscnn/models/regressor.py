"""LensRegressor: the LightningModule that trains any backbone to measure lens parameters."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pytorch_lightning import LightningModule
from torch import Tensor

from lenscnn.data.normalization import InputNormalizer, TargetScaler
from lenscnn.errors import UserError
from lenscnn.metrics.regression import per_target, regression_metrics
from lenscnn.models import build_backbone
from lenscnn.models.losses import LOSSES, covariance, loss_value, num_outputs, split_outputs

OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
SCHEDULERS = ("cosine", "constant")


class LensRegressor(LightningModule):
    """Predicts standardised lens parameters (and their uncertainties) from images.

    Everything needed to use a checkpoint later is a hyperparameter: the backbone spec,
    the targets with their standardisation, the input normalisation, the loss, the image
    size and pixel scale, and the simulator config of the training data.

    Args:
        net: backbone spec ``{"name": family, **kwargs}`` (see :data:`lenscnn.models.BACKBONES`).
        targets: :class:`TargetScaler` as a dict (names, prior mean and std).
        input_normalization: :class:`InputNormalizer` as a dict.
        loss: ``mse``, ``gaussian_nll`` or ``full_gaussian_nll``.
        nll_beta: beta of the beta-NLL for ``gaussian_nll`` (0: plain NLL; see :mod:`losses`).
        optimizer: ``{"name": adamw|adam|sgd, "lr": ..., **kwargs}``.
        scheduler: ``{"name": cosine|constant, "warmup_steps": int, "min_lr_ratio": float}``.
        image_size: ``(H, W)`` pixels. pixel_scale: arcsec per pixel.
        simulator: the simulator config the training data came from (provenance).
        compile: compile the backbone with ``torch.compile``.
        channels_last: run convolutions in channels-last memory format.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        targets: Mapping[str, Any],
        input_normalization: Mapping[str, Any],
        loss: str = "gaussian_nll",
        nll_beta: float = 0.0,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        image_size: Sequence[int] = (64, 64),
        pixel_scale: float = 0.08,
        simulator: Mapping[str, Any] | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise UserError(f"model.loss={loss!r} is not a loss; choose one of {list(LOSSES)}")
        optimizer = dict(optimizer or {"name": "adamw", "lr": 1e-3})
        if optimizer.get("name") not in OPTIMIZERS:
            raise UserError(f"model.optimizer.name={optimizer.get('name')!r}; choose one of {sorted(OPTIMIZERS)}")
        for key, value in optimizer.items():
            if key != "name" and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise UserError(f"model.optimizer.{key} must be a number, got {value!r}")
        if not optimizer.get("lr", 0) > 0:
            raise UserError(f"model.optimizer.lr must be > 0, got {optimizer.get('lr')!r}")
        scheduler = dict(scheduler or {"name": "constant"})
        if scheduler.get("name") not in SCHEDULERS:
            raise UserError(f"model.scheduler.name={scheduler.get('name')!r}; choose one of {list(SCHEDULERS)}")
        self.save_hyperparameters()
        self.scaler = TargetScaler.from_dict(targets)
        self.normalizer = InputNormalizer.from_dict(input_normalization)
        self.num_targets = len(self.scaler.names)
        # prior moments on the model's device (not saved: the hyperparameters hold them)
        self.register_buffer("target_mean", torch.tensor(self.scaler.mean), persistent=False)
        self.register_buffer("target_std", torch.tensor(self.scaler.std), persistent=False)
        self.net = build_backbone(net, num_outputs(loss, self.num_targets), tuple(image_size))
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.compile()
        else:  # Lightning's model summary counts the FLOPs of one image (a compiled net would compile for it)
            self.example_input_array = torch.zeros(1, 1, *image_size)
        self.val_metrics = regression_metrics(self.num_targets)
        self.test_metrics = regression_metrics(self.num_targets)

    # -- prediction -------------------------------------------------------------------

    @property
    def target_names(self) -> tuple[str, ...]:
        return self.scaler.names

    def forward(self, images: Tensor) -> Tensor:
        """Raw network outputs for images in counts/s per pixel ``(B, 1, H, W)``."""
        x = self.normalizer(images)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def predict_standardized(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(mean, scale)`` in standardised target units (see :func:`split_outputs`)."""
        return split_outputs(self.hparams.loss, self(images), self.num_targets)

    def predict_physical(self, images: Tensor) -> dict[str, Tensor | None]:
        """Predictions in physical units: ``mean (B, T)``, ``sigma (B, T)`` and ``covariance (B, T, T)``
        (``None`` for a model trained with ``mse``)."""
        mean_z, scale = self.predict_standardized(images)
        std = self.target_std
        cov_z = covariance(self.hparams.loss, scale)
        cov = None if cov_z is None else cov_z * std[:, None] * std[None, :]
        sigma = None if cov is None else torch.sqrt(torch.diagonal(cov, dim1=-2, dim2=-1))
        return {"mean": self._physical(mean_z), "sigma": sigma, "covariance": cov}

    def _physical(self, z: Tensor) -> Tensor:
        """Standardised targets ``(B, T)`` back to physical units."""
        return z * self.target_std + self.target_mean

    # -- training ---------------------------------------------------------------------

    def _step(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        truth = self.scaler.stack(batch["params"])
        mean_z, scale = self.predict_standardized(batch["image"])
        target_z = (truth - self.target_mean) / self.target_std
        loss = loss_value(self.hparams.loss, mean_z, scale, target_z, self.hparams.nll_beta)
        return loss, self._physical(mean_z), truth

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        loss, _, _ = self._step(batch)
        self.log("train/loss", loss)  # not on the progress bar: that would read it back to the host every step
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """Update the validation metrics; returns ``truth`` and ``prediction`` ``(B, T)`` in physical
        units (for callbacks such as :class:`lenscnn.training.callbacks.ExampleLenses`)."""
        loss, prediction, truth = self._step(batch)
        self.val_metrics.update(prediction, truth)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        return {"truth": truth, "prediction": prediction}

    def _log_epoch_metrics(self, stage: str) -> None:
        """Log the epoch's per-target RMSE/MAE/bias and ``<stage>/nrmse`` (mean of RMSE / prior std)."""
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        values = metrics.compute()
        metrics.reset()
        # torchmetrics already reduced the values over the ranks; sync_dist only marks them as such
        self.log_dict(per_target(values, self.target_names, stage), sync_dist=True)
        self.log(f"{stage}/nrmse", (values["rmse"] / self.target_std).mean(), prog_bar=stage == "val", sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        loss, prediction, truth = self._step(batch)
        self.test_metrics.update(prediction, truth)
        self.log("test/loss", loss, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the torch random state, so dropout continues identically after a resume."""
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["cuda_rng_states"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        if "cuda_rng_states" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng_states"])

    def configure_optimizers(self) -> dict:
        spec = dict(self.hparams.optimizer)
        optimizer = OPTIMIZERS[spec.pop("name")](self.parameters(), **spec)
        schedule = dict(self.hparams.scheduler)
        if schedule["name"] == "constant":
            return {"optimizer": optimizer}
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise UserError("scheduler cosine needs a finite run: set trainer.max_steps or trainer.max_epochs")
        warmup = int(schedule.get("warmup_steps", 0))
        min_ratio = float(schedule.get("min_lr_ratio", 0.0))
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, int(total) - warmup), eta_min=optimizer.defaults["lr"] * min_ratio
        )
        if warmup > 0:
            ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=warmup)
            cosine = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}
