"""FITS input and output with astropy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from lenscnn.errors import UserError


def read_image_hdu(path: str | Path, hdu: int | str = 0) -> tuple[np.ndarray, fits.Header]:
    """Data (as float64) and header of one image HDU; a clear :class:`UserError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"FITS file not found: {path}")
    try:
        with fits.open(path, memmap=False) as hdul:
            try:
                selected = hdul[hdu]
            except (IndexError, KeyError):
                raise UserError(f"{path}: has no HDU {hdu!r} (it has {len(hdul)} HDUs)") from None
            data, header = selected.data, selected.header.copy()
    except UserError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: not a readable FITS file ({exc})") from None
    if data is None or not isinstance(selected, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        raise UserError(f"{path}: HDU {hdu!r} holds no image; choose an image HDU")
    return np.asarray(data, dtype=np.float64), header


def read_psf_kernel(path: str | Path, hdu: int | str = 0) -> np.ndarray:
    """A PSF kernel from a FITS image: 2-D, odd sides, finite, normalised to unit sum."""
    kernel, _ = read_image_hdu(path, hdu)
    if kernel.ndim != 2:
        raise UserError(f"PSF file {path}: expected a 2-D image, got an array of shape {kernel.shape}")
    if kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise UserError(
            f"PSF file {path}: kernel shape {kernel.shape} must have odd sides (centred on a pixel); crop it"
        )
    if not np.all(np.isfinite(kernel)):
        raise UserError(f"PSF file {path}: kernel has NaN or infinite pixels")
    total = kernel.sum()
    if total <= 0:
        raise UserError(f"PSF file {path}: kernel sums to {total}; it must have positive total flux")
    return kernel / total


def write_lens_dataset_fits(
    path: str | Path, images: np.ndarray, params: dict[str, np.ndarray], pixel_scale: float, config_yaml: str
) -> None:
    """Images as an ``(N, H, W)`` cube in the primary HDU, true parameters in a ``PARAMS`` table.

    The primary header carries a linear WCS in arcsec relative to the image centre
    (``CDELT = pixel_scale / 3600`` degrees) and ``PIXSCALE`` [arcsec/pixel].
    """
    cube = images.reshape(images.shape[0], *images.shape[-2:]).astype(np.float32)
    primary = fits.PrimaryHDU(cube)
    header = primary.header
    height, width = cube.shape[-2:]
    header["PIXSCALE"] = (pixel_scale, "arcsec / pixel")
    header["BUNIT"] = "count/s"
    for axis, size in ((1, width), (2, height)):
        header[f"CTYPE{axis}"] = "OFFSET"
        header[f"CUNIT{axis}"] = "deg"
        header[f"CRPIX{axis}"] = (size + 1) / 2
        header[f"CRVAL{axis}"] = 0.0
        header[f"CDELT{axis}"] = pixel_scale / 3600.0
    columns = [fits.Column(name=name, format="D", array=np.asarray(values)) for name, values in params.items()]
    table = fits.BinTableHDU.from_columns(columns, name="PARAMS")
    config = fits.BinTableHDU.from_columns(
        [fits.Column(name="yaml", format=f"{max(1, len(config_yaml))}A", array=np.array([config_yaml]))], name="CONFIG"
    )
    fits.HDUList([primary, table, config]).writeto(path, overwrite=True)


def read_lens_dataset_fits(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """``(images (N, 1, H, W), params, attrs)`` of a FITS file written by ``lenscnn-simulate``
    (cube in the primary HDU, ``PARAMS`` table, ``PIXSCALE`` keyword, ``CONFIG`` YAML)."""
    cube, header = read_image_hdu(path, 0)
    try:
        with fits.open(path, memmap=False) as hdul:
            table = hdul["PARAMS"].data
            params = {name: np.asarray(table[name], dtype=np.float64) for name in table.columns.names}
            config = str(hdul["CONFIG"].data["yaml"][0]) if "CONFIG" in hdul else ""
    except KeyError:
        raise UserError(f"{path}: no PARAMS table of true parameters; write the file with lenscnn-simulate") from None
    if cube.ndim != 3 or "PIXSCALE" not in header:
        raise UserError(f"{path}: expected an (N, H, W) cube with a PIXSCALE keyword, as lenscnn-simulate writes")
    return cube[:, None].astype(np.float32), params, {"pixel_scale": float(header["PIXSCALE"]), "config": config}
