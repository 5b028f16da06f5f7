"""LensRegressor: the LightningModule that trains any backbone to measure lens parameters; WarmupCosine: its
learning-rate schedule, a function of the optimizer step and the planned steps of the run (``trainer.max_steps``
/ ``max_epochs``, or what a wall-time budget allows), which follows a resume with a larger budget."""

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
#: Optimizer options that are switches: ``fused`` (one kernel for the whole update, CPU and CUDA) and ``foreach``.
OPTIMIZER_SWITCHES = ("fused", "foreach")


def check_scheduler(scheduler: Mapping[str, Any]) -> None:
    """Refuse a ``cosine`` ``model.scheduler`` whose warmup (optimizer steps) or floor (fraction of the peak)
    is invalid."""
    if scheduler.get("name") != "cosine":
        return
    warmup, floor = scheduler.get("warmup_steps", 0), scheduler.get("min_lr_ratio", 0.0)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise UserError(f"model.scheduler.warmup_steps must be an integer >= 0, got {warmup!r}")
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0.0 <= floor <= 1.0:
        raise UserError(f"model.scheduler.min_lr_ratio must be a number in [0, 1], got {floor!r}")


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
        optimizer: ``{"name": adamw|adam|sgd, "lr": ..., **kwargs}`` (numbers, and the switches ``fused`` and
            ``foreach``).
        scheduler: ``{"name": cosine|constant, "warmup_steps": int, "min_lr_ratio": float}``: ``cosine`` is
            :class:`WarmupCosine` over the planned run (it follows the step or wall-time budget, also
            across a resume).
        image_size: ``(H, W)`` pixels. pixel_scale: arcsec per pixel.
        simulator: the simulator config the training data came from (provenance).
        compile: compile the backbone with ``torch.compile``.
        channels_last: run convolutions in channels-last memory format.
        bands: the names of the image's bands, one input channel each (``None``: one band; checkpoints of
            single-band models have none); ``model.net.in_channels`` follows from them.
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
        bands: Sequence[str] | None = None,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise UserError(f"model.loss={loss!r} is not a loss; choose one of {list(LOSSES)}")
        optimizer = dict(optimizer or {"name": "adamw", "lr": 1e-3})
        if optimizer.get("name") not in OPTIMIZERS:
            raise UserError(f"model.optimizer.name={optimizer.get('name')!r}; choose one of {sorted(OPTIMIZERS)}")
        for key, value in optimizer.items():
            if key in OPTIMIZER_SWITCHES:
                if not isinstance(value, bool):
                    raise UserError(f"model.optimizer.{key} must be true or false, got {value!r}")
            elif key != "name" and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise UserError(f"model.optimizer.{key} must be a number, got {value!r}")
        if not optimizer.get("lr", 0) > 0:
            raise UserError(f"model.optimizer.lr must be > 0, got {optimizer.get('lr')!r}")
        scheduler = dict(scheduler or {"name": "constant"})
        if scheduler.get("name") not in SCHEDULERS:
            raise UserError(f"model.scheduler.name={scheduler.get('name')!r}; choose one of {list(SCHEDULERS)}")
        check_scheduler(scheduler)
        self.save_hyperparameters()
        self.scaler = TargetScaler.from_dict(targets)
        self.normalizer = InputNormalizer.from_dict(input_normalization)
        self.num_targets = len(self.scaler.names)
        # prior moments on the model's device (not saved: the hyperparameters hold them)
        self.register_buffer("target_mean", torch.tensor(self.scaler.mean), persistent=False)
        self.register_buffer("target_std", torch.tensor(self.scaler.std), persistent=False)
        self.bands = tuple(bands or ("image",))
        if self.normalizer.bands != len(self.bands):
            raise UserError(
                f"input_normalization scales {self.normalizer.bands} band(s), the model takes {len(self.bands)}"
            )
        channels = net.get("in_channels", len(self.bands))
        if channels != len(self.bands):
            raise UserError(
                f"model.net.in_channels={channels}, but the images have {len(self.bands)} band(s) "
                f"({', '.join(self.bands)}): leave in_channels out, the data sets it"
            )
        spec = {**net, "in_channels": channels} if len(self.bands) > 1 else dict(net)
        self.net = build_backbone(spec, num_outputs(loss, self.num_targets), tuple(image_size))
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.compile()
        else:  # Lightning's model summary counts the FLOPs of one image (a compiled net would compile for it)
            self.example_input_array = torch.zeros(1, len(self.bands), *image_size)
        self.val_metrics = regression_metrics(self.num_targets)
        self.test_metrics = regression_metrics(self.num_targets)

    # -- prediction -------------------------------------------------------------------

    @property
    def target_names(self) -> tuple[str, ...]:
        return self.scaler.names

    def forward(self, images: Tensor) -> Tensor:
        """Raw network outputs for images in counts/s per pixel ``(B, C, H, W)`` (a channel per band of
        :attr:`bands`), in float32 also under bf16 autocast (the loss and the predictions are computed from them)."""
        self.check_bands(images)
        return self.network_outputs(self.normalizer(images))

    def check_bands(self, images: Tensor) -> None:
        """Refuse images ``(B, C, H, W)`` with another number of channels than the model has bands."""
        if images.shape[1] != len(self.bands):
            raise UserError(
                f"the model takes {len(self.bands)} band(s) ({', '.join(self.bands)}); the images have "
                f"{images.shape[1]}: give it images in its bands, or use a model of these"
            )

    def network_outputs(self, x: Tensor) -> Tensor:
        """:meth:`forward` of images already normalised (``self.normalizer(images)``)."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x).float()

    def predict_standardized(self, images: Tensor, normalized: bool = False) -> tuple[Tensor, Tensor | None]:
        """``(mean, scale)`` in standardised target units (see :func:`split_outputs`); ``normalized``: the images
        are already normalised (an ensemble whose members share the normalisation does it once)."""
        outputs = self.network_outputs(images) if normalized else self(images)
        return split_outputs(self.hparams.loss, outputs, self.num_targets)

    def predict_physical(self, images: Tensor, normalized: bool = False) -> dict[str, Tensor | None]:
        """Predictions in physical units: ``mean (B, T)``, ``sigma (B, T)`` and ``covariance (B, T, T)``
        (``None`` for a model trained with ``mse``); ``normalized`` as for :meth:`predict_standardized`."""
        mean_z, scale = self.predict_standardized(images, normalized)
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
        """The optimizer and, for ``cosine``, a :class:`WarmupCosine` stepped after every optimizer step
        over the run's planned steps: ``trainer.max_steps`` / ``trainer.max_epochs`` of *this* fit (a
        resumed run's new limits included), re-planned by :class:`lenscnn.training.time_budget.TimeBudget`."""
        spec = dict(self.hparams.optimizer)
        optimizer = OPTIMIZERS[spec.pop("name")](self.parameters(), **spec)
        schedule = dict(self.hparams.scheduler)
        if schedule["name"] == "constant":
            return {"optimizer": optimizer}
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise UserError("scheduler cosine needs a finite run: set trainer.max_steps or trainer.max_epochs")
        cosine = WarmupCosine(
            optimizer,
            total_steps=int(total),
            warmup_steps=int(schedule.get("warmup_steps", 0)),
            min_lr_ratio=float(schedule.get("min_lr_ratio", 0.0)),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}


