"""Ensemble: one prediction from N trained networks (Hezaveh et al. 2017 averaged four).

Each member ``k`` predicts a Gaussian ``N(mu_k, sigma_k^2)`` per target (or only ``mu_k``
for a model trained with ``mse``). With MC dropout (Perreault Levasseur et al. 2017) every
member is run ``mc_samples`` times with dropout active, each pass one more mixture component.
With ``symmetries=8`` (test-time augmentation) every member (and pass) also predicts each of the
image's 8 flips and quarter-turns, mapped back to the image's frame (:mod:`lenscnn.models.symmetry`),
each one more component. The ensemble is the equal-weight mixture of all ``K`` components:

* mean ``mu = mean_k mu_k``;
* aleatoric variance ``mean_k sigma_k^2`` (the noise the networks see in the data);
* epistemic variance ``mean_k (mu_k - mu)^2`` (members, dropout passes and symmetries disagreeing);
* total variance = aleatoric + epistemic (the mixture variance); its square root, the total sigma,
  then goes through the fitted recalibration ``scale * sigma * (sigma / pivot) ** (power - 1)``
  per target (:class:`lenscnn.metrics.calibration.SigmaCalibration`).

An ensemble of one member without MC dropout is exactly that member.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lenscnn.errors import UserError
from lenscnn.metrics.calibration import SigmaCalibration
from lenscnn.models.calibration_record import calibration_fit, read_calibration
from lenscnn.models.checkpoint import model_from_checkpoint, read_checkpoint, resolve_checkpoint
from lenscnn.models.layers import fold_batch_norm
from lenscnn.models.regressor import LensRegressor
from lenscnn.models.symmetry import check_symmetries, symmetry_group, transform_images, untransform

if TYPE_CHECKING:
    from lenscnn.sim.lens_model import LensModel

log = logging.getLogger(__name__)

#: Images per forward pass of a member on a CPU (:meth:`Ensemble._pass`).
CPU_PASS_BATCH = 128


@dataclass
class Prediction:
    """Ensemble prediction in physical units (arcsec for ``theta_E`` and the centre), ``(B, T)`` each.

    ``sigma`` is the calibrated total standard deviation; ``aleatoric`` and ``epistemic`` are its
    uncalibrated parts. Each is ``None`` where the members cannot provide it (``mse`` members give
    no aleatoric part; a single component gives no epistemic part). ``member_means`` ``(M, B, T)``
    is each member's own mean (over its MC-dropout passes and symmetries), for comparing members.
    """

    mean: Tensor
    sigma: Tensor | None
    aleatoric: Tensor | None
    epistemic: Tensor | None
    member_means: Tensor


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12) for x, y in zip(a, b, strict=True))


def _numbers(record: Mapping[str, Any]) -> list[float]:
    """The numbers of a record whose values are numbers or lists of them (one per band), in order."""
    return [x for v in record.values() for x in (v if isinstance(v, list) else [v])]


def check_compatible(members: Sequence[LensRegressor], sources: Sequence[str]) -> None:
    """Refuse members that do not predict the same thing from the same input."""
    if not members:
        raise UserError("an ensemble needs at least one checkpoint")
    ref, ref_src = members[0], sources[0]
    for member, src in zip(members[1:], sources[1:], strict=True):
        a, b = ref.hparams, member.hparams
        checks = (
            ("targets", ref.scaler.names == member.scaler.names, ref.scaler.names, member.scaler.names),
            (
                "target normalisation",
                _close(ref.scaler.mean + ref.scaler.std, member.scaler.mean + member.scaler.std),
                ref.scaler.mean + ref.scaler.std,
                member.scaler.mean + member.scaler.std,
            ),
            ("image size", list(a.image_size) == list(b.image_size), list(a.image_size), list(b.image_size)),
            ("pixel scale", _close([a.pixel_scale], [b.pixel_scale]), a.pixel_scale, b.pixel_scale),
            ("bands", ref.bands == member.bands, list(ref.bands), list(member.bands)),
            (
                "input normalisation",
                _close(_numbers(ref.normalizer.to_dict()), _numbers(member.normalizer.to_dict())),
                ref.normalizer.to_dict(),
                member.normalizer.to_dict(),
            ),
        )
        for what, same, mine, theirs in checks:
            if not same:
                raise UserError(
                    f"ensemble members differ in {what}: {src} has {theirs}, {ref_src} has {mine}; "
                    "combine only models trained on the same targets, instrument and normalisation"
                )


@contextlib.contextmanager
def mc_dropout(model: nn.Module, source: str = "model") -> Iterator[None]:
    """Switch only the dropout layers of ``model`` to training mode (batch norm stays frozen)."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
    if not layers:
        raise UserError(f"mc_samples > 0 needs dropout, but {source} has none; train it with model.net.dropout > 0")
    for layer in layers:
        layer.train()
    try:
        yield
    finally:
        for layer in layers:
            layer.eval()


