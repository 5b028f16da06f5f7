"""Instrument: image geometry, and per band a PSF and noise (see ``conf/instrument/``).

An instrument images every lens in one or more bands on one common pixel grid (Euclid's cutouts resample
NISP's Y, J and H onto VIS's 0.1" pixels; a ground-based survey's coadds share their grid): ``bands:`` lists
them, each with its own PSF, noise and AB zero point. Without ``bands:`` the instrument has one band, its
``psf`` and ``noise`` (the images are ``(n, 1, H, W)`` and render as they always have).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lenscnn.errors import UserError
from lenscnn.io.fits import read_psf_kernel


@dataclass(frozen=True)
class Band:
    """One band of an instrument.

    Attributes:
        name: the band's name (e.g. ``VIS``, ``Y``, ``r``), a valid identifier: it names the band's colour
            parameters (:mod:`lenscnn.sim.colours`).
        psf: as :attr:`Instrument.psf`.
        background_rms: Gaussian background noise [counts/s per pixel].
        exposure_time: for the shot noise [s].
        zero_point: AB magnitude of a source of 1 count/s (``None``: that of the first band, which needs one
            if any other band has one); colours in AB magnitudes become ratios of counts/s between bands by them.
    """

    name: str
    psf: Mapping[str, Any]
    background_rms: float
    exposure_time: float
    zero_point: float | None = None


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
        bands: every band (the first one's ``psf``, ``background_rms`` and ``exposure_time`` are the
            attributes above); empty: one band of those attributes, named after the instrument.
    """

    name: str
    image_size: tuple[int, int]
    pixel_scale: float
    supersampling: int = 1
    psf: Mapping[str, Any] = field(default_factory=lambda: {"type": "none"})
    background_rms: float = 0.0
    exposure_time: float = float("inf")
    exact_poisson: bool = False
    bands: tuple[Band, ...] = ()

    def __post_init__(self) -> None:
        if not self.bands:
            object.__setattr__(self, "bands", (Band(self.name, self.psf, self.background_rms, self.exposure_time),))

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Instrument:
        """Validate an ``instrument`` config mapping; bad values raise :class:`UserError`."""
        cfg = dict(cfg)
        allowed = {"name", "image_size", "pixel_scale", "supersampling", "psf", "noise", "bands"}
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
        noise = dict(cfg.get("noise") or {})
        poisson = noise.pop("poisson", "gaussian")
        if poisson not in ("gaussian", "exact"):
            raise UserError(f"instrument.noise.poisson must be 'gaussian' or 'exact', got {poisson!r}")
        name = str(cfg.get("name", "custom"))
        if cfg.get("bands") is None:
            bands = (_parse_band({"name": name, "psf": cfg.get("psf"), "noise": noise}, "instrument"),)
        else:
            if "psf" in cfg or noise:
                raise UserError(
                    "instrument: with bands, give each band its psf and noise (instrument.bands[k].psf, "
                    ".noise); only noise.poisson is shared"
                )
            bands = _parse_bands(cfg["bands"])
        if poisson == "exact" and not all(math.isfinite(b.exposure_time) for b in bands):
            raise UserError("instrument.noise.poisson 'exact' needs a finite noise.exposure_time [s]")
        first = bands[0]
        return cls(
            name=name,
            image_size=size,
            pixel_scale=pixel_scale,
            supersampling=supersampling,
            psf=first.psf,
            background_rms=first.background_rms,
            exposure_time=first.exposure_time,
            exact_poisson=poisson == "exact",
            bands=bands,
        )

    def psf_kernel(self, band: int = 0) -> np.ndarray | None:
        """The 2-D kernel of band ``band``'s PSF if it is a ``pixel`` one (read from its FITS file), else ``None``."""
        psf = self.bands[band].psf
        if psf["type"] != "pixel":
            return None
        return read_psf_kernel(psf["path"], psf.get("hdu", 0))


def _parse_band(cfg: Mapping[str, Any], where: str) -> Band:
    """One band's ``name``, ``psf``, ``noise`` (``background_rms``, ``exposure_time``) and ``zero_point``."""
    unknown = set(cfg) - {"name", "psf", "noise", "zero_point"}
    if unknown:
        raise UserError(f"{where}: unknown keys {sorted(unknown)}; allowed name, psf, noise, zero_point")
    psf = _parse_psf(cfg.get("psf") or {"type": "none"}, where)
    noise = dict(cfg.get("noise") or {})
    unknown = set(noise) - {"background_rms", "exposure_time"}
    if unknown:
        raise UserError(f"{where}.noise: unknown keys {sorted(unknown)}; use background_rms, exposure_time, poisson")
    background_rms = _number(noise.get("background_rms", 0.0), f"{where}.noise.background_rms")
    if background_rms < 0:
        raise UserError(f"{where}.noise.background_rms must be >= 0, got {background_rms}")
    exposure_time = _positive(noise.get("exposure_time", float("inf")), f"{where}.noise.exposure_time")
    zero_point = cfg.get("zero_point")
    zero_point = None if zero_point is None else _number(zero_point, f"{where}.zero_point")
    return Band(str(cfg["name"]), psf, background_rms, exposure_time, zero_point)


def _parse_bands(bands: Any) -> tuple[Band, ...]:
    if not isinstance(bands, (list, tuple)) or not bands:
        raise UserError(f"instrument.bands must be a non-empty list of bands (name, psf, noise), got {bands!r}")
    parsed = []
    for k, band in enumerate(bands):
        where = f"instrument.bands[{k}]"
        if not isinstance(band, Mapping) or not isinstance(band.get("name"), str) or not band["name"].isidentifier():
            raise UserError(f"{where}: each band needs a name that is an identifier (e.g. VIS, Y, r), got {band!r}")
        parsed.append(_parse_band(band, where))
    names = [b.name for b in parsed]
    if len(set(names)) < len(names):
        raise UserError(f"instrument.bands: band names must differ, got {names}")
    if parsed[0].zero_point is None and any(b.zero_point is not None for b in parsed[1:]):
        raise UserError(
            f"instrument.bands: give the first band ({names[0]}) a zero_point too: the others' are relative to it"
        )
    return tuple(parsed)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{name} must be a number, got {value!r}")
    return float(value)


def _positive(value: Any, name: str) -> float:
    value = _number(value, name)
    if not value > 0:
        raise UserError(f"{name} must be > 0, got {value}")
    return value


def _parse_psf(psf: Mapping[str, Any], where: str = "instrument") -> dict[str, Any]:
    psf = dict(psf)
    kind = psf.get("type")
    keys = {"gaussian": {"type", "fwhm", "truncate"}, "pixel": {"type", "path", "hdu"}, "none": {"type"}}
    if kind not in keys:
        raise UserError(f"{where}.psf.type must be one of {sorted(keys)}, got {kind!r}")
    unknown = set(psf) - keys[kind]
    if unknown:
        raise UserError(f"{where}.psf: unknown keys {sorted(unknown)} for type {kind}; allowed {sorted(keys[kind])}")
    if kind == "gaussian":
        psf["fwhm"] = _positive(psf.get("fwhm"), f"{where}.psf.fwhm")
        psf["truncate"] = _positive(psf.get("truncate", 5.0), f"{where}.psf.truncate")
    if kind == "pixel" and not psf.get("path"):
        raise UserError(f"{where}.psf.path is required for a pixel PSF (a FITS file with the kernel)")
    return psf
