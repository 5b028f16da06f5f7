"""Instrument: image geometry, PSF and noise (see ``conf/instrument/``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lenscnn.errors import UserError
from lenscnn.io.fits import read_psf_kernel


@dataclass(frozen=True)
class Instrument:
    """What the telescope and detector do to a lens.

    Attributes:
        name: preset name (for provenance only).
        image_size: ``(H, W)`` in pixels.
        pixel_scale: arcsec per pixel.
        supersampling: sub-pixels per pixel side used to integrate the surface brightness.
        psf: ``{"type": "gaussian", "fwhm": arcsec[, "truncate": sigmas]}``,
            ``{"type": "pixel", "path": FITS[, "hdu": 0]}`` or ``{"type": "none"}``.
        background_rms: Gaussian background noise [counts/s per pixel].
        exposure_time: for the shot noise [s].
        exact_poisson: draw Poisson counts instead of lenstronomy's Gaussian approximation.
    """

    name: str
    image_size: tuple[int, int]
    pixel_scale: float
    supersampling: int = 1
    psf: Mapping[str, Any] = field(default_factory=lambda: {"type": "none"})
    background_rms: float = 0.0
    exposure_time: float = float("inf")
    exact_poisson: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Instrument:
        """Validate an ``instrument`` config mapping; bad values raise :class:`UserError`."""
        cfg = dict(cfg)
        allowed = {"name", "image_size", "pixel_scale", "supersampling", "psf", "noise"}
        unknown = set(cfg) - allowed
        if unknown:
            raise UserError(f"instrument: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")
        for key in ("image_size", "pixel_scale"):
            if key not in cfg:
                raise UserError(f"instrument: '{key}' is required")
        size = cfg["image_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
            raise UserError(f"instrument.image_size must be a positive integer or [H, W], got {cfg['image_size']!r}")
        pixel_scale = _positive(cfg["pixel_scale"], "instrument.pixel_scale")
        supersampling = cfg.get("supersampling", 1)
        if not isinstance(supersampling, int) or isinstance(supersampling, bool) or supersampling < 1:
            raise UserError(f"instrument.supersampling must be an integer >= 1, got {supersampling!r}")
        psf = _parse_psf(cfg.get("psf") or {"type": "none"})
        noise = dict(cfg.get("noise") or {})
        unknown = set(noise) - {"background_rms", "exposure_time", "poisson"}
        if unknown:
            raise UserError(
                f"instrument.noise: unknown keys {sorted(unknown)}; use background_rms, exposure_time, poisson"
            )
        background_rms = _number(noise.get("background_rms", 0.0), "instrument.noise.background_rms")
        if background_rms < 0:
            raise UserError(f"instrument.noise.background_rms must be >= 0, got {background_rms}")
        exposure_time = _positive(noise.get("exposure_time", float("inf")), "instrument.noise.exposure_time")
        poisson = noise.get("poisson", "gaussian")
        if poisson not in ("gaussian", "exact"):
            raise UserError(f"instrument.noise.poisson must be 'gaussian' or 'exact', got {poisson!r}")
        if poisson == "exact" and not math.isfinite(exposure_time):
            raise UserError("instrument.noise.poisson 'exact' needs a finite noise.exposure_time [s]")
        return cls(
            name=str(cfg.get("name", "custom")),
            image_size=size,
            pixel_scale=pixel_scale,
            supersampling=supersampling,
            psf=psf,
            background_rms=background_rms,
            exposure_time=exposure_time,
            exact_poisson=poisson == "exact",
        )

    def psf_kernel(self) -> np.ndarray | None:
        """The 2-D kernel of a ``pixel`` PSF (read from its FITS file), else ``None``."""
        if self.psf["type"] != "pixel":
            return None
        return read_psf_kernel(self.psf["path"], self.psf.get("hdu", 0))


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{name} must be a number, got {value!r}")
    return float(value)


def _positive(value: Any, name: str) -> float:
    value = _number(value, name)
    if not value > 0:
        raise UserError(f"{name} must be > 0, got {value}")
    return value


def _parse_psf(psf: Mapping[str, Any]) -> dict[str, Any]:
    psf = dict(psf)
    kind = psf.get("type")
    keys = {"gaussian": {"type", "fwhm", "truncate"}, "pixel": {"type", "path", "hdu"}, "none": {"type"}}
    if kind not in keys:
        raise UserError(f"instrument.psf.type must be one of {sorted(keys)}, got {kind!r}")
    unknown = set(psf) - keys[kind]
    if unknown:
        raise UserError(f"instrument.psf: unknown keys {sorted(unknown)} for type {kind}; allowed {sorted(keys[kind])}")
    if kind == "gaussian":
        psf["fwhm"] = _positive(psf.get("fwhm"), "instrument.psf.fwhm")
        psf["truncate"] = _positive(psf.get("truncate", 5.0), "instrument.psf.truncate")
    if kind == "pixel" and not psf.get("path"):
        raise UserError("instrument.psf.path is required for a pixel PSF (a FITS file with the kernel)")
    return psf
