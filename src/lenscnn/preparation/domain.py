"""Is a prepared image like the images the model was trained on? Per-image statistics and flags.

The statistics are measured the same way on a prepared input and on images drawn from the
model's own training distribution (its checkpoint's prior, instrument and observation; the
*reference*, :meth:`DomainReference.simulate`), all in the model frame, so no threshold depends
on a guess about the model:

- ``sky``: the level of the image's faintest blocks [units of the instrument's background rms]: a
  residual sky level; ``subtracted``: the sky level the preparation took off [same units];
- ``noise``: the background rms the preparation measured (:func:`lenscnn.preparation.sky.estimate_sky`:
  differences of neighbouring pixels in the faintest blocks, before cosmic rays are cleaned), else the
  same measure on the prepared image [instrument background rms];
- ``flux``: total flux [counts/s] and ``peak``: the brightest pixel [counts/s/px];
- ``masked``: fraction of pixels exactly at the fill value (masked: NaN, flagged, cosmic rays).

These five are compared jointly: an image whose ``(sky, subtracted, noise, flux, peak)`` (scaled, see
:func:`features`) lies farther from its :data:`NEIGHBOURS` nearest reference images than nearly every
reference image from its own (the reference's ``DISTANCE_QUANTILE`` of them) is
flagged: a residual sky of tens of rms with background noise is unlike a training image whose faint
parts are that bright from lens light (and then noisier). So do a blank or constant image,
saturated pixels (several pixels at the image's maximum when it is bright), a PSF whose FWHM (when
known, widened by the binning of finer pixels) lies outside the trained PSF widths (x/÷ 1.25), a pixel
scale that was assumed or more than 2x coarser than the model's, and a prediction outside the central
range of the training prior (``prior_edge``): a prediction is never silently confident on an image the
model has not learned.

What the networks themselves make of an image is the last check (``uncertain``): the model predicts the
reference images too (:meth:`DomainReference.cached` given its ``predict``), and an answer whose relative
uncertainty of the Einstein radius, ``sigma(theta_E) / theta_E``, exceeds what all but
1 - :data:`SIGMA_QUANTILE` of the reference's answers have is flagged. Noise, stars, blank fields and
lenses whose arcs lie outside the field give the networks nothing to measure a radius from, and they say
so in their sigma: on the shipped survey ensemble (``benchmarks/domain_flags.py``, 8 symmetries) this check
alone flags 1% of clean lenses, 100% of noise images, 98% of stars, 78% of lenses of 3-4" (arcs outside its
field) and 36% of elliptical galaxies with arcs 1,000x fainter than the training lenses' (which the networks
read as lenses with arcs hidden in the core).

Where the answer names an Einstein radius and a centre, the image itself is asked for arcs there (``no arcs``):
the area around the predicted radius holding light beyond the lens galaxy's smooth isophotes
(:func:`lenscnn.preparation.arcs.arc_area`) is compared with the reference's answers', and an image with less
than all but :data:`ARC_QUANTILE` of them is flagged: an elliptical whose arcs are too faint to see, or a
lens whose arcs lie outside the field, gives the networks a radius to guess, not to measure. With ``uncertain``,
it flags 75% of those ellipticals and 93% of those lenses, and no more clean ones (3% flagged either way).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import lenscnn
from lenscnn.cache import cache_dir
from lenscnn.errors import one_line
from lenscnn.io.atomic import atomic_path
from lenscnn.preparation import psf as psf_files
from lenscnn.preparation.arcs import arc_area

#: The statistics compared jointly with the reference's (by nearest neighbours).
JOINT = ("sky", "noise", "flux", "peak", "subtracted")
#: Neighbours of the distance, and the quantile of the reference's own (leave-one-out) distances that
#: is the largest distance accepted: ~1% of clean test lenses are flagged; on the realistic prior a
#: clean-trained model's reference flags 95-96% of images with 3x the noise or 30 rms of sky.
NEIGHBOURS = 5
DISTANCE_QUANTILE = 0.99
#: Fraction of the reference outside the central range of a target (each side).
TAIL = 0.001
#: Most masked pixels accepted when the reference has fewer (cosmic rays masked in a single exposure
#: cover a few percent of a cutout).
MASKED_FRACTION = 0.1
#: Trained PSF widths are widened x/÷ this factor.
PSF_MARGIN = 1.25
#: Inputs whose pixels are coarser than the model's by more than this factor are flagged (upsampled, they
#: lack the resolution the networks learned from); finer pixels are binned to the model's without loss.
ZOOM_LIMIT = 2.0
#: Blocks per side of the grid the sky and noise statistics are measured in.
BLOCKS = 8
#: Images drawn for the reference.
REFERENCE_SIZE = 1024
REFERENCE_SEED = 20260101
#: Version of the reference's statistics and drawing: bump it when they change, so that references cached
#: by older code (:meth:`DomainReference.cached`) are drawn again.
REFERENCE_VERSION = 6
#: Share of the reference's answers whose relative Einstein-radius uncertainty is accepted: ~1% of clean
#: lenses are flagged ``uncertain``.
SIGMA_QUANTILE = 0.99
#: Share of the reference's images with less arc area (:func:`lenscnn.preparation.arcs.arc_area`) than the
#: least accepted: ~0.5% of clean lenses are flagged ``no arcs``.
ARC_QUANTILE = 0.005
#: The targets the arc area needs from an answer.
ARC_TARGETS = ("theta_E", "center_x", "center_y")
#: Variance of a uniform pixel of side 1 in units of a Gaussian FWHM^2 (8 ln 2 / 12): resampling to coarser
#: pixels of side ``s`` widens a PSF to ``sqrt(fwhm^2 + PIXEL_FWHM2 * s^2)`` (the input's own pixels taken off).
PIXEL_FWHM2 = 8 * math.log(2) / 12

log = logging.getLogger(__name__)

#: A model's answers for prepared images ``(n, 1, H, W)``: mean and sigma (``None`` without) per target, ``(n, T)``.
Predictor = Callable[[Tensor], tuple[Tensor, Tensor | None]]


def relative_sigma(theta_E: Tensor, sigma: Tensor) -> Tensor:
    """``sigma(theta_E) / theta_E``, the radius floored at 0.01" (a radius predicted at or below 0 is
    measured no better than that)."""
    return sigma / theta_E.clamp_min(0.01)


def predicted_arc_area(
    images: Tensor, noise: Tensor, mean: Tensor, targets: Sequence[str], pixel_scale: float
) -> Tensor | None:
    """:func:`lenscnn.preparation.arcs.arc_area` [arcsec^2] of prepared images ``(n, 1, H, W)`` around the
    Einstein radius and centre of the answers ``mean`` ``(n, T)`` (named by ``targets``), with the background
    rms ``noise`` ``(n,)`` [the images' units per pixel]; ``None`` for a model that does not predict all of
    :data:`ARC_TARGETS`. Computed on the answers' device (the model's: a GPU measures the arcs of a batch as it
    predicts it), returned on the CPU."""
    if not all(t in targets for t in ARC_TARGETS):
        return None
    device = mean.device
    theta_E, x, y = (mean[:, list(targets).index(t)] for t in ARC_TARGETS)  # noqa: N806
    first = images[:, 0].to(device, torch.float32)  # arc_area measures in float32 (noise follows the images)
    area = arc_area(first, noise, theta_E, torch.stack([x, y], dim=1), pixel_scale)
    return area.cpu()


def image_statistics(
    images: Tensor,
    background_rms: float,
    fill: float = 0.0,
    subtracted: Tensor | None = None,
    noise: Tensor | None = None,
) -> dict[str, Tensor]:
    """The statistics of the module docstring for ``images (n, 1, H, W)`` [counts/s per pixel],
    relative to the instrument's ``background_rms``; each a ``(n,)`` tensor. ``subtracted``: the sky
    level the preparation took off each image [counts/s per model pixel] (``None``: nothing);
    ``noise``: the background rms the preparation measured on the image as given [counts/s per model
    pixel], before cosmic rays were cleaned (``None``: measured here).

    ``sky`` and ``noise`` come from the faintest quarter of the image's blocks (a grid of 8 x 8
    blocks), so a lens galaxy filling most of the field does not raise them: per block the median
    and the rms from the median absolute difference of horizontal neighbours (smooth light cancels;
    for Gaussian noise the MAD of a difference is ``0.6745 sqrt(2)`` times the rms)."""
    images = images.flatten(0, -3).to(torch.float64)
    n, height, width = images.shape
    size = max(2, min(height, width) // BLOCKS)
    rows, cols = height // size, width // size
    blocks = (
        images[:, : rows * size, : cols * size]
        .reshape(n, rows, size, cols, size)
        .permute(0, 1, 3, 2, 4)
        .reshape(n, rows * cols, size, size)
    )
    level = blocks.flatten(2).median(dim=2).values
    differences = (blocks[..., 1:] - blocks[..., :-1]).flatten(2)
    rms = differences.abs().median(dim=2).values / (0.6745 * 2**0.5)
    faint = level.argsort(dim=1)[:, : max(1, level.shape[1] // 4)]
    flat = images.flatten(1)
    taken = torch.zeros(n, dtype=torch.float64) if subtracted is None else subtracted.to(torch.float64)
    measured = rms.gather(1, faint).median(dim=1).values if noise is None else noise.to(torch.float64)
    return {
        "sky": level.gather(1, faint).median(dim=1).values / background_rms,
        "subtracted": taken.to(images.device) / background_rms,
        "noise": measured.to(images.device) / background_rms,
        "flux": flat.sum(dim=1),
        "peak": flat.max(dim=1).values,
        "masked": (flat == fill).to(torch.float64).mean(dim=1),
        "spread": flat.std(dim=1) / background_rms,
        "at_peak": (flat == flat.max(dim=1, keepdim=True).values).sum(dim=1).to(torch.float64),
    }


def prepared_statistics(
    images: Tensor, records: Sequence[Mapping[str, Any]], background_rms: float, pixel_scale: float
) -> dict[str, Tensor]:
    """:func:`image_statistics` of prepared images ``(n, 1, H, W)`` in the model's units, with the sky taken
    off and the noise from their preparation records (:attr:`lenscnn.preparation.pipeline.Prepared.record`),
    brought to the model's units and pixels of ``pixel_scale`` arcsec (a record's sky is per input pixel,
    both are in the input's units; the noise is the record's depth, which ``units=noise`` matches to the model's)."""
    subtracted = [r["sky"] * r["flux_scale"] * (pixel_scale / r["input_pixel_scale"]) ** 2 for r in records]
    noise = [r["noise_depth"] * r["flux_scale"] for r in records]
    return image_statistics(
        images,
        background_rms,
        subtracted=torch.tensor(subtracted, dtype=torch.float64),
        noise=torch.tensor(noise, dtype=torch.float64),
    )


