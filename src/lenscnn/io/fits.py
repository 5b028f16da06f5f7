"""FITS input and output with astropy."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from lenscnn.errors import UserError, one_line

#: HDU classes that hold an image (random groups, a subclass of ``PrimaryHDU``, do not).
IMAGE_HDUS = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)


@contextlib.contextmanager
def open_fits(path: Path) -> Iterator[fits.HDUList]:
    """The HDUs of a FITS file, read lazily; whatever astropy raises on a missing, truncated,
    corrupted or non-FITS file (in the ``with`` block too) becomes one :class:`UserError`."""
    if not path.is_file():
        raise UserError(f"FITS file not found: {path}")
    try:
        with warnings.catch_warnings():
            # astropy only warns when a header declares more data than the file holds; reading
            # would then allocate the declared size: refuse the file instead
            warnings.filterwarnings("error", "File may have been truncated", AstropyUserWarning)
            with fits.open(path, memmap=False) as hdul:
                yield hdul
    except UserError:
        raise
    except Exception as exc:  # OSError, ValueError, KeyError, EOFError, zlib errors, ...: the file is broken
        raise UserError(
            f"{path}: not a readable FITS file ({one_line(exc)}); check that it is complete and uncorrupted"
        ) from None


def is_image(hdu: fits.hdu.base._BaseHDU) -> bool:
    return isinstance(hdu, IMAGE_HDUS) and not isinstance(hdu, fits.GroupsHDU)


def image_hdus(hdul: fits.HDUList) -> str:
    """Where the images of a file are, for a message: ``"1 (SCI), 2 (WHT)"``, or ``"none"``."""
    try:
        found = [f"{k} ({h.name})" for k, h in enumerate(hdul) if is_image(h) and h.header.get("NAXIS", 0)]
    except Exception:  # a broken later HDU: say nothing about it
        return "unknown"
    return ", ".join(found) or "none"


#: EXTNAMEs of a science image, in the order ``hdu=auto`` prefers them (HST drizzled ``SCI``, ...).
SCIENCE_NAMES = ("SCI", "SCIENCE", "IMAGE", "IMG", "FLUX", "DATA")
#: EXTNAMEs (or their ``<BAND>_`` suffixes) of planes that accompany an image and are never the image:
#: noise, weight, PSF, mask and exposure maps.
AUXILIARY_NAMES = (
    "WHT", "WEIGHT", "IVM", "IVAR", "INVVAR", "ERR", "RMS", "SIGMA", "NOISE", "VAR", "VARIANCE",
    "PSF", "DQ", "MASK", "BPM", "FLAG", "FLAGS", "EXP", "EXPTIME", "CTX", "CON", "HDRTAB",
)  # fmt: skip


def band_prefix(name: str) -> str:
    """The band of a Euclid-style EXTNAME: ``"VIS_FLUX"`` -> ``"VIS_"``, ``"NIR_Y_RMS"`` -> ``"NIR_Y_"``;
    ``""`` for a name without one (``"SCI"``)."""
    head, sep, _ = name.upper().rpartition("_")
    return head + sep


def science_hdu(hdul: fits.HDUList) -> int | None:
    """The index of a file's science image, as ``hdu=auto`` finds it: an image HDU named ``SCI`` (or
    :data:`SCIENCE_NAMES`), else the first named ``<BAND>_FLUX`` or ``<BAND>_SCI`` (Euclid's cutouts:
    ``VIS_FLUX``), else the first image HDU with data that is no noise, PSF or mask plane
    (:data:`AUXILIARY_NAMES`); ``None`` if the file has none."""
    images = [(k, h.name.upper()) for k, h in enumerate(hdul) if is_image(h) and h.header.get("NAXIS", 0) >= 2]
    for wanted in SCIENCE_NAMES:
        for index, name in images:
            if name == wanted:
                return index
    for index, name in images:
        if name.rpartition("_")[2] in ("FLUX", "SCI") and band_prefix(name):
            return index
    for index, name in images:
        if name.rpartition("_")[2] not in AUXILIARY_NAMES and name not in AUXILIARY_NAMES:
            return index
    return None


def select_hdu(hdul: fits.HDUList, hdu: int | str, path: Path) -> fits.hdu.base._BaseHDU:
    """HDU ``hdu`` (index, EXTNAME, or ``"auto"``: :func:`science_hdu`) of an open file; a
    :class:`UserError` if it is not there."""
    if isinstance(hdu, str) and hdu.lower() == "auto":
        index = science_hdu(hdul)
        if index is None:
            raise UserError(f"{path}: the file holds no image (hdu=auto finds no HDU of 2-D data); check the file")
        return hdul[index]
    try:
        return hdul[hdu]
    except (IndexError, KeyError, TypeError):
        found = image_hdus(hdul)
        raise UserError(f"{path}: has no HDU {hdu!r}; its image HDUs: {found}; choose one with hdu=") from None


def image_array(data: np.ndarray, path: Path, hdu: int | str) -> np.ndarray:
    """The pixels of an image HDU as float64; refuses non-numeric and empty arrays."""
    if data.dtype.kind not in "iuf":
        raise UserError(f"{path}: HDU {hdu!r} holds {data.dtype} values, not pixel numbers")
    if data.size == 0:
        raise UserError(f"{path}: HDU {hdu!r} holds an empty image (shape {data.shape})")
    return np.asarray(data, dtype=np.float64)


def read_image_hdu(path: str | Path, hdu: int | str = 0) -> tuple[np.ndarray, fits.Header]:
    """Data (as float64) and header of one image HDU; a clear :class:`UserError` otherwise."""
    path = Path(path)
    with open_fits(path) as hdul:
        return image_in(hdul, path, hdu)


def image_in(hdul: fits.HDUList, path: Path, hdu: int | str = 0) -> tuple[np.ndarray, fits.Header]:
    """:func:`read_image_hdu` of the file ``path`` already open as ``hdul``."""
    selected = select_hdu(hdul, hdu, path)
    if not is_image(selected) or selected.data is None:
        raise UserError(f"{path}: HDU {hdu!r} holds no image; its image HDUs: {image_hdus(hdul)}; choose one with hdu=")
    return image_array(selected.data, path, hdu), selected.header.copy()


def normalised_kernel(kernel: np.ndarray, what: str) -> np.ndarray:
    """A PSF kernel checked (2-D, odd sides, finite, positive total) and normalised to unit sum;
    ``what`` names it in the error."""
    if kernel.ndim != 2:
        raise UserError(f"{what}: expected a 2-D image, got an array of shape {kernel.shape}")
    if kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise UserError(f"{what}: kernel shape {kernel.shape} must have odd sides (centred on a pixel); crop it")
    if not np.all(np.isfinite(kernel)):
        raise UserError(f"{what}: kernel has NaN or infinite pixels")
    total = kernel.sum()
    if total <= 0:
        raise UserError(f"{what}: kernel sums to {total}; it must have positive total flux")
    return kernel / total


def read_psf_kernel(path: str | Path, hdu: int | str = 0) -> np.ndarray:
    """A PSF kernel from a FITS image: 2-D, odd sides, finite, normalised to unit sum."""
    kernel, _ = read_image_hdu(path, hdu)
    return normalised_kernel(kernel, f"PSF file {path}")


def read_psf_library(path: str | Path, hdu: int | str = 0) -> np.ndarray:
    """PSF kernels ``(N, K, K)`` from a FITS cube (``hdu`` of one file, ``(N, K, K)``) or a directory of
    2-D FITS kernels (e.g. TinyTim models or star stamps, read in name order); each normalised to unit
    sum, odd-sided, and zero-padded to the largest size."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".fits", ".fit", ".fts"))
        if not files:
            raise UserError(f"PSF library {path}: no .fits files in the directory")
        kernels = [read_psf_kernel(f, hdu) for f in files]
    else:
        cube, _ = read_image_hdu(path, hdu)
        if cube.ndim not in (2, 3):
            raise UserError(f"PSF library {path}: expected a cube (N, K, K) of kernels, got shape {cube.shape}")
        planes = cube.reshape(-1, *cube.shape[-2:])
        kernels = [normalised_kernel(k, f"PSF library {path}, kernel {n}") for n, k in enumerate(planes)]
    size = max(max(k.shape) for k in kernels)
    out = np.zeros((len(kernels), size, size))
    for n, kernel in enumerate(kernels):
        top, left = (size - kernel.shape[0]) // 2, (size - kernel.shape[1]) // 2
        out[n, top : top + kernel.shape[0], left : left + kernel.shape[1]] = kernel
    return out


