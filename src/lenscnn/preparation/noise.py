"""Noise maps beside a cutout: which HDU holds one, what it holds, and its per-pixel variance.

Archives store a cutout's noise in an HDU beside the image, in one of three kinds:

- ``inverse_variance``: ``1 / sigma^2`` (HST drizzle ``WHT`` with ``final_wht_type=IVM``, SDSS
  ``IVAR``, a lenstronomy weight map); 0 marks a pixel without data;
- ``rms``: ``sigma`` (``ERR``, ``RMS``, ``SIGMA``, ``NOISE``);
- ``variance``: ``sigma^2`` (``VAR``, ``VARIANCE``).

With ``noise_hdu=auto`` the HDU of the image's band named as above is taken (Euclid's ``VIS_FLUX`` has
``VIS_RMS``), else the first HDU so named, and its kind follows from the name; a named HDU
(``noise_hdu=WHT``) needs ``noise_kind`` unless its name says it. Values are in the image's units; a
pixel without data (zero inverse variance, infinite rms) is masked. Drizzle's ``EXP``-type weight
maps (exposure time, not inverse variance) are not noise maps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from scipy import ndimage
from scipy.stats import theilslopes

from lenscnn.errors import UserError
from lenscnn.io.fits import band_prefix, image_hdus, is_image, open_fits

KINDS = ("inverse_variance", "rms", "variance")
#: HDU names (EXTNAME, upper case) that say what a noise HDU holds.
NAMES = {
    "WHT": "inverse_variance",
    "WEIGHT": "inverse_variance",
    "IVM": "inverse_variance",
    "IVAR": "inverse_variance",
    "INVVAR": "inverse_variance",
    "ERR": "rms",
    "RMS": "rms",
    "SIGMA": "rms",
    "NOISE": "rms",
    "VAR": "variance",
    "VARIANCE": "variance",
}


def check_kind(kind: str | None) -> None:
    """Refuse a ``noise_kind`` that is not ``auto``/``None`` or one of :data:`KINDS`."""
    if kind not in (None, "auto", *KINDS):
        raise UserError(f"noise_kind={kind!r}: choose auto, {', '.join(KINDS)}")


def kind_of(name: str) -> str | None:
    """What a noise HDU named ``name`` holds (``RMS``, ``VIS_RMS``: ``rms``), ``None`` if its name does not say."""
    name = name.upper()
    return NAMES.get(name) or NAMES.get(name[len(band_prefix(name)) :])


def find_noise_hdu(
    hdul: fits.HDUList, noise_hdu: int | str, kind: str | None, science: str = ""
) -> tuple[int | str, str] | None:
    """``(HDU, kind)`` of the noise map in an open file: with ``noise_hdu="auto"`` the image HDU of the
    science image's band (``science="VIS_FLUX"``: ``VIS_RMS``, ``VIS_WHT``, ...), else the first named in
    :data:`NAMES` (``None`` if there is none); else the HDU given, whose kind is ``kind`` or follows from
    its name."""
    if noise_hdu == "auto":
        prefix = band_prefix(science)
        named = [(k, h.name.upper()) for k, h in enumerate(hdul) if is_image(h) and h.header.get("NAXIS", 0)]
        wanted = [(k, n) for k, n in named if prefix and n.startswith(prefix) and n[len(prefix) :] in NAMES]
        wanted += [(k, n) for k, n in named if n in NAMES]
        if not wanted:
            return None
        index, name = wanted[0]
        return index, kind if kind not in (None, "auto") else kind_of(name)
    try:
        name = hdul[noise_hdu].name.upper()
    except (IndexError, KeyError, TypeError):
        raise UserError(f"has no noise HDU {noise_hdu!r}; its image HDUs: {image_hdus(hdul)}") from None
    if kind in (None, "auto"):
        if kind_of(name) is None:
            raise UserError(
                f"noise_hdu={noise_hdu!r} (EXTNAME {name!r}): say what it holds with noise_kind={'|'.join(KINDS)}"
            )
        kind = kind_of(name)
    return noise_hdu, kind


def variance_map(values: np.ndarray, kind: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """The variance per pixel from a noise map of ``kind``; ``inf`` where a pixel has no data (zero
    inverse variance, infinite or NaN values). Refuses a map of another shape than the image's,
    negative values and a map without any usable pixel."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != tuple(shape):
        raise UserError(
            f"{what}: noise map of shape {values.shape}, but the image is {tuple(shape)}; give the matching HDU"
        )
    finite = np.isfinite(values)
    if (values[finite] < 0).any():
        raise UserError(f"{what}: the {kind} map has negative values; a noise map is >= 0 everywhere")
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "inverse_variance":
            variance = np.where(finite & (values > 0), 1.0 / values, np.inf)
        elif kind == "rms":
            variance = np.where(finite, values**2, np.inf)
        else:
            variance = np.where(finite, values, np.inf)
    if not np.isfinite(variance).any():
        raise UserError(f"{what}: the {kind} map has no pixel with data (all zero weight or non-finite)")
    return variance