class Ensemble(nn.Module):
    """Equal-weight mixture of trained :class:`LensRegressor` members.

    Args:
        members: compatible models (same targets, normalisations, image size, pixel scale).
        sigma_calibration: the recalibration of the total sigma per target (default: none).
        sources: where each member came from (for messages and calibration records).
        calibration: the calibration record ``sigma_calibration`` came from (provenance;
            :mod:`lenscnn.models.calibration_record`).
    """

    def __init__(
        self,
        members: Sequence[LensRegressor],
        sigma_calibration: SigmaCalibration | None = None,
        sources: Sequence[str] | None = None,
        calibration: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.sources = list(sources or [f"member {k}" for k in range(len(members))])
        self.calibration = None if calibration is None else dict(calibration)
        check_compatible(members, self.sources)
        self.members = nn.ModuleList(members)
        fit = sigma_calibration or SigmaCalibration.identity(len(self.target_names))
        for name, value in zip(("sigma_scale", "sigma_power", "sigma_pivot"), fit, strict=True):
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32).clone())
        self.eval()

    @property
    def sigma_calibration(self) -> SigmaCalibration:
        """The recalibration applied to the total sigma (identity when none was fitted)."""
        return SigmaCalibration(self.sigma_scale, self.sigma_power, self.sigma_pivot)

    @sigma_calibration.setter
    def sigma_calibration(self, fit: SigmaCalibration) -> None:
        for buffer, value in zip(self.sigma_calibration, fit, strict=True):
            buffer.copy_(torch.as_tensor(value))

    # -- what the members share -------------------------------------------------------

    @property
    def reference(self) -> LensRegressor:
        return self.members[0]

    @property
    def target_names(self) -> tuple[str, ...]:
        return self.reference.target_names

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.reference.hparams.image_size)

    @property
    def bands(self) -> tuple[str, ...]:
        """The members' bands, one input channel each."""
        return self.reference.bands

    @property
    def pixel_scale(self) -> float:
        return float(self.reference.hparams.pixel_scale)

    @property
    def simulator_config(self) -> dict[str, Any]:
        return dict(self.reference.hparams.simulator or {})

    @property
    def lens_model(self) -> LensModel:
        """The lens model the members were trained on (the prior of their simulator config; checkpoints
        written before lens models were declared read as SIE (+ SHEAR) + Sersic source (+ lens light))."""
        prior = self.simulator_config.get("prior")
        if not prior:
            raise UserError("the model's checkpoint has no simulator config, so its lens model is unknown")
        # lenscnn.sim.prior_config imports the prior, so the galaxy libraries (h5py, astropy, scipy): only when asked
        from lenscnn.sim.prior_config import lens_model_of

        return lens_model_of(prior)

    @property
    def predicts_uncertainty(self) -> bool:
        """True if every member predicts its own (aleatoric) sigma (none was trained with ``mse``)."""
        return all(m.hparams.loss != "mse" for m in self.members)

    def gives_sigma(self, mc_samples: int = 0, symmetries: int = 1) -> bool:
        """True if :meth:`predict` returns a sigma: the members predict one, or there are several
        mixture components (members, MC-dropout passes or symmetries) whose spread is one."""
        return self.predicts_uncertainty or len(self.members) > 1 or mc_samples > 0 or symmetries > 1

    @property
    def device(self) -> torch.device:
        return self.sigma_scale.device

    def fingerprint(self) -> str:
        """A digest of the members' weights and the sigma recalibration: what decides the answers (two
        loads of the same files give the same fingerprint; any retraining or recalibration another)."""
        digest = hashlib.sha256()
        for name, tensor in self.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()[:20]

    # -- prediction -------------------------------------------------------------------

    def symmetries(self, requested: int | None = None) -> int:
        """``requested`` (1 or 8), or for ``None`` the setting the calibration was fitted with (1 without
        a calibration): an ensemble calibrated with ``symmetries=8`` predicts with 8 unless told otherwise."""
        if requested is not None:
            return check_symmetries(requested)
        return int((self.calibration or {}).get("symmetries", 1))

    def check_calibration_mode(self, mc_samples: int, symmetries: int = 1) -> None:
        """Warn if the stored calibration was fitted with another number of MC-dropout passes or
        of symmetries (the scale then does not fit the sigma it multiplies). A record without
        ``symmetries`` (written before there were any) was fitted with 1. Warn too if several members
        come without any calibration (e.g. copied without their ``calibration.json``)."""
        if self.calibration is None and len(self.members) > 1:
            log.warning(
                "no sigma calibration for these %d members (no calibration.json beside them): sigma is the raw "
                "mixture's and its intervals may not hold; calibrate with lenscnn-eval calibrate=true",
                len(self.members),
            )
        fitted = (self.calibration or {}).get("mc_samples")
        if fitted is not None and fitted != mc_samples:
            log.warning(
                "the calibration was fitted with mc_samples=%s, you predict with mc_samples=%s: "
                "coverage may be off; re-run lenscnn-eval calibrate=true mc_samples=%s",
                fitted,
                mc_samples,
                mc_samples,
            )
        fitted = self.calibration.get("symmetries", 1) if self.calibration else None
        if fitted is not None and fitted != symmetries:
            log.warning(
                "the calibration was fitted with symmetries=%s, you predict with symmetries=%s: "
                "coverage may be off; re-run lenscnn-eval calibrate=true symmetries=%s",
                fitted,
                symmetries,
                symmetries,
            )

    @torch.inference_mode()
    def predict(self, images: Tensor, mc_samples: int = 0, symmetries: int | None = None) -> Prediction:
        """Predict images ``(B, C, H, W)`` in counts/s per pixel (a channel per band; normalised once, as every
        member would, :class:`lenscnn.data.normalization.InputNormalizer`).

        Args:
            mc_samples: MC-dropout passes per member (0: dropout off).
            symmetries: 1 (the images as given) or 8: also their flips and quarter-turns (each
                member then sees one batch of ``8 B`` images per pass); ``None``: as calibrated
                (:meth:`symmetries`).
        """
        if mc_samples < 0:
            raise UserError(f"mc_samples must be >= 0, got {mc_samples}")
        group = symmetry_group(self.symmetries(symmetries), self.target_names)
        self.reference.check_bands(images)
        # the members share their input normalisation (check_compatible): applied once, before the symmetries (a
        # pixel-wise stretch commutes with flips and quarter-turns), not once per member and view
        images = self.reference.normalizer(images.to(self.device, torch.float32))
        n = images.shape[0]
        views = images if len(group) == 1 else torch.cat([transform_images(images, s) for s in group])
        means, variances = [], []
        for member, source in zip(self.members, self.sources, strict=True):
            context = mc_dropout(member, source) if mc_samples else contextlib.nullcontext()
            with context:
                for _ in range(max(1, mc_samples)):
                    out = self._pass(member, views)
                    for k, symmetry in enumerate(group):
                        part = slice(k * n, (k + 1) * n)
                        sigma = None if out["sigma"] is None else out["sigma"][part]
                        mean, sigma = untransform(out["mean"][part], sigma, self.target_names, symmetry)
                        means.append(mean)
                        if sigma is not None:
                            variances.append(sigma.square())
        mu = torch.stack(means)
        mean = mu.mean(0)
        aleatoric_var = torch.stack(variances).mean(0) if len(variances) == len(means) else None
        epistemic_var = mu.var(0, correction=0) if len(means) > 1 else None
        parts = [v for v in (aleatoric_var, epistemic_var) if v is not None]
        sigma = self.sigma_calibration.apply(torch.sqrt(sum(parts))) if parts else None
        return Prediction(
            mean=mean,
            member_means=mu.view(len(self.members), max(1, mc_samples) * len(group), *mean.shape).mean(1),
            sigma=sigma,
            aleatoric=None if aleatoric_var is None else aleatoric_var.sqrt(),
            epistemic=None if epistemic_var is None else epistemic_var.sqrt(),
        )

    @staticmethod
    def _pass(member: LensRegressor, views: Tensor) -> dict[str, Tensor | None]:
        """``member.predict_physical`` of normalised ``views``, on a CPU in chunks of :data:`CPU_PASS_BATCH` images (a
        2048-image pass of the 8 symmetries of 256 lenses runs at half the images/s of 128-image ones there:
        the activations leave the cache); on an accelerator in one pass."""
        if views.device.type != "cpu" or len(views) <= CPU_PASS_BATCH:
            return member.predict_physical(views, normalized=True)
        parts = [member.predict_physical(chunk, normalized=True) for chunk in views.split(CPU_PASS_BATCH)]
        return {k: None if parts[0][k] is None else torch.cat([p[k] for p in parts]) for k in parts[0]}

    # -- building ---------------------------------------------------------------------

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str | Path], calibration: str | Path | None = None) -> Ensemble:
        """Load members from checkpoint files or run directories.

        The calibration of a single member is read from its checkpoint; that of several from the
        JSON file ``calibration`` (written by ``lenscnn-eval calibrate=true``) if it exists and was
        fitted for exactly these members. The members are for inference only: their batch norms are folded
        into the convolutions (:func:`lenscnn.models.layers.fold_batch_norm`).
        """
        files = [resolve_checkpoint(p) for p in paths]
        checkpoints = [read_checkpoint(f) for f in files]
        members = [model_from_checkpoint(c, str(f)) for c, f in zip(checkpoints, files, strict=True)]
        for member in members:
            fold_batch_norm(member.net)
        record = checkpoints[0].get("calibration") if len(files) == 1 else read_calibration(calibration, files)
        source = files[0] if len(files) == 1 else calibration
        fit = calibration_fit(record, members[0].target_names, source)
        return cls(members, fit, [str(f) for f in files], record if fit is not None else None)