#: Header keywords of the lens model's profile lists: ``{keyword: (kwargs_model key, what)}``.
FITS_MODEL_KEYS = {
    "LENSMODL": ("lens_model_list", "lens"),
    "SRCMODL": ("source_light_model_list", "source-light"),
    "LLMODL": ("lens_light_model_list", "lens-light"),
}


def write_lens_dataset_fits(
    path: str | Path,
    images: np.ndarray,
    params: dict[str, np.ndarray],
    pixel_scale: float,
    config_yaml: str,
    kwargs_model: Mapping[str, list[str]] | None = None,
    bands: Sequence[str] | None = None,
) -> None:
    """Images as an ``(N, H, W)`` cube in the primary HDU (of several bands, ``(N, C, H, W)`` with the band
    names ``bands`` as ``BAND1``, ``BAND2``, ... keywords), true parameters in a ``PARAMS`` table,
    the simulator config (whose prior is the lens model) in a ``CONFIG`` table.

    The primary header carries a linear WCS of offsets from the image centre in arcsec (``CTYPE =
    'OFFSET'``, ``CUNIT = 'arcsec'``, ``CDELT = pixel_scale``, ``CRVAL = 0`` at the central pixel
    ``CRPIX = (size + 1) / 2``), ``PIXSCALE`` [arcsec/pixel] and, given
    ``kwargs_model`` (lenstronomy's profile lists), ``LENSMODL``, ``SRCMODL`` and ``LLMODL``:
    the lens, source-light and lens-light profiles, comma-separated.
    """
    several = images.ndim == 4 and images.shape[1] > 1
    cube = (images if several else images.reshape(images.shape[0], *images.shape[-2:])).astype(np.float32)
    primary = fits.PrimaryHDU(cube)
    header = primary.header
    for k, band in enumerate(bands if several and bands is not None else [], start=1):
        header[f"BAND{k}"] = (band, f"band of image plane {k}")
    height, width = cube.shape[-2:]
    header["PIXSCALE"] = (pixel_scale, "arcsec / pixel")
    header["BUNIT"] = "count/s"
    for axis, size in ((1, width), (2, height)):
        header[f"CTYPE{axis}"] = ("OFFSET", "linear: offset from the image centre")
        header[f"CUNIT{axis}"] = "arcsec"
        header[f"CRPIX{axis}"] = ((size + 1) / 2, "the image centre [pixel]")
        header[f"CRVAL{axis}"] = 0.0
        header[f"CDELT{axis}"] = (pixel_scale, "arcsec / pixel")
    for key, (model_list, what) in FITS_MODEL_KEYS.items():
        if kwargs_model is not None:
            header[key] = (",".join(kwargs_model[model_list]), f"lenstronomy {what} profiles")
    columns = [fits.Column(name=name, format="D", array=np.asarray(values)) for name, values in params.items()]
    table = fits.BinTableHDU.from_columns(columns, name="PARAMS")
    config = fits.BinTableHDU.from_columns(
        [fits.Column(name="yaml", format=f"{max(1, len(config_yaml))}A", array=np.array([config_yaml]))], name="CONFIG"
    )
    fits.HDUList([primary, table, config]).writeto(path, overwrite=True)