def read_variance(
    path: Path, noise_hdu: int | str, kind: str | None, shapes: list[tuple[int, ...]], science: str = ""
) -> list | None:
    """Variance maps of a FITS file's images (``shapes``: one per image; a cube's maps are its planes),
    or ``None`` when ``noise_hdu="auto"`` finds no noise HDU (``science``: the image's EXTNAME, whose
    band's noise HDU is preferred)."""
    with open_fits(path) as hdul:
        return variances_in(hdul, path, noise_hdu, kind, shapes, science)


def variances_in(
    hdul: fits.HDUList,
    path: Path,
    noise_hdu: int | str,
    kind: str | None,
    shapes: list[tuple[int, ...]],
    science: str = "",
) -> list | None:
    """:func:`read_variance` of the file ``path`` already open as ``hdul``."""
    try:
        found = find_noise_hdu(hdul, noise_hdu, kind, science)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    if found is None:
        return None
    hdu, kind = found
    data = hdul[hdu].data
    if data is None or data.dtype.kind not in "iuf":
        raise UserError(f"{path}: noise HDU {hdu!r} holds no numeric image")
    data = np.asarray(data, dtype=np.float64)
    planes = data.reshape(-1, *data.shape[-2:]) if data.ndim == 3 else [data]
    if len(planes) != len(shapes):
        raise UserError(f"{path}: {len(planes)} noise maps in HDU {hdu!r} for {len(shapes)} images")
    return [variance_map(p, kind, s, f"{path} HDU {hdu!r}") for p, s in zip(planes, shapes, strict=True)]


#: The fewest pixels of a flux bin in :func:`shot_noise_exposure`, and the most bins above the background.
SHOT_NOISE_BIN = 50
SHOT_NOISE_BINS = 9
#: Pixels where the smoothed image's own second difference exceeds this share of the background rms (a galaxy's
#: core, an arc's ridge) are left out of :func:`shot_noise_exposure`: its curvature would pass for noise.
SHOT_NOISE_CURVATURE = 0.2


def shot_noise_exposure(image: np.ndarray, valid: np.ndarray, background_rms: float) -> float | None:
    """The exposure time ``t`` [s, or counts per image unit: an effective gain] for which an image's noise is
    ``variance = background_rms^2 + image / t``, estimated from the image itself, for images that do not
    say it (no ``EXPTIME``, no noise map: a cutout as archives deliver it). ``None`` when the image shows no
    shot noise above its background (too faint a source, or a noise that does not grow with the flux).

    The noise is measured by second differences along rows and columns, ``x_i - (x_{i-1} + x_{i+1}) / 2``,
    which a smooth galaxy's gradient does not enter (pixels where the image smoothed by a Gaussian of 1.5
    pixels curves by more than :data:`SHOT_NOISE_CURVATURE` background rms are left out): astropy's
    ``mad_std`` of them in bins of the 3-pixel mean flux ``f``, one of the background (``|f| <`` its rms) and up to
    :data:`SHOT_NOISE_BINS` log-spaced from 3 rms to the brightest, each of at least :data:`SHOT_NOISE_BIN`
    pixels. Their variances follow ``c (rms^2 + f / t)``, ``c`` the statistic's factor for the background's
    own correlation (1.5 for white noise, less for drizzle's); scipy's Theil-Sen line through them gives
    ``c rms^2`` as intercept and ``c / t`` as slope. On simulated ellipticals with ``t`` of 300-3000 s and
    white or drizzle-like noise it comes within a factor 2, mostly within 30%, of the truth."""
    if not background_rms > 0:
        return None
    image = np.where(valid, np.asarray(image, dtype=float), 0.0)
    smooth = ndimage.gaussian_filter(image, 1.5)
    seconds, levels = [], []
    for pixels, good, smoothed in ((image, valid, smooth), (image.T, valid.T, smooth.T)):  # along rows, columns
        left, centre, right = pixels[:, :-2], pixels[:, 1:-1], pixels[:, 2:]
        curvature = smoothed[:, 1:-1] - (smoothed[:, :-2] + smoothed[:, 2:]) / 2
        use = good[:, :-2] & good[:, 1:-1] & good[:, 2:] & (np.abs(curvature) < SHOT_NOISE_CURVATURE * background_rms)
        seconds.append((centre - (left + right) / 2)[use])
        levels.append(((left + centre + right) / 3)[use])
    second, level = np.concatenate(seconds), np.concatenate(levels)
    if level.size == 0 or level.max() <= 3 * background_rms:
        return None
    bins = [np.flatnonzero(np.abs(level) < background_rms)]
    edges = np.geomspace(3 * background_rms, level.max(), SHOT_NOISE_BINS + 1)
    bins += [np.flatnonzero((level >= low) & (level < high)) for low, high in zip(edges[:-1], edges[1:], strict=True)]
    bins = [b for b in bins if b.size >= SHOT_NOISE_BIN]
    if len(bins) < 3:
        return None
    flux = [float(np.median(level[b])) for b in bins]
    variance = [float(mad_std(second[b])) ** 2 for b in bins]
    slope, intercept, *_ = theilslopes(variance, flux)
    if not (slope > 0 and intercept > 0):
        return None
    return float(intercept / (slope * background_rms**2))
