"""GalSim's COSMOS ``RealGalaxyCatalog`` as a galaxy library, read with astropy (GalSim not needed).

The catalogue (e.g. ``real_galaxy_catalog_25.2.fits``, from GalSim's ``galsim_download_cosmos``)
is a FITS table with one row per galaxy; the columns used here are ``IDENT`` (the COSMOS id),
``GAL_FILENAME`` (the FITS file holding the galaxy image, e.g. ``real_galaxy_images_25.2_n1.fits``,
looked up in the catalogue's directory), ``GAL_HDU`` (the 0-based HDU of that file) and
``PIXEL_SCALE`` (arcsec/pixel; 0.03 for the HST/ACS F814W images). Column names are matched
case-insensitively, as GalSim does. Galaxies are named ``cosmos-<IDENT>`` and kept in catalogue
order; the PSF and noise columns are not used (the stamps are the observed, PSF-convolved images).

The full 25.2 sample has about 87,000 galaxies: with 64 x 64 stamps the library takes about
1.4 GB in memory; build it once with ``lenscnn-galaxies library=<catalogue> out=<file>.h5``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from astropy.io import fits

from lenscnn.errors import UserError, one_line
from lenscnn.sim.galaxies.fits_stamps import FITS_ERRORS, checked_image
from lenscnn.sim.galaxies.library import DEFAULT_SIZE, GalaxyLibrary, build_library

COLUMNS = ("ident", "gal_filename", "gal_hdu", "pixel_scale")


def read_catalog(catalog: Path) -> dict[str, np.ndarray]:
    """The :data:`COLUMNS` of a RealGalaxyCatalog (first table HDU), by lower-case name."""
    try:
        with fits.open(catalog, memmap=False) as hdul:
            table = next((h for h in hdul if isinstance(h, fits.BinTableHDU | fits.TableHDU)), None)
            if table is None:
                raise UserError(
                    f"{catalog} holds no table, so it is not a COSMOS RealGalaxyCatalog; "
                    "for FITS stamps give the directory that holds them"
                )
            names = {name.lower(): name for name in table.columns.names}
            missing = [c.upper() for c in COLUMNS if c not in names]
            if missing:
                raise UserError(
                    f"{catalog} is not a COSMOS RealGalaxyCatalog: it lacks the columns {missing}; "
                    "give GalSim's real_galaxy_catalog_*.fits"
                )
            return {c: np.array(table.data[names[c]]) for c in COLUMNS}
    except FITS_ERRORS as exc:
        raise UserError(f"cannot read {catalog} as a FITS table ({one_line(exc)}); replace the file") from None


def load_cosmos_catalog(catalog: str | Path, size: int = DEFAULT_SIZE) -> GalaxyLibrary:
    """A library of ``size x size`` stamps from a COSMOS RealGalaxyCatalog (module docstring)."""
    catalog = Path(catalog)
    columns = read_catalog(catalog)
    n = len(columns["ident"])
    if n == 0:
        raise UserError(f"{catalog} lists no galaxies; give a non-empty RealGalaxyCatalog")
    files = [catalog.parent / str(name).strip() for name in columns["gal_filename"]]
    for path in dict.fromkeys(files):
        if not path.is_file():
            raise UserError(
                f"COSMOS image file {path} (listed in {catalog.name}) is missing; download the images with "
                "GalSim's `galsim_download_cosmos` and keep them beside the catalogue"
            )

    def sources() -> Iterator[tuple[str, np.ndarray, float, None]]:
        open_path, hdul = None, None
        try:
            for i in range(n):
                path, index = files[i], int(columns["gal_hdu"][i])
                where = f"{path}[{index}]"
                try:
                    if path != open_path:  # the catalogue lists the galaxies of one file together
                        if hdul is not None:
                            hdul.close()
                        hdul, open_path = fits.open(path), path
                    data = hdul[index].data
                except FITS_ERRORS as exc:
                    raise UserError(
                        f"cannot read {where} ({one_line(exc)}); re-download the COSMOS images with "
                        "GalSim's `galsim_download_cosmos`"
                    ) from None
                pixel_scale = float(columns["pixel_scale"][i])
                if not (np.isfinite(pixel_scale) and pixel_scale > 0):
                    raise UserError(f"{catalog}: row {i} has PIXEL_SCALE {pixel_scale}; it must be > 0 arcsec/pixel")
                yield f"cosmos-{str(columns['ident'][i]).strip()}", checked_image(data, where), pixel_scale, None
        finally:
            if hdul is not None:
                hdul.close()

    origin = f"COSMOS RealGalaxyCatalog {catalog.resolve()}"
    return build_library(sources(), n, size, origin, f"reading {n} COSMOS galaxies")
