"""A directory of FITS galaxy stamps as a galaxy library (read with astropy).

Every ``*.fits``, ``*.fit`` or ``*.fts`` file (optionally gzipped) in the directory (not its
subdirectories) is one galaxy, named after the file without its suffix. The image is the first HDU,
primary or extension, that holds a 2-D array (leading axes of length 1 are dropped). Its pixel
scale [arcsec/pixel] comes from the WCS of the header (``CDELT``/``CD``/``PC`` of angular axes)
or, without one, from a ``PIXSCALE`` keyword in arcsec/pixel, as for ``lenscnn-predict``
(:func:`lenscnn.io.cutouts.pixel_scale_from_header`). Pixels must be
square (within 1%) and finite. Each stamp is prepared with
:func:`~lenscnn.sim.galaxies.library.prepare_stamp` (sky subtraction, footprint of the central
source, centring, unit flux); faint and unresolved galaxies are dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError

from lenscnn.errors import UserError, one_line
from lenscnn.io.cutouts import pixel_scale_from_header
from lenscnn.sim.galaxies.library import DEFAULT_SIZE, GalaxyLibrary, build_library

FITS_SUFFIXES = (".fits", ".fit", ".fts")
#: What astropy raises for a file that is not valid FITS.
FITS_ERRORS = (OSError, ValueError, TypeError, IndexError, KeyError, VerifyError)


def is_fits_name(name: str) -> bool:
    """Whether a file name has a FITS suffix (``.fits``, ``.fit``, ``.fts``, each optionally ``.gz``)."""
    return fits_stem(name) != name


def fits_stem(name: str) -> str:
    """The file name without its FITS suffix (``"ngc1300.fits.gz"`` -> ``"ngc1300"``)."""
    lower = name.lower()
    for suffix in FITS_SUFFIXES:
        for full in (suffix, suffix + ".gz"):
            if lower.endswith(full):
                return name[: -len(full)]
    return name


def checked_image(data: np.ndarray | None, where: str) -> np.ndarray:
    """``data`` as a finite 2-D float64 image, or a :class:`UserError` naming ``where``."""
    if data is None:
        raise UserError(f"{where} holds no image data; give a FITS file with a 2-D image")
    image = np.asarray(data, dtype=np.float64)
    while image.ndim > 2 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 2:
        raise UserError(f"{where} holds a {image.ndim}-D array of shape {image.shape}; give a 2-D image per file")
    if not np.all(np.isfinite(image)):
        bad = int(np.count_nonzero(~np.isfinite(image)))
        raise UserError(
            f"{where} has {bad} NaN or inf pixels; mask them (replace them with the sky level or zero) first"
        )
    return image


def read_stamp(path: Path) -> tuple[np.ndarray, float]:
    """``(image, pixel_scale [arcsec/pixel])`` of one FITS stamp; a :class:`UserError` for a bad file."""
    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = next((h for h in hdul if h.is_image and h.data is not None and h.data.ndim >= 2), None)
            if hdu is None:
                raise UserError(f"{path} holds no 2-D image in any HDU; give one galaxy image per FITS file")
            data, header = np.array(hdu.data), hdu.header.copy()
    except FITS_ERRORS as exc:
        raise UserError(f"cannot read {path} as FITS ({one_line(exc)}); replace or remove the file") from None
    scale, _ = pixel_scale_from_header(header, str(path))
    if scale is None:
        raise UserError(
            f"{path} has no pixel scale: add a celestial WCS (CTYPE RA---TAN/DEC--TAN with CDELT or CD) "
            "or a PIXSCALE keyword in arcsec/pixel"
        )
    return checked_image(data, str(path)), scale


def load_fits_directory(directory: str | Path, size: int = DEFAULT_SIZE) -> GalaxyLibrary:
    """A library of ``size x size`` stamps from the FITS files in ``directory`` (module docstring)."""
    directory = Path(directory)
    files = sorted(p for p in directory.iterdir() if p.is_file() and is_fits_name(p.name))
    if not files:
        raise UserError(
            f"no FITS files (*.fits, *.fit, *.fts, optionally .gz) in {directory}; put one galaxy stamp per file there"
        )

    def sources() -> Iterator[tuple[str, np.ndarray, float, None]]:
        for path in files:
            image, pixel_scale = read_stamp(path)
            yield fits_stem(path.name), image, pixel_scale, None

    origin = f"FITS stamps in {directory.resolve()}"
    return build_library(sources(), len(files), size, origin, f"reading {len(files)} FITS stamps")