def features(stats: Mapping[str, Tensor], background_rms: float, pixels: int) -> Tensor:
    """``(n, 5)`` scaled :data:`JOINT` statistics: asinh of the sky and of the level subtracted [3 rms],
    log of the noise [rms], asinh of the flux [10 rms x sqrt(pixels)] and of the peak [5 rms]:
    near-linear around the noise, logarithmic for bright images."""
    return torch.stack(
        [
            torch.asinh(stats["sky"] / 3),
            torch.asinh(stats["subtracted"] / 3),
            torch.log(stats["noise"].clamp_min(1e-6)),
            torch.asinh(stats["flux"] / (10 * background_rms * pixels**0.5)),
            torch.asinh(stats["peak"] / (5 * background_rms)),
        ],
        dim=1,
    )


def neighbour_distance(points: Tensor, reference: Tensor, leave_one_out: bool = False) -> Tensor:
    """Mean Euclidean distance of each point ``(n, d)`` to its :data:`NEIGHBOURS` nearest reference points."""
    distances = torch.cdist(points, reference)
    k = NEIGHBOURS + int(leave_one_out)
    nearest = distances.topk(k, dim=1, largest=False).values
    return nearest[:, int(leave_one_out) :].mean(dim=1)


@dataclass(frozen=True)
class DomainReference:
    """What the model was trained on, from :data:`REFERENCE_SIZE` training images with their sky
    estimated and subtracted as an input's is: their :func:`features` scaled to unit spread
    (``points``, ``scale``), the largest accepted neighbour distance, the masked fraction, the PSF
    FWHM [arcsec], each target's central range, ``noise_rms``: per band, the median background rms of the
    training images [counts/s per model pixel], measured as an input's is (the level ``units=noise``
    rescales inputs to; the statistics and flags are the first band's), and ``theta_E_precision``: the
    :data:`SIGMA_QUANTILE` quantile of the model's ``sigma(theta_E) / theta_E`` on the reference images and
    ``arc_area``: the :data:`ARC_QUANTILE` quantile of their arc areas around the model's answers [arcsec^2]
    (each ``None`` when drawn without the model)."""

    background_rms: float
    pixel_scale: float
    pixels: int
    points: Tensor
    scale: Tensor
    distance: float
    masked: float
    psf_fwhm: tuple[float, float] | None
    targets: dict[str, tuple[float, float]]
    noise_rms: tuple[float, ...]
    theta_E_precision: float | None = None  # noqa: N815 (lenstronomy's name)
    arc_area: float | None = None

    @classmethod
    def simulate(
        cls,
        simulator_config: Mapping[str, Any],
        targets: Sequence[str],
        size: int = REFERENCE_SIZE,
        subtract_sky: bool = True,
        rescale: bool = False,
        cosmic_rays: bool = True,
        predict: Predictor | None = None,
    ) -> DomainReference:
        """The reference of a model trained with ``simulator_config`` (a checkpoint's), drawn with a
        fixed seed from the training split and prepared by :func:`lenscnn.preparation.pipeline.prepare` as
        inputs are: ``subtract_sky`` as with ``sky=estimate`` (else ``sky=none`` or a given level),
        ``rescale`` to the median noise as with ``units=noise`` (else ``units=counts``), ``cosmic_rays``
        looked for and cleaned (else ``cosmic_rays=false``); ``predict``: the model's answers (mean and
        sigma per target, ``(n, T)`` each) for prepared images ``(n, C, H, W)``, for the ``uncertain`` check."""
        from lenscnn.io.cutouts import Cutout
        from lenscnn.preparation.pipeline import Preparation, prepare, to_model_units
        from lenscnn.sim import Simulator

        simulator = Simulator.from_config({**simulator_config, "compile": False, "dtype": "float32"})
        instrument = simulator.instrument
        stream = simulator.make_generator(REFERENCE_SEED)
        with torch.no_grad():
            images, params = simulator.sample(size, stream)
        images = images.to(torch.float64).cpu()
        masked_fraction = (images.flatten(1) == 0).to(torch.float64).mean(dim=1)  # masked regions are filled with 0
        # cleaning finds nothing to clean in images drawn without cosmic rays or hot pixels: not looked for there
        hits = any(bool((params[k] > 0).any()) for k in ("cosmic_rays", "hot_pixels") if k in params)
        sky = "estimate" if subtract_sky else "none"
        settings = Preparation(sky=sky, cosmic_rays=cosmic_rays and hits, units="counts", psf=None)
        grid = (instrument.image_size, instrument.pixel_scale)
        bands = []  # each band prepared as an input's is; the statistics are the first band's
        for band in range(images.shape[1]):
            prepared = [prepare(Cutout("reference", i[band].numpy(), grid[1], None), settings, *grid) for i in images]
            band_records = [p.record for p in prepared]
            band_rms = float(torch.tensor([r["noise_depth"] for r in band_records]).median())
            band_images = torch.stack([p.image for p in prepared]).to(torch.float64)
            if rescale:  # as prepare() rescales an input with units=noise (to the median noise, masked pixels at 0)
                for k, record in enumerate(band_records):
                    record["flux_scale"] = to_model_units(band_rms, record["noise_depth"])
                    band_images[k] *= record["flux_scale"]
            bands.append((band_images, band_records, band_rms))
        records = bands[0][1]
        noise_rms = tuple(rms for _, _, rms in bands)
        every_band = torch.cat([b for b, _, _ in bands], dim=1)
        images = bands[0][0]
        rms = instrument.background_rms
        pixels = images.shape[-1] * images.shape[-2]
        stats = prepared_statistics(images, records, rms, instrument.pixel_scale)
        points = features(stats, rms, pixels)
        spread = (points - points.median(dim=0).values).abs().median(dim=0).values * 1.4826
        scale = spread.clamp_min(1e-3)
        points = points / scale
        own = neighbour_distance(points, points, leave_one_out=True)
        distance = float(torch.quantile(own, DISTANCE_QUANTILE))
        if "psf_fwhm" in params:
            fwhm = (float(params["psf_fwhm"].min()), float(params["psf_fwhm"].max()))
        elif instrument.psf["type"] == "gaussian":
            fwhm = (instrument.psf["fwhm"],) * 2
        elif instrument.psf["type"] == "pixel":  # measured as an input's PSF file is
            width = psf_files.psf_fwhm(instrument.psf_kernel(), instrument.pixel_scale)
            fwhm = (width, width)
        else:
            fwhm = None
        quantiles = torch.tensor([TAIL, 1 - TAIL], dtype=torch.float64)
        central = {
            t: tuple(torch.quantile(params[t].to(torch.float64).cpu(), quantiles).tolist())
            for t in targets
            if t in params
        }
        masked = float(torch.quantile(masked_fraction, torch.tensor(1 - TAIL, dtype=torch.float64)))
        precision = arcs = None
        if predict is not None and "theta_E" in targets:
            mean, sigma = predict(every_band.to(torch.float32))
            if sigma is not None:
                k = list(targets).index("theta_E")
                relative = relative_sigma(mean[:, k].double().cpu(), sigma[:, k].double().cpu())
                precision = float(torch.quantile(relative, SIGMA_QUANTILE))
            noise = torch.tensor([r["noise_depth"] * r["flux_scale"] for r in records], dtype=torch.float64)
            areas = predicted_arc_area(images, noise, mean, targets, instrument.pixel_scale)
            if areas is not None:
                arcs = float(torch.quantile(areas, ARC_QUANTILE))
        return cls(
            float(rms),
            float(instrument.pixel_scale),
            pixels,
            points,
            scale,
            distance,
            max(masked, MASKED_FRACTION),
            fwhm,
            central,
            noise_rms,
            precision,
            arcs,
        )

    @classmethod
    def cached(
        cls,
        simulator_config: Mapping[str, Any],
        targets: Sequence[str],
        size: int = REFERENCE_SIZE,
        subtract_sky: bool = True,
        rescale: bool = False,
        cosmic_rays: bool = True,
        predict: Predictor | None = None,
        model: str | None = None,
    ) -> DomainReference:
        """:meth:`simulate`, drawn once per model and kept in the cache directory
        (:func:`lenscnn.cache.cache_dir`), under a digest of everything it depends on: the arguments
        (``model`` names the ``predict`` that answered: a fingerprint of the weights and settings),
        :data:`REFERENCE_SEED`, the quantiles that set its thresholds, :data:`REFERENCE_VERSION` and the
        lenscnn and torch versions (a galaxy library given as a file is keyed by its path). Drawing takes
        10-40 s on a CPU (1,024 images prepared one by one, the longest where cosmic rays are cleaned);
        reading it back, milliseconds. A cache file that cannot be read is drawn again, and one that cannot
        be written is only logged."""
        path = reference_path(simulator_config, targets, size, subtract_sky, rescale, cosmic_rays, model)
        if path.is_file():
            try:
                return cls(**torch.load(path, weights_only=True))
            except Exception as exc:  # truncated, another format, other fields: drawn again
                log.warning("drawing the domain reference again: cannot read %s (%s)", path, one_line(exc))
        reference = cls.simulate(simulator_config, targets, size, subtract_sky, rescale, cosmic_rays, predict)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path, private=True) as tmp:  # predict jobs may draw it at once
                torch.save(dataclasses.asdict(reference), tmp)
        except OSError as exc:
            log.warning("cannot cache the domain reference in %s (%s); set LENSCNN_CACHE", path, one_line(exc))
        return reference

    def flags(
        self,
        stats: Mapping[str, float],
        *,
        psf_fwhm: float | None = None,
        pixel_scale_assumed: bool = False,
        zoom: float = 1.0,
        prediction: Mapping[str, float] | None = None,
        sigma: Mapping[str, float] | None = None,
        arcs: float | None = None,
    ) -> list[str]:
        """Why one prepared image (its :func:`image_statistics` as numbers) is outside the training
        domain: a list of short reasons, empty when it is inside; ``arcs``: its :func:`predicted_arc_area`."""
        reasons = []
        if stats["spread"] == 0 or stats["noise"] == 0:
            reasons.append("blank or constant image")
        point = features({k: torch.tensor([float(stats[k])]) for k in JOINT}, self.background_rms, self.pixels)
        distance = float(neighbour_distance(point / self.scale, self.points)[0])
        if distance > self.distance:
            reasons.append(
                f"sky {stats['subtracted']:.3g} rms subtracted, {stats['sky']:.3g} rms left, "
                f"noise {stats['noise']:.3g} rms, flux {stats['flux']:.4g}, peak {stats['peak']:.4g}: "
                f"unlike the training images (distance {distance:.3g} > {self.distance:.3g})"
            )
        if stats["masked"] > self.masked:
            reasons.append(f"masked {100 * stats['masked']:.1f}% of pixels (trained at most {100 * self.masked:.1f}%)")
        if stats["at_peak"] >= 3 and stats["peak"] > 20 * self.background_rms:
            reasons.append(f"saturated: {int(stats['at_peak'])} pixels at the maximum {stats['peak']:.4g}")
        if psf_fwhm is not None and self.psf_fwhm is not None:
            # the PSF the network sees: the input's, widened by the resampling to coarser pixels
            seen = math.sqrt(psf_fwhm**2 + PIXEL_FWHM2 * self.pixel_scale**2 * max(0.0, 1 - zoom**2))
            low, high = self.psf_fwhm[0] / PSF_MARGIN, self.psf_fwhm[1] * PSF_MARGIN
            if not low <= seen <= high:
                resampled = f' ({seen:.3g}" resampled)' if seen != psf_fwhm else ""
                reasons.append(
                    f'PSF FWHM {psf_fwhm:.3g}"{resampled} outside the trained '
                    f'{self.psf_fwhm[0]:.3g}..{self.psf_fwhm[1]:.3g}"'
                )
        if pixel_scale_assumed:
            reasons.append(f"pixel scale assumed to be the model's {self.pixel_scale:.4g}\"/px (no WCS or PIXSCALE)")
        if zoom > ZOOM_LIMIT:  # finer inputs are binned losslessly; the PSF check sees what binning widens
            reasons.append(f"resampled by {zoom:.3g}x: pixels coarser than the model's by more than {ZOOM_LIMIT:g}x")
        return reasons + self.prediction_flags(prediction or {}, sigma, arcs)

    def prediction_flags(
        self, prediction: Mapping[str, float], sigma: Mapping[str, float] | None = None, arcs: float | None = None
    ) -> list[str]:
        """``prior_edge`` reasons for predicted targets outside the prior's central range, ``uncertain``
        for an Einstein radius measured less precisely than :data:`SIGMA_QUANTILE` of the reference's, and
        ``no arcs`` for less arc area ``arcs`` [arcsec^2] around the answer than all but :data:`ARC_QUANTILE`
        of the reference's answers have."""
        reasons = []
        if self.arc_area is not None and arcs is not None and arcs < self.arc_area:
            reasons.append(
                f"no arcs: {arcs:.3g} arcsec^2 of light beyond the lens galaxy around theta_E, less than "
                f"{100 * (1 - ARC_QUANTILE):g}% of training lenses have ({self.arc_area:.3g})"
            )
        sigma = sigma or {}
        if self.theta_E_precision is not None and "theta_E" in prediction and "theta_E" in sigma:
            relative = float(relative_sigma(torch.tensor(prediction["theta_E"]), torch.tensor(sigma["theta_E"])))
            if relative > self.theta_E_precision:
                reasons.append(
                    f"uncertain: sigma(theta_E)/theta_E {relative:.2f} above {self.theta_E_precision:.2f} "
                    f"({100 * SIGMA_QUANTILE:g}% of training lenses are measured better)"
                )
        for name, value in prediction.items():
            if name in self.targets:
                low, high = self.targets[name]
                if not low <= value <= high:
                    reasons.append(f"prior_edge: {name} {value:.4g} outside the prior's central {low:.4g}..{high:.4g}")
        return reasons


def reference_path(
    simulator_config: Mapping[str, Any],
    targets: Sequence[str],
    size: int,
    subtract_sky: bool,
    rescale: bool = False,
    cosmic_rays: bool = True,
    model: str | None = None,
) -> Path:
    """The cache file of the reference :meth:`DomainReference.cached` keeps for these arguments."""
    key = {
        "simulator": simulator_config,
        "targets": list(targets),
        "size": size,
        "subtract_sky": subtract_sky,
        "rescale": rescale,
        "cosmic_rays": cosmic_rays,
        "model": model,
        "seed": REFERENCE_SEED,
        "quantiles": [DISTANCE_QUANTILE, SIGMA_QUANTILE, ARC_QUANTILE, TAIL],
        "version": REFERENCE_VERSION,
        "lenscnn": lenscnn.__version__,
        "torch": torch.__version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return cache_dir() / "domain" / f"reference_{digest}.pt"