class WarmupCosine(torch.optim.lr_scheduler.LRScheduler):
    """A linear warmup, then a cosine from the peak learning rate down to ``min_lr_ratio`` x the peak at
    the end of the planned run, as a closed form of the step and the plan only.

    Optimizer step ``k`` (0-based; ``last_epoch`` counts optimizer steps) trains at ``lr x f(k)``, with
    ``f(k) = s + (1 - s) k / w`` during the ``w = warmup_steps`` warmup steps (``s = 1e-3``), then
    ``f(k) = r + (1 - r) (1 + cos(pi p)) / 2`` with ``r = min_lr_ratio`` and the progress
    ``p = min(1, (k - w) / (total_steps - w))``: the floor ``r x lr`` is reached when the plan ends and
    held after it (the schedule never rises again).

    The plan ``total_steps`` is not part of the schedule's saved state: a run resumed from a checkpoint
    continues at its step on the plan of the resumed fit (its ``trainer.max_steps`` / ``max_epochs``, and
    its learning rate), so a resume with a larger budget continues the same shape over the new total
    (no second warmup, no rise from the floor as a restored ``CosineAnnealingLR`` would), and an
    interrupted run resumed with its own budget trains at bit-identical learning rates.
    :meth:`set_total_steps` re-plans a running fit (a wall-time budget does, see
    :class:`lenscnn.training.time_budget.TimeBudget`): the next step trains at the learning rate of the
    new plan.

    Args:
        optimizer: the optimizer whose learning rates (``lr`` of its parameter groups) are the peaks.
        total_steps: planned optimizer steps of the whole run (from step 0), >= 1.
        warmup_steps: optimizer steps of the linear warmup, >= 0.
        min_lr_ratio: the final learning rate as a fraction of the peak, in [0, 1].
    """

    START_FACTOR = 1e-3

    def __init__(
        self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0
    ):
        if warmup_steps < 0:
            raise UserError(f"model.scheduler.warmup_steps must be >= 0, got {warmup_steps}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise UserError(f"model.scheduler.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps, self.min_lr_ratio = int(warmup_steps), float(min_lr_ratio)
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` as a fraction of the peak."""
        if step < self.warmup_steps:
            return self.START_FACTOR + (1.0 - self.START_FACTOR) * step / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    _get_closed_form_lr = get_lr

    def set_total_steps(self, total_steps: int) -> None:
        """Re-plan the run to ``total_steps`` optimizer steps; the next step follows the new plan."""
        self.total_steps = max(1, int(total_steps))
        self._apply()

    def _apply(self) -> None:
        """Set the optimizer's learning rates to those of the current step on the current plan."""
        lrs = self.get_lr()
        for group, lr, base in zip(self.optimizer.param_groups, lrs, self.base_lrs, strict=True):
            group["lr"], group["initial_lr"] = lr, base
        self._last_lr = lrs

    def state_dict(self) -> dict[str, Any]:
        """The step reached (``total_steps``: the plan then, for reading; a resume does not restore it)."""
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count, "total_steps": self.total_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from the saved step on this fit's plan and peak learning rate. Also reads the state of
        the ``SequentialLR(LinearLR, CosineAnnealingLR)`` that earlier versions saved (its step only)."""
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        self._apply()
