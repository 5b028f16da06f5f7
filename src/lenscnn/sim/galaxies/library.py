"""Libraries of real-galaxy source stamps: the common format, its HDF5 file and the stamp preparation.

A :class:`GalaxyLibrary` holds ``N`` square stamps of ``S x S`` pixels (``S`` even, 64 by default).
Conventions, shared by every builder (:mod:`~lenscnn.sim.galaxies.hudf`,
:mod:`~lenscnn.sim.galaxies.fits_stamps`, :mod:`~lenscnn.sim.galaxies.cosmos`):

- array index ``[i, y, x]``; the flux centroid of every stamp is at the pixel coordinate
  ``((S - 1) / 2, (S - 1) / 2)``, i.e. the corner shared by the four central pixels;
- a stamp is non-negative, sums to 1 (a unit-flux surface-brightness map) and is zero outside
  the galaxy's footprint (sky, noise outside the footprint and neighbours are removed);
- ``pixel_scale`` is the native arcsec per stamp pixel of each galaxy (after any binning that
  made a large galaxy fit), ``r_half`` its half-light radius in stamp pixels (circular aperture
  about the stamp centre), so ``r_half * pixel_scale`` is in arcsec.

The train/val/test split of a galaxy depends only on its name (:func:`galaxy_split`), so the same
galaxy is in the same split in every library and in any order.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from astropy.stats import sigma_clipped_stats
from rich.progress import Progress
from scipy import ndimage

from lenscnn.errors import UserError, one_line
from lenscnn.io.atomic import atomic_path

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: Stamp size [pixels] of libraries built from images (the built-in HUDF one included).
DEFAULT_SIZE = 64
#: Split fractions of :func:`galaxy_split` (train, val, test).
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
#: Galaxies with a smaller half-light radius [stamp pixels] are unresolved and dropped.
MIN_R_HALF = 1.5
#: Galaxies whose footprint flux is below this signal-to-noise ratio are dropped.
MIN_SNR = 10.0
#: Footprint detection when no mask is given: threshold [sigma of the smoothed sky] and growth [pixels].
DETECT_SIGMA = 2.0
FOOTPRINT_GROWTH = 2

FORMAT = "lenscnn-galaxy-library"
FORMAT_VERSION = 1


def galaxy_split(name: str) -> int:
    """The split of a galaxy from its name alone: 0 (train, 80%), 1 (val, 10%) or 2 (test, 10%).

    The first 8 bytes of ``sha256(name)`` as a uniform number in [0, 1): deterministic across runs,
    machines and Python versions, and independent of the order or content of any library.
    """
    u = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2.0**64
    return 0 if u < SPLIT_FRACTIONS[0] else 1 if u < SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1] else 2


@dataclass(frozen=True, eq=False)
class GalaxyLibrary:
    """``N`` prepared galaxy stamps (conventions in the module docstring).

    Attributes:
        images: ``(N, S, S)`` float32, each >= 0, summing to 1, flux centroid at pixel ``(S - 1) / 2``.
        pixel_scale: ``(N,)`` float64, arcsec per stamp pixel.
        r_half: ``(N,)`` float64, half-light radius in stamp pixels (circular, about the stamp centre).
        names: ``N`` unique galaxy ids (they decide the split).
        origin: one line saying where the galaxies came from.
    """

    images: np.ndarray
    pixel_scale: np.ndarray
    r_half: np.ndarray
    names: tuple[str, ...]
    origin: str

    def __post_init__(self) -> None:
        images = np.ascontiguousarray(self.images, dtype=np.float32)
        pixel_scale = np.asarray(self.pixel_scale, dtype=np.float64)
        r_half = np.asarray(self.r_half, dtype=np.float64)
        names = tuple(str(n) for n in self.names)
        n = len(names)
        if images.ndim != 3 or images.shape[1] != images.shape[2] or images.shape[1] % 2:
            raise UserError(f"galaxy stamps must be (N, S, S) with S even, got shape {images.shape}")
        if images.shape[0] != n or pixel_scale.shape != (n,) or r_half.shape != (n,):
            raise UserError(
                f"galaxy library is inconsistent: {images.shape[0]} stamps, {pixel_scale.size} pixel scales, "
                f"{r_half.size} radii, {n} names"
            )
        if len(set(names)) != n:
            duplicate = next(name for name in names if names.count(name) > 1)
            raise UserError(f"galaxy names must be unique, {duplicate!r} appears more than once; rename the stamps")
        if n and not (np.all(pixel_scale > 0) and np.all(np.isfinite(pixel_scale))):
            raise UserError("galaxy pixel scales must be finite and > 0 arcsec")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "pixel_scale", pixel_scale)
        object.__setattr__(self, "r_half", r_half)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "origin", " ".join(str(self.origin).split()))

    def __len__(self) -> int:
        return len(self.names)

    @property
    def stamp_size(self) -> int:
        """``S``, the side of every stamp [pixels]."""
        return self.images.shape[1]

    @property
    def split(self) -> np.ndarray:
        """``(N,)`` int8: 0 train, 1 val, 2 test (:func:`galaxy_split` of each name)."""
        return np.fromiter((galaxy_split(name) for name in self.names), dtype=np.int8, count=len(self.names))

    def indices(self, split: str) -> np.ndarray:
        """int64 indices of the galaxies in ``split`` (one of :data:`SPLITS`), in library order."""
        if split not in SPLITS:
            raise UserError(f"split must be one of {list(SPLITS)}, got {split!r}")
        found = np.flatnonzero(self.split == SPLITS.index(split)).astype(np.int64)
        if found.size == 0:
            raise UserError(
                f"the galaxy library has no {split} galaxies ({len(self)} in all, {self.origin}); "
                "use a library with more galaxies"
            )
        return found

    def save(self, path: str | Path) -> None:
        """Write the library to an HDF5 file (atomically: a failure leaves any old file in place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        s = self.stamp_size
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["origin"] = self.origin
            f.attrs["stamp_size"] = s
            # stamps are mostly zeros outside the footprints: compress them one stamp per chunk
            f.create_dataset(
                "images", data=self.images, chunks=(1, s, s) if len(self) else None, compression="gzip", shuffle=True
            )
            f.create_dataset("pixel_scale", data=self.pixel_scale)
            f.create_dataset("r_half", data=self.r_half)
            f.create_dataset("names", data=list(self.names), dtype=h5py.string_dtype("utf-8"))

    @classmethod
    def load(cls, path: str | Path) -> GalaxyLibrary:
        """Read a library written by :meth:`save`; a missing, corrupt or foreign file is a :class:`UserError`."""
        path = Path(path)
        rebuild = "rebuild it with lenscnn-galaxies"
        if not path.is_file():
            raise UserError(f"galaxy library {path} not found; build one with lenscnn-galaxies")
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != FORMAT:
                    raise UserError(f"{path} is not a lenscnn galaxy library (no format={FORMAT!r}); {rebuild}")
                version = int(f.attrs.get("format_version", -1))
                if version != FORMAT_VERSION:
                    raise UserError(
                        f"{path} is a version {version} galaxy library, this lenscnn reads version "
                        f"{FORMAT_VERSION}; {rebuild}"
                    )
                missing = [k for k in ("images", "pixel_scale", "r_half", "names") if k not in f]
                if missing:
                    raise UserError(f"{path} lacks {missing}; {rebuild}")
                library = cls(
                    images=f["images"][()],
                    pixel_scale=f["pixel_scale"][()],
                    r_half=f["r_half"][()],
                    names=tuple(f["names"].asstr()[()]),
                    origin=str(f.attrs.get("origin", "")),
                )
        except (OSError, KeyError, TypeError) as exc:
            raise UserError(f"cannot read galaxy library {path} ({one_line(exc)}); {rebuild}") from None
        return library


# --------------------------------------------------------------------------------------------------
# stamp preparation


def prepare_stamp(
    image: np.ndarray, pixel_scale: float, size: int = DEFAULT_SIZE, mask: np.ndarray | None = None
) -> tuple[np.ndarray, float] | None:
    """One galaxy image as a library stamp: ``(stamp, pixel_scale)``, or ``None`` if unusable.

    Args:
        image: 2-D surface brightness (any linear unit), sky not yet subtracted, finite.
        pixel_scale: arcsec per pixel of ``image``.
        size: ``S``, the (even) side of the stamp [pixels].
        mask: boolean footprint of the galaxy, same shape (True = the galaxy's pixels; everything
            else, sky and neighbours, is set to zero). ``None``: the connected region above
            :data:`DETECT_SIGMA` sigma of the sky (after a 1-pixel Gaussian smoothing) nearest to the
            image centre, grown by :data:`FOOTPRINT_GROWTH` pixels.

    Steps: subtract the sky (3-sigma-clipped median of the outer frame of pixels, outside the
    footprint), zero everything outside the footprint and clip negatives, bin by the smallest
    integer factor that fits the footprint into the stamp (``pixel_scale`` grows by that factor),
    move the flux centroid onto ``(S - 1) / 2`` (integer crop plus a bilinear sub-pixel shift, which
    keeps the stamp non-negative and the flux and centroid exact), normalise to a sum of 1.

    Returns ``None`` for a galaxy with no positive flux, with a signal-to-noise ratio below
    :data:`MIN_SNR`, or unresolved (half-light radius below :data:`MIN_R_HALF` stamp pixels).
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < 4:
        raise UserError(f"a galaxy stamp must be a 2-D image of at least 4 x 4 pixels, got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise UserError("a galaxy stamp contains NaN or inf pixels; mask them (set them to the sky level) first")
    if not isinstance(size, int | np.integer) or size < 8 or size % 2:
        raise UserError(f"the stamp size must be an even integer >= 8, got {size!r}")
    if not (pixel_scale > 0 and math.isfinite(pixel_scale)):
        raise UserError(f"the pixel scale must be finite and > 0 arcsec, got {pixel_scale!r}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape:
            raise UserError(f"mask shape {mask.shape} differs from image shape {image.shape}")

    frame = _frame(image.shape)
    sky_pixels = frame & ~mask if mask is not None and np.any(frame & ~mask) else frame
    _, sky, noise = sigma_clipped_stats(image[sky_pixels], sigma=3.0, maxiters=10)
    image = image - sky
    if mask is None:
        mask = _central_footprint(image, frame)
        if mask is None:
            return None
    galaxy = np.where(mask, np.clip(image, 0.0, None), 0.0)
    flux = galaxy.sum()
    if not flux > 0 or flux < MIN_SNR * noise * math.sqrt(np.count_nonzero(mask)):
        return None

    factor = 1
    while _half_extent(binned := _bin(galaxy, factor)) > size / 2 - 2:
        factor += 1
    stamp = recentre(binned, size)
    stamp /= stamp.sum()
    if half_light_radius(stamp) < MIN_R_HALF:
        return None
    return stamp.astype(np.float32), float(pixel_scale) * factor


def half_light_radius(stamp: np.ndarray) -> float:
    """Radius [pixels] of the circle about the stamp centre ``((H - 1) / 2, (W - 1) / 2)`` that holds
    half the flux; pixels are split into 4 x 4 sub-pixels of equal flux for sub-pixel accuracy."""
    stamp = np.asarray(stamp, dtype=np.float64)
    radii, order = _subpixel_radii(stamp.shape)
    flux = np.repeat(np.repeat(stamp, _OVERSAMPLE, axis=0), _OVERSAMPLE, axis=1).ravel()[order]
    cumulative = np.cumsum(flux)
    total = cumulative[-1]
    if not total > 0:
        return 0.0
    return float(np.interp(0.5 * total, cumulative, radii))


_OVERSAMPLE = 4


@functools.lru_cache(maxsize=8)
def _subpixel_radii(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distances of the sub-pixel centres from the stamp centre, and the order that sorts them."""
    offsets = (np.arange(_OVERSAMPLE) + 0.5) / _OVERSAMPLE - 0.5
    y = (np.arange(shape[0])[:, None] + offsets).ravel() - (shape[0] - 1) / 2
    x = (np.arange(shape[1])[:, None] + offsets).ravel() - (shape[1] - 1) / 2
    r = np.hypot(y[:, None], x[None, :]).ravel()
    order = np.argsort(r, kind="stable")
    return r[order], order


def _frame(shape: tuple[int, int]) -> np.ndarray:
    """The outer frame of pixels (1/16 of the short side, at least 1 pixel wide) as a boolean mask."""
    width = max(1, min(shape) // 16)
    frame = np.ones(shape, dtype=bool)
    frame[width:-width, width:-width] = False
    return frame


def _central_footprint(image: np.ndarray, frame: np.ndarray) -> np.ndarray | None:
    """The footprint of the source nearest the image centre in a sky-subtracted image, or ``None``."""
    smooth = ndimage.gaussian_filter(image, 1.0)
    _, _, noise = sigma_clipped_stats(smooth[frame], sigma=3.0, maxiters=10)
    labels, n = ndimage.label(smooth > DETECT_SIGMA * noise, structure=np.ones((3, 3)))
    if n == 0:
        return None
    yy, xx = np.indices(image.shape)
    distance = np.hypot(yy - (image.shape[0] - 1) / 2, xx - (image.shape[1] - 1) / 2)
    nearest = 1 + int(np.argmin(ndimage.minimum(distance, labels, np.arange(1, n + 1))))
    grown = ndimage.binary_dilation(labels == nearest, structure=np.ones((3, 3)), iterations=FOOTPRINT_GROWTH)
    return grown & ((labels == 0) | (labels == nearest))


def _bin(image: np.ndarray, factor: int) -> np.ndarray:
    """Sum ``factor x factor`` blocks (zero-padding the far edges): flux-conserving downsampling."""
    if factor == 1:
        return image
    h, w = (-(-n // factor) * factor for n in image.shape)
    padded = np.zeros((h, w))
    padded[: image.shape[0], : image.shape[1]] = image
    return padded.reshape(h // factor, factor, w // factor, factor).sum(axis=(1, 3))


def _centroid(image: np.ndarray) -> tuple[float, float]:
    total = image.sum()
    return (
        float(image.sum(axis=1) @ np.arange(image.shape[0])) / total,
        float(image.sum(axis=0) @ np.arange(image.shape[1])) / total,
    )


def _half_extent(image: np.ndarray) -> float:
    """Largest distance along y or x [pixels] of a non-zero pixel from the flux centroid."""
    cy, cx = _centroid(image)
    ys, xs = np.nonzero(image)
    return float(max(np.abs(ys - cy).max(), np.abs(xs - cx).max()))


def recentre(image: np.ndarray, size: int) -> np.ndarray:
    """A ``size x size`` stamp with the flux centroid of ``image`` at ``(size - 1) / 2`` on both axes.

    An integer crop of ``(size + 1) x (size + 1)`` pixels (zero outside ``image``), then a linear
    interpolation by the fractional part of the offset along each axis. Linear interpolation of a
    shift conserves the flux and moves the centroid by exactly the shift when no flux leaves the stamp.
    """
    centre = (size - 1) / 2
    (cy, cx), (h, w) = _centroid(image), image.shape
    oy, ox = cy - centre, cx - centre
    sy, sx = math.floor(oy), math.floor(ox)
    fy, fx = oy - sy, ox - sx
    window = np.zeros((size + 1, size + 1))
    y0, y1, x0, x1 = max(sy, 0), min(sy + size + 1, h), max(sx, 0), min(sx + size + 1, w)
    window[y0 - sy : y1 - sy, x0 - sx : x1 - sx] = image[y0:y1, x0:x1]
    rows = (1 - fy) * window[:-1] + fy * window[1:]
    return (1 - fx) * rows[:, :-1] + fx * rows[:, 1:]


# --------------------------------------------------------------------------------------------------
# building, caching and joining


def build_library(
    sources: Iterable[tuple[str, np.ndarray, float, np.ndarray | None]],
    total: int,
    size: int,
    origin: str,
    description: str,
) -> GalaxyLibrary:
    """Prepare every ``(name, image, pixel_scale, mask)`` of ``sources`` (``total`` of them, for the
    progress bar) with :func:`prepare_stamp` and collect the usable ones into a library."""
    names, stamps, scales = [], [], []
    with Progress(transient=True) as progress:
        task = progress.add_task(description, total=total)
        for name, image, pixel_scale, mask in sources:
            prepared = prepare_stamp(image, pixel_scale, size, mask)
            if prepared is not None:
                names.append(name)
                stamps.append(prepared[0])
                scales.append(prepared[1])
            progress.advance(task)
    if not stamps:
        raise UserError(
            f"no usable galaxy in {origin}: every stamp was too faint (S/N < {MIN_SNR:g}) or unresolved "
            f"(half-light radius < {MIN_R_HALF:g} px); use deeper or larger stamps"
        )
    log.info("%d of %d galaxies kept from %s", len(stamps), total, origin)
    return GalaxyLibrary(
        images=np.stack(stamps),
        pixel_scale=np.asarray(scales),
        r_half=np.asarray([half_light_radius(s) for s in stamps]),
        names=tuple(names),
        origin=origin,
    )


def cached_library(path: Path, build: Callable[[], GalaxyLibrary], what: str, rebuild: bool = False) -> GalaxyLibrary:
    """A built-in library from its cache file ``path``, built by ``build`` and cached on first use (or when
    ``rebuild``, or when the cache file cannot be read); written atomically, as processes that build at once
    (DDP ranks on a cold cache) write identical files."""
    if path.is_file() and not rebuild:
        try:
            return GalaxyLibrary.load(path)
        except UserError as exc:
            log.warning("rebuilding the cached %s: %s", what, exc)
    library = build()
    try:
        with atomic_path(path, private=True) as tmp:
            library.save(tmp)
    except OSError as exc:
        raise UserError(
            f"cannot write the galaxy cache {path} ({one_line(exc)}); set LENSCNN_CACHE to a writable directory"
        ) from None
    log.info("cached the %s (%d galaxies) in %s", what, len(library), path)
    return library


def join_libraries(libraries: Sequence[GalaxyLibrary]) -> GalaxyLibrary:
    """One library holding the galaxies of ``libraries`` in order (same stamp size; names unique across them,
    so each galaxy keeps the split its name gives it)."""
    sizes = {library.stamp_size for library in libraries}
    if len(sizes) != 1:
        raise UserError(
            f"galaxy libraries to join have stamps of different sizes {sorted(sizes)}; build them at one size"
        )
    return GalaxyLibrary(
        images=np.concatenate([library.images for library in libraries]),
        pixel_scale=np.concatenate([library.pixel_scale for library in libraries]),
        r_half=np.concatenate([library.r_half for library in libraries]),
        names=tuple(name for library in libraries for name in library.names),
        origin=" + ".join(library.origin for library in libraries),
    )
