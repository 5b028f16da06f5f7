"""Observation nuisances: what real images carry beyond the lens (see ``conf/observation/``).

An observation config varies, image by image, what the instrument fixes: a residual sky level, the
PSF, the noise, and detector artefacts. Every section is optional and composes with any instrument
and prior (``lenscnn-train prior=realistic observation=survey``)::

    sky:                                                    # residual sky after background subtraction
      fraction: 0.7                                         # share of images with one (others: none)
      pedestal: {dist: uniform, low: -30, high: 30}         # constant level [background rms]
      gradient: {dist: uniform, low: 0, high: 10}           # change across the field [background rms], any direction
    psf:                                                    # one PSF per image, replacing the instrument's
      fwhm: {dist: uniform, low: 0.08, high: 0.25}          # [arcsec]
      moffat_fraction: 0.5                                  # Moffat share (others Gaussian)
      beta: {dist: uniform, low: 2.0, high: 5.0}            # Moffat index
      truncate: 4.0                                         # kernel half-size [widest FWHM]
      levels: [48, 8]                                       # FWHM and beta values of the kernel bank
      # library: psfs.fits                                  # or: kernels from a FITS cube/directory, drawn uniformly
    noise:
      background_rms: {dist: log_uniform, low: 0.5, high: 4}   # x the instrument's
      exposure_time: {dist: log_uniform, low: 0.25, high: 4}   # x the instrument's
      correlation: {dist: uniform, low: 0, high: 0.5}          # neighbour correlation of the background noise
    artefacts:
      cosmic_rays: {dist: uniform, low: 0, high: 30}        # hits per image (rounded down)
      cosmic_ray_length: [0, 8]                             # pixels (0: one pixel)
      cosmic_ray_amplitude: [5, 500]                        # [background rms], log-uniform
      hot_pixels: {dist: uniform, low: 0, high: 6}
      hot_pixel_amplitude: [5, 100]
      masked_regions: {dist: uniform, low: 0, high: 2}      # disks set to ``fill`` (NaN pixels filled by predict)
      mask_radius: [1, 4]                                   # pixels
      fill: 0.0                                             # what ``lenscnn-predict fill_nan=0`` puts there

Each image's draws are parameters like the lens's (recorded in HDF5/FITS files), named in
:mod:`lenscnn.params`: ``sky_pedestal``, ``sky_gradient_x/y`` [counts/s per pixel (per arcsec)],
``psf_fwhm`` [arcsec], ``psf_beta`` (0: Gaussian), ``psf_index`` (library), ``background_rms``
[counts/s], ``exposure_time`` [s], ``noise_correlation``, ``cosmic_rays``, ``hot_pixels``,
``masked_regions`` (counts). Where each cosmic ray falls is a pure function of the image's noise
seed, like its noise, so a rendering without noise has neither.

PSFs of a family come from a bank computed once (and Fourier-transformed once) on the simulator's
device: the drawn FWHM and beta are rounded to the nearest of ``levels`` values spread evenly over
their ranges (48 and 8 by default: FWHM steps of 0.0036" for 0.08-0.25"), and the rounded values are
the ones recorded, so every image's PSF is exactly the one its parameters say.

The noise of an observation: the background (rms ``background_rms``, correlated between neighbour
pixels by ``noise_correlation`` as drizzling does) plus Gaussian shot noise of the lens's counts in
``exposure_time``; the sky residual carries no extra shot noise (it is what background subtraction
left, within the background noise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lenscnn.errors import UserError
from lenscnn.io.fits import read_psf_library
from lenscnn.sim.distributions import Distribution, parse_distribution
from lenscnn.sim.func.artefacts import masked_disks, sky_background, streaks
from lenscnn.sim.func.grid import pixel_grid
from lenscnn.sim.func.noise import correlated_normal, counter_normal
from lenscnn.sim.func.psf import convolve_fft, gaussian_kernels, kernel_fwhm, kernel_transform, moffat_kernels
from lenscnn.sim.instrument import Instrument

#: Counter ranges of the per-image random fields (the shot noise uses ``[0, H W)``).
BACKGROUND_COUNTERS = 1 << 24
COSMIC_RAY_COUNTERS = 2 << 24
HOT_PIXEL_COUNTERS = 3 << 24
MASK_COUNTERS = 4 << 24

SECTIONS = {
    "sky": {"fraction", "pedestal", "gradient"},
    "psf": {"fwhm", "moffat_fraction", "beta", "truncate", "levels", "library", "hdu"},
    "noise": {"background_rms", "exposure_time", "correlation"},
    "artefacts": {
        "cosmic_rays",
        "cosmic_ray_length",
        "cosmic_ray_amplitude",
        "hot_pixels",
        "hot_pixel_amplitude",
        "masked_regions",
        "mask_radius",
        "fill",
    },
}


def _range(value: Any, name: str, low: float = 0.0) -> tuple[float, float]:
    """A ``[low, high]`` pair of numbers >= ``low``."""
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok or not low <= value[0] <= value[1]:
        raise UserError(f"observation.{name} must be [low, high] with {low} <= low <= high, got {value!r}")
    return float(value[0]), float(value[1])


def _fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise UserError(f"observation.{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _distribution(spec: Any, name: str, low: float, high: float = math.inf, open_low: bool = False) -> Distribution:
    dist = parse_distribution(spec, f"observation.{name}")
    a, b = dist.support
    if a < low or (open_low and a <= low) or b > high:
        bracket = "(" if open_low else "["
        raise UserError(f"observation.{name}: values must lie in {bracket}{low}, {high}], but it allows [{a}, {b}]")
    return dist


def _levels(dist: Distribution, count: int) -> Tensor:
    """``count`` values spread evenly over the support of ``dist`` (one for a fixed value)."""
    low, high = dist.support
    return torch.linspace(low, high, count if high > low else 1, dtype=torch.float64).float()


def _nearest(levels: Tensor, values: Tensor) -> Tensor:
    """Each of ``values`` rounded to the nearest of ``levels``."""
    return levels[(values[:, None] - levels).abs().argmin(dim=1)]


class Observation(nn.Module):
    """The observation nuisances of a config (see the module docstring): drawn per image by
    :meth:`sample`, applied by :meth:`apply` to noiseless lens images on the simulator's device."""

    def __init__(self, spec: Mapping[str, Any], instrument: Instrument):
        super().__init__()
        spec = {k: dict(v) for k, v in (spec or {}).items() if v}
        unknown = set(spec) - set(SECTIONS)
        if unknown:
            raise UserError(f"observation: unknown sections {sorted(unknown)}; use {sorted(SECTIONS)}")
        for section, keys in spec.items():
            extra = set(keys) - SECTIONS[section]
            if extra:
                raise UserError(f"observation.{section}: unknown keys {sorted(extra)}; use {sorted(SECTIONS[section])}")
        if spec and instrument.exact_poisson:
            raise UserError("observation nuisances draw Gaussian noise: set instrument.noise.poisson=gaussian")
        self.spec = spec
        self.instrument = instrument
        self.shape = instrument.image_size
        self.pixel_scale = instrument.pixel_scale
        x, y = pixel_grid(*self.shape, instrument.pixel_scale)
        self.register_buffer("pixel_x", x, persistent=False)
        self.register_buffer("pixel_y", y, persistent=False)
        # counters of the per-pixel random fields (buffers: the compiler folds no 64-bit products)
        height, width = self.shape
        self.register_buffer("shot_counter", torch.arange(height * width).view(height, width), persistent=False)
        padded = torch.arange((height + 2) * (width + 2)).view(height + 2, width + 2)
        self.register_buffer("background_counter", padded + BACKGROUND_COUNTERS, persistent=False)
        self._parse_noise(spec.get("noise", {}))
        self._parse_sky(spec.get("sky"))
        self._parse_psf(spec.get("psf"))
        self._parse_artefacts(spec.get("artefacts"))

    # -- configuration -------------------------------------------------------------------------

    def _parse_noise(self, noise: Mapping[str, Any]) -> None:
        self.rms_scale = _distribution(noise.get("background_rms", 1.0), "noise.background_rms", 0.0, open_low=True)
        self.time_scale = _distribution(noise.get("exposure_time", 1.0), "noise.exposure_time", 0.0, open_low=True)
        self.correlation = _distribution(noise.get("correlation", 0.0), "noise.correlation", 0.0, 0.5**0.5)
        if self.instrument.background_rms == 0 and self.spec:
            raise UserError(
                "observation: the instrument has no background noise (noise.background_rms 0), which the "
                "observation's ranges are in units of; give the instrument a background_rms"
            )

    def _parse_sky(self, sky: Mapping[str, Any] | None) -> None:
        self.sky = sky is not None
        if sky is None:
            return
        self.sky_fraction = _fraction(sky.get("fraction", 1.0), "sky.fraction")
        self.pedestal = _distribution(sky.get("pedestal", 0.0), "sky.pedestal", -math.inf)
        self.gradient = _distribution(sky.get("gradient", 0.0), "sky.gradient", 0.0)

    def _parse_psf(self, psf: Mapping[str, Any] | None) -> None:
        self.varies_psf = psf is not None
        self.library = psf is not None and "library" in psf
        if psf is None:
            return
        if self.library:
            if set(psf) - {"library", "hdu"}:
                raise UserError("observation.psf: a library takes only 'library' (and 'hdu'), not a PSF family")
            kernels = torch.as_tensor(read_psf_library(str(psf["library"]), psf.get("hdu", 0)), dtype=torch.float32)
            if max(kernels.shape[-2:]) > 2 * max(self.shape) - 1:
                raise UserError(f"observation.psf.library: kernels of {kernels.shape[-1]} px exceed twice the image")
            self._register_bank(kernels)
            self.library_fwhm = kernel_fwhm(kernels, self.pixel_scale)
            return
        if "fwhm" not in psf:
            raise UserError("observation.psf needs fwhm (a distribution in arcsec) or a library")
        self.fwhm = _distribution(psf["fwhm"], "psf.fwhm", 0.0, open_low=True)
        self.moffat_fraction = _fraction(psf.get("moffat_fraction", 0.0), "psf.moffat_fraction")
        self.beta = _distribution(psf.get("beta", 3.0), "psf.beta", 1.0, open_low=True)
        truncate = psf.get("truncate", 4.0)
        if isinstance(truncate, bool) or not isinstance(truncate, (int, float)) or truncate <= 0:
            raise UserError(f"observation.psf.truncate must be a positive number of FWHM, got {truncate!r}")
        radius = max(1, min(math.ceil(truncate * self.fwhm.support[1] / self.pixel_scale), max(self.shape) - 1))
        levels = psf.get("levels", [48, 8])
        ok = isinstance(levels, (list, tuple)) and len(levels) == 2
        if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in levels):
            raise UserError(
                f"observation.psf.levels must be [FWHM values, beta values], two integers >= 1, got {levels!r}"
            )
        self.fwhm_levels = _levels(self.fwhm, levels[0])
        self.beta_levels = _levels(self.beta, levels[1])
        fwhm = self.fwhm_levels.repeat(len(self.beta_levels) + 1)
        beta = torch.cat(
            [torch.zeros(len(self.fwhm_levels)), self.beta_levels.repeat_interleave(len(self.fwhm_levels))]
        )
        gaussian = gaussian_kernels(fwhm[: len(self.fwhm_levels)].double(), self.pixel_scale, radius)
        moffat = moffat_kernels(
            fwhm[len(self.fwhm_levels) :].double(), beta[len(self.fwhm_levels) :].double(), self.pixel_scale, radius
        )
        self._register_bank(torch.cat([gaussian, moffat]).float())
        self.register_buffer("bank_fwhm", fwhm, persistent=False)
        self.register_buffer("bank_beta", beta, persistent=False)

    def _register_bank(self, kernels: Tensor) -> None:
        """Keep the PSF kernels ``(N, K, K)`` and their transforms for :func:`convolve_fft`."""
        self.register_buffer("psf_bank", kernels, persistent=False)
        self.register_buffer("psf_bank_fft", kernel_transform(kernels, self.shape), persistent=False)

    def _parse_artefacts(self, artefacts: Mapping[str, Any] | None) -> None:
        artefacts = artefacts or {}
        self.counts: dict[str, tuple[Distribution, int]] = {}
        for name in ("cosmic_rays", "hot_pixels", "masked_regions"):
            if name in artefacts:
                dist = _distribution(artefacts[name], f"artefacts.{name}", 0.0)
                if not math.isfinite(dist.support[1]):
                    raise UserError(f"observation.artefacts.{name}: give a bounded distribution of counts")
                self.counts[name] = (dist, int(dist.support[1]))
        self.cosmic_ray_length = _range(artefacts.get("cosmic_ray_length", [0, 8]), "artefacts.cosmic_ray_length")
        self.cosmic_ray_amplitude = _range(
            artefacts.get("cosmic_ray_amplitude", [5, 500]), "artefacts.cosmic_ray_amplitude", 1e-6
        )
        self.hot_pixel_amplitude = _range(
            artefacts.get("hot_pixel_amplitude", [5, 100]), "artefacts.hot_pixel_amplitude", 1e-6
        )
        self.mask_radius = _range(artefacts.get("mask_radius", [1, 4]), "artefacts.mask_radius")
        fill = artefacts.get("fill", 0.0)
        if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not math.isfinite(fill):
            raise UserError(f"observation.artefacts.fill must be a finite number, got {fill!r}")
        self.fill = float(fill)

    # -- drawing -------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """The parameters :meth:`sample` draws (none for an empty observation)."""
        if not self.spec:
            return []
        names = ["background_rms", "exposure_time", "noise_correlation"]
        if self.sky:
            names += ["sky_pedestal", "sky_gradient_x", "sky_gradient_y"]
        if self.varies_psf:
            names += ["psf_fwhm", "psf_index"] if self.library else ["psf_fwhm", "psf_beta"]
        return names + list(self.counts)

    def sample(
        self, n: int, generator: torch.Generator | None, device: torch.device | str = "cpu", dtype=torch.float32
    ) -> dict[str, Tensor]:
        """``n`` draws of every nuisance parameter (:attr:`names`), each ``(n,)`` on ``device``."""
        if not self.spec:
            return {}
        device = torch.device(device)

        def draw(dist: Distribution) -> Tensor:
            return dist.sample(n, generator, device, dtype)

        def uniform() -> Tensor:
            return torch.rand(n, generator=generator, device=device, dtype=dtype)

        out = {
            "background_rms": self.instrument.background_rms * draw(self.rms_scale),
            "exposure_time": self.instrument.exposure_time * draw(self.time_scale),
            "noise_correlation": draw(self.correlation),
        }
        if self.sky:
            rms = out["background_rms"]
            present = (uniform() < self.sky_fraction).to(dtype)
            pedestal, gradient, angle = draw(self.pedestal), draw(self.gradient), 2 * math.pi * uniform()
            field = max(self.shape) * self.pixel_scale  # arcsec
            out["sky_pedestal"] = present * pedestal * rms
            out["sky_gradient_x"] = present * gradient * rms / field * torch.cos(angle)
            out["sky_gradient_y"] = present * gradient * rms / field * torch.sin(angle)
        if self.varies_psf and self.library:
            count = self.psf_bank.shape[0]
            index = (uniform() * count).long().clamp(max=count - 1)
            out["psf_fwhm"] = self.library_fwhm.to(device=device, dtype=dtype)[index]
            out["psf_index"] = index.to(dtype)
        elif self.varies_psf:
            fwhm = _nearest(self.fwhm_levels.to(device=device, dtype=dtype), draw(self.fwhm))
            moffat = uniform() < self.moffat_fraction
            beta = _nearest(self.beta_levels.to(device=device, dtype=dtype), draw(self.beta))
            out["psf_fwhm"], out["psf_beta"] = fwhm, torch.where(moffat, beta, 0.0)
        for name, (dist, _) in self.counts.items():
            out[name] = torch.floor(draw(dist))
        return out

    # -- rendering -----------------------------------------------------------------------------

    def psf_index(self, params: Mapping[str, Tensor]) -> Tensor:
        """Which kernel of the bank (:attr:`psf_bank`) each image has: ``(B,)`` int64."""
        if self.library:
            return params["psf_index"].reshape(-1).long()
        fwhm, beta = params["psf_fwhm"].reshape(-1, 1), params["psf_beta"].reshape(-1, 1)
        distance = (self.bank_fwhm.to(fwhm.dtype) - fwhm).abs() + (self.bank_beta.to(beta.dtype) - beta).abs()
        return distance.argmin(dim=1)

    def psf_kernels(self, params: Mapping[str, Tensor]) -> Tensor:
        """The PSF of each image ``(B, K, K)`` (params of shape ``(B, 1, 1)``)."""
        return self.psf_bank[self.psf_index(params)]

    def compile_pointwise(self) -> None:
        """Fuse the per-pixel arithmetic (sky, noise) with ``torch.compile``; the FFT, the artefacts and
        the masks stay eager."""
        self._sky_and_noise = torch.compile(self._sky_and_noise, dynamic=False)

    def apply(self, image: Tensor, params: Mapping[str, Tensor], seeds: Tensor | None) -> Tensor:
        """The observed images ``(B, H, W)`` [counts/s per pixel] of noiseless lens images ``image``
        (before any PSF when the observation varies it): PSF, sky residual, and, with per-image noise
        ``seeds`` (int64 ``(B, 1, 1)``), noise and artefacts. ``params`` hold :attr:`names` as ``(B, 1, 1)``."""
        if self.varies_psf:
            index = self.psf_index(params)
            image = convolve_fft(image, self.psf_bank[index], self.psf_bank_fft[index])
        observed = self._sky_and_noise(image, dict(params), seeds)
        if seeds is None:
            return observed
        rms = params["background_rms"].reshape(-1)
        hits = (
            ("cosmic_rays", self.cosmic_ray_length, self.cosmic_ray_amplitude, COSMIC_RAY_COUNTERS),
            ("hot_pixels", (0.0, 0.0), self.hot_pixel_amplitude, HOT_PIXEL_COUNTERS),
        )
        for name, length, (low, high), counters in hits:
            if name in self.counts:
                count, slots, levels = params[name].reshape(-1), self.counts[name][1], (low * rms, high * rms)
                observed = observed + streaks(seeds, count, slots, self.shape, length, levels, counters)
        if "masked_regions" in self.counts:
            count = params["masked_regions"].reshape(-1)
            masked = masked_disks(
                seeds, count, self.counts["masked_regions"][1], self.shape, self.mask_radius, MASK_COUNTERS
            )
            observed = torch.where(masked, self.fill, observed)
        return observed

    def _sky_and_noise(self, image: Tensor, params: dict[str, Tensor], seeds: Tensor | None) -> Tensor:
        """``image`` plus the sky residual and, given ``seeds``, the background and shot noise."""
        observed = image
        if self.sky:
            observed = observed + sky_background(
                params["sky_pedestal"],
                params["sky_gradient_x"],
                params["sky_gradient_y"],
                self.pixel_x.to(image.dtype),
                self.pixel_y.to(image.dtype),
            )
        if seeds is None:
            return observed
        shot = torch.sqrt(image.abs() / params["exposure_time"])
        background = correlated_normal(seeds, self.background_counter, params["noise_correlation"].reshape(-1))
        shot_noise = shot * counter_normal(seeds, self.shot_counter, image.dtype)
        return observed + shot_noise + params["background_rms"] * background
