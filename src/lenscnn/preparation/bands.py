"""Multi-band lenses as surveys deliver them: where each of a model's bands is read, and the bands of one
lens prepared together.

A multi-band lens comes either as **one multi-extension file** with an image HDU per band (Euclid's
cutouts: ``VIS_FLUX``, ``NIR_Y_FLUX``, ``NIR_J_FLUX``, ``NIR_H_FLUX``, each with its ``<BAND>_RMS`` and
``<BAND>_PSF``), or as **one file per band**, named by a pattern with the bands in braces
(``input='lens_{g,r,i}.fits'``, ``input='cutouts/*_{g,r,i}.fits'``: every lens whose files exist in each of the
bands). A model band ``B`` is found in a file as the image HDU named ``B``, ``<...>_B``, ``B_FLUX``,
``<...>_B_FLUX`` or ``..._SCI`` (case-insensitive: band ``Y`` is Euclid's ``NIR_Y_FLUX``); in a pattern, as
the brace alternative ``B``.

Each band is prepared as a single-band image is (:func:`lenscnn.preparation.pipeline.prepare`: its own sky,
noise map, masks and PSF, resampled onto the model's grid and rescaled to that band's training noise), and
the prepared bands are stacked as the model's channels, in its band order. The first band is the reference
band: its record, mask and PSF are the lens's, and the domain flags are measured on it. Bands whose files
carry a celestial WCS must show the same sky at the centre of the model's field, within half a model pixel
(:data:`ALIGNMENT`): cutouts of one lens cut around different positions are refused, not blended.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from astropy.coordinates import SkyCoord

from lenscnn.errors import UserError
from lenscnn.io.cutouts import HDF5_SUFFIXES, Cutout, find_inputs, pixel_scale_from_header
from lenscnn.io.fits import AUXILIARY_NAMES, image_hdus, is_image, open_fits
from lenscnn.preparation.pipeline import Preparation, Prepared, check_readable, prepare, read_hdus

#: Largest offset between two bands' sky positions at the centre of the model's field [model pixels].
ALIGNMENT = 0.5
#: Suffixes of an image HDU's name that mark it as a band's image (``VIS_FLUX``, ``F150W_SCI``).
IMAGE_SUFFIXES = ("_FLUX", "_SCI")
_BRACES = re.compile(r"\{([^{}]*,[^{}]*)\}")


@dataclass(frozen=True)
class BandFiles:
    """One multi-band lens: ``label`` names it (the file, or the pattern's name with its bands joined by ``+``:
    ``lens_g+r+i.fits``); per band of
    the model (``bands``, in its order) the ``files`` and the ``hdus`` its image is read from."""

    label: str
    bands: tuple[str, ...]
    files: tuple[Path, ...]
    hdus: tuple[int | str, ...]

    def __str__(self) -> str:
        return self.label


def band_pattern(spec: str) -> tuple[str, list[str]] | None:
    """``(pattern, bands)`` of an input naming one file per band (``lens_{g,r,i}.fits``: the pattern with
    ``{}`` where the band goes, and the bands in their order), else ``None``."""
    found = _BRACES.findall(spec)
    if not found:
        return None
    if len(found) > 1:
        raise UserError(f"input={spec}: name the bands in one pair of braces (e.g. lens_{{g,r,i}}.fits)")
    bands = [b.strip() for b in found[0].split(",")]
    if not all(bands) or len(set(bands)) != len(bands):
        raise UserError(f"input={spec}: the braces must list distinct band names, e.g. {{g,r,i}}")
    return _BRACES.sub("{}", spec, count=1), bands


def hdu_band(name: str, band: str) -> bool:
    """Whether an image HDU named ``name`` holds band ``band`` (module docstring)."""
    name, band = name.upper(), band.upper()
    for suffix in IMAGE_SUFFIXES:
        name = name.removesuffix(suffix)
    return name == band or name.endswith(f"_{band}")


def band_hdus(path: Path, bands: Sequence[str]) -> tuple[str, ...]:
    """The EXTNAME of each band's image in a multi-extension file; a :class:`UserError` naming the file's image
    HDUs when a band is missing or ambiguous."""
    if path.name.lower().endswith(HDF5_SUFFIXES):
        raise UserError(
            f"{path}: a multi-band model reads FITS cutouts (an HDU or a file per band); evaluate simulated sets "
            "with lenscnn-eval"
        )
    out = []
    with open_fits(path) as hdul:
        images = [h.name for h in hdul if is_image(h) and h.header.get("NAXIS", 0) >= 2]
        names = [n for n in images if n.upper().rpartition("_")[2] not in AUXILIARY_NAMES]
        for band in bands:
            matches = [n for n in names if hdu_band(n, band)]
            if len(matches) != 1:
                what = "no image HDU" if not matches else f"several image HDUs ({', '.join(matches)})"
                raise UserError(
                    f"{path}: {what} for band {band} of the model's {', '.join(bands)}; its image HDUs: "
                    f"{image_hdus(hdul)}; give one file per band (input='lens_{{{','.join(bands)}}}.fits') or the "
                    "model of its bands"
                )
            pixel_scale_from_header(hdul[matches[0]].header, f"{path}[{matches[0]}]")  # a WCS that cannot be used
            out.append(matches[0])
    return tuple(out)


def find_band_inputs(spec: str, bands: Sequence[str], settings: Preparation) -> tuple[list[BandFiles], dict]:
    """The multi-band lenses ``spec`` names for a model of ``bands``, with those that cannot be read and why
    (``{lens: reason}``, found from the headers as :func:`lenscnn.preparation.pipeline.check_readable` finds them):
    a pattern with the bands in braces (one file per band, each read at ``settings.hdu``), else multi-extension
    files (:func:`find_inputs`; each band's HDU found by name, :func:`band_hdus`)."""
    bands = tuple(bands)
    pattern = band_pattern(spec)
    lenses, refused = [], {}
    if pattern is None:
        if settings.hdu != "auto":
            raise UserError(
                f"hdu={settings.hdu!r} names one HDU, but the model reads {len(bands)} bands ({', '.join(bands)}), "
                "each from its own HDU: leave hdu=auto"
            )
        for path in find_inputs(spec):
            try:
                lenses.append(BandFiles(str(path), bands, (path,) * len(bands), band_hdus(path, bands)))
            except UserError as exc:
                lens = BandFiles(str(path), bands, (path,) * len(bands), ("auto",) * len(bands))
                lenses.append(lens)
                refused[lens] = str(exc)
        return lenses, refused
    template, named = pattern
    missing = [b for b in bands if b not in named]
    if missing:
        raise UserError(
            f"input={spec}: the model reads bands {', '.join(bands)}; the braces name {', '.join(named)} "
            f"(no {', '.join(missing)})"
        )
    for lens in _band_files(spec, template, bands, settings.hdu):
        lenses.append(lens)
        reasons = (check_readable(path, settings) for path in lens.files)
        if (reason := next((r for r in reasons if r is not None), None)) is not None:
            refused[lens] = reason
    return lenses, refused


def _band_files(spec: str, template: str, bands: tuple[str, ...], hdu: int | str) -> list[BandFiles]:
    """The lenses of a one-file-per-band pattern (``template``: ``{}`` where the band goes, globs allowed): the
    files of its first band, each with its other bands' files (a lens missing one is refused in one line)."""
    template = os.path.expanduser(template)
    head, _, tail = template.partition("{}")
    lenses: dict[str, list[Path | None]] = {}
    for k, band in enumerate(bands):
        name = template.replace("{}", band, 1)
        paths = glob.glob(name) if any(c in template for c in "*?[") else [name]
        where = re.compile(_glob_regex(head) + f"(?P<band>{re.escape(band)})" + _glob_regex(tail) + r"\Z", re.S)
        for path in sorted(p for p in paths if Path(p).is_file()):
            match = where.match(path)
            key = f"{path[: match.start('band')]}{{}}{path[match.end('band') :]}"
            lenses.setdefault(key, [None] * len(bands))[k] = Path(path)
    first = sorted(key for key, files in lenses.items() if files[0] is not None)
    if not first:
        raise UserError(f"input={spec}: no file for band {bands[0]} ({template.replace('{}', bands[0], 1)})")
    out = []
    for key in first:
        files = lenses[key]
        lacking = [b for b, f in zip(bands, files, strict=True) if f is None]
        if lacking:
            raise UserError(
                f"input={spec}: {files[0]} has no file for band {', '.join(lacking)} "
                f"({key.replace('{}', lacking[0], 1)} does not exist)"
            )
        label = key.replace("{}", "+".join(bands), 1)
        out.append(BandFiles(label, bands, tuple(files), (hdu,) * len(bands)))
    return out


def _glob_regex(pattern: str) -> str:
    """A glob pattern as a regular expression that may be followed by more (``fnmatch.translate`` unanchored)."""
    return fnmatch.translate(pattern).removesuffix(r"\Z")


def band_columns(bands: Sequence[str]) -> list[str]:
    """The record columns :func:`prepare_bands` adds for the bands after the first (none for one band): each
    one's factor to the model's units, ``flux_scale_<band>``."""
    return [f"flux_scale_{band}" for band in bands[1:]]


def prepare_bands(
    lens: BandFiles,
    settings: Preparation,
    image_size: tuple[int, int],
    pixel_scale: float,
    noise_rms: Sequence[float] | None = None,
) -> tuple[Prepared, Cutout]:
    """Every band of ``lens`` prepared as a single-band image is (``noise_rms``: the model's background rms per
    band, to which ``units=noise`` rescales each), stacked in the model's band order: the image ``(C, h, w)``;
    the first band's variance, mask, geometry and record, with ``flux_scale_<band>`` of each band added (the
    first band's cutout is returned, for its WCS and PSF). A :class:`UserError` when a band file holds more than
    one image or the bands' fields are not aligned (:data:`ALIGNMENT`)."""
    owns = [replace(settings, hdu=hdu) for hdu in lens.hdus]
    with contextlib.ExitStack() as stack:  # each file opened once, however many bands it holds
        opened = {path: stack.enter_context(open_fits(path)) for path in dict.fromkeys(lens.files)}
        read = [read_hdus(opened[path], path, own) for path, own in zip(lens.files, owns, strict=True)]
    prepared, cutouts = [], []
    for k, (band, path, own, images) in enumerate(zip(lens.bands, lens.files, owns, read, strict=True)):
        if len(images) != 1:
            raise UserError(f"{lens.label}: band {band} ({path}) holds {len(images)} images; give one image per band")
        cutout, variance, flagged = images[0]
        cutout.label = f"{lens.label} band {band}"
        rms = None if noise_rms is None else noise_rms[k]
        prepared.append(prepare(cutout, own, image_size, pixel_scale, variance, flagged, rms))
        cutouts.append(cutout)
    check_alignment(lens, prepared, cutouts, image_size, pixel_scale)
    first = prepared[0]
    record = dict(first.record)
    for column, band_prepared in zip(band_columns(lens.bands), prepared[1:], strict=True):
        record[column] = band_prepared.record["flux_scale"]
    image = torch.cat([p.image for p in prepared])
    return Prepared(image, first.variance, first.mask, first.offset, first.zoom, record), cutouts[0]


def check_alignment(
    lens: BandFiles,
    prepared: Sequence[Prepared],
    cutouts: Sequence[Cutout],
    image_size: tuple[int, int],
    pixel_scale: float,
) -> None:
    """Refuse bands whose model fields are centred on different sky positions (by more than :data:`ALIGNMENT`
    model pixels), where their files carry a celestial WCS."""
    centre = ((image_size[1] - 1) / 2, (image_size[0] - 1) / 2)
    first = None
    for band, p, cutout in zip(lens.bands, prepared, cutouts, strict=True):
        if cutout.wcs is None:
            continue
        col, row = p.to_input_pixels(np.array(centre[0]), np.array(centre[1]))
        sky = SkyCoord(*cutout.wcs.pixel_to_world_values(col, row), unit="deg")
        if first is None:
            first = band, sky
            continue
        offset = float(first[1].separation(sky).arcsec)
        if offset > ALIGNMENT * pixel_scale:
            raise UserError(
                f'{lens.label}: band {band} is centred {offset:.3g}" from band {first[0]} (more than half a model '
                "pixel): cut every band's cutout around the same position"
            )