def read_lens_dataset_fits(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """``(images (N, C, H, W) float32, params, attrs)`` of a FITS file written by ``lenscnn-simulate``
    (cube in the primary HDU, ``PARAMS`` table, ``PIXSCALE`` keyword, ``CONFIG`` YAML; ``attrs["bands"]``: the
    ``BANDk`` names of a multi-band cube)."""
    path = Path(path)
    cube, header = read_image_hdu(path, 0)
    if cube.ndim not in (3, 4):
        raise UserError(
            f"{path}: the primary HDU holds shape {cube.shape}; expected an (N, H, W) cube of lenses "
            "(or (N, C, H, W) of several bands)"
        )
    with open_fits(path) as hdul:
        if "PARAMS" not in hdul or not isinstance(hdul["PARAMS"], (fits.BinTableHDU, fits.TableHDU)):
            raise UserError(f"{path}: no PARAMS table of true parameters; write the file with lenscnn-simulate")
        params = table_columns(hdul["PARAMS"], len(cube), path)
        config = config_text(hdul)
    with np.errstate(over="ignore"):
        images = (cube if cube.ndim == 4 else cube[:, None]).astype(np.float32)
    attrs = {"pixel_scale": pixscale(header, path), "config": config}
    bands = [header[f"BAND{k}"] for k in range(1, images.shape[1] + 1) if f"BAND{k}" in header]
    if images.shape[1] > 1 and len(bands) == images.shape[1]:
        attrs["bands"] = bands
    return images, params, attrs


def table_columns(table: fits.BinTableHDU, n: int, path: Path) -> dict[str, np.ndarray]:
    """The numeric columns of the ``PARAMS`` table, one value per lens each (``n`` rows)."""
    data = table.data
    rows = 0 if data is None else len(data)
    if rows != n:
        raise UserError(f"{path}: the PARAMS table has {rows} rows for {n} images; it needs one row per image")
    params = {}
    for name in table.columns.names:
        column = np.asarray(data[name])
        if column.dtype.kind not in "iuf" or column.shape != (n,):
            raise UserError(
                f"{path}: PARAMS column {name!r} holds {column.dtype} values of shape {column.shape}; "
                "true parameters must be one number per image"
            )
        params[name] = column.astype(np.float64)
    return params


def config_text(hdul: fits.HDUList) -> str:
    """The simulator config (YAML) of the ``CONFIG`` table, ``""`` if there is none."""
    if "CONFIG" not in hdul:
        return ""
    data = hdul["CONFIG"].data
    names = getattr(getattr(data, "columns", None), "names", None) or []
    return str(data["yaml"][0]) if "yaml" in names and len(data) else ""


def pixscale(header: fits.Header, path: Path) -> float:
    """The ``PIXSCALE`` keyword [arcsec/pixel]: a positive number."""
    value = header.get("PIXSCALE")
    if value is None:
        raise UserError(f"{path}: no PIXSCALE keyword [arcsec/pixel] in the primary header; add it")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise UserError(f"{path}: PIXSCALE = {value!r} is not a positive number of arcsec/pixel; fix the header")
    return float(value)
