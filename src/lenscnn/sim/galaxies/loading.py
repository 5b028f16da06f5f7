"""A galaxy library from its spec: ``hudf``, ``procedural[:families]``, an HDF5 library file, a directory of FITS
stamps, a COSMOS catalogue, or several joined by ``+``.

The spec is what a prior's ``galaxies.library`` and ``lenscnn-galaxies library=...`` give; every reader
(:mod:`~lenscnn.sim.galaxies.hudf`, :mod:`~lenscnn.sim.galaxies.procedural`,
:mod:`~lenscnn.sim.galaxies.fits_stamps`, :mod:`~lenscnn.sim.galaxies.cosmos`) builds a
:class:`~lenscnn.sim.galaxies.library.GalaxyLibrary` with the conventions of :mod:`~lenscnn.sim.galaxies.library`.
"""

from __future__ import annotations

from pathlib import Path

from lenscnn.errors import UserError
from lenscnn.sim.galaxies.library import DEFAULT_SIZE, GalaxyLibrary, join_libraries


def load_library(spec: str, size: int | None = None) -> GalaxyLibrary:
    """A galaxy library from ``spec``, with ``size x size`` stamps (default 64, or the file's own):

    - ``"hudf"``: the built-in Hubble eXtreme Deep Field library (built once, then cached);
    - ``"procedural"``: procedural galaxies with clumps, spiral arms and compact cores at HST resolution
      (:mod:`~lenscnn.sim.galaxies.procedural`), ``"procedural:<family>[,<family>...]"`` chosen families
      (``procedural:chain``: the family held out of training);
    - a ``.h5``/``.hdf5`` file written by :meth:`GalaxyLibrary.save` (its stamps must be ``size``
      when ``size`` is given);
    - a directory of FITS stamps (:mod:`~lenscnn.sim.galaxies.fits_stamps`);
    - a GalSim COSMOS ``real_galaxy_catalog_*.fits`` (:mod:`~lenscnn.sim.galaxies.cosmos`);
    - several of these joined by ``+`` (``"hudf+procedural"``): one library holding all their galaxies
      (:func:`join_libraries`), each keeping its own split.
    """
    # the readers bring astropy.io.fits and more: imported with the first library loaded, not with the package
    from lenscnn.sim.galaxies import cosmos, fits_stamps, hudf, procedural

    spec, built = str(spec), size or DEFAULT_SIZE
    if "+" in spec and not Path(spec).expanduser().exists():
        return join_libraries([load_library(part, built) for part in spec.split("+")])
    if spec == "hudf":
        return hudf.load_hudf(built)
    if spec == "procedural" or spec.startswith("procedural:"):
        families = spec.partition(":")[2]
        chosen = families.split(",") if families else procedural.TRAINING_FAMILIES
        return procedural.load_procedural(chosen, built)
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(
            f"galaxy library {spec!r} not found; give hudf, procedural[:families], a .h5 galaxy library, a "
            "directory of FITS stamps or a COSMOS real_galaxy_catalog_*.fits"
        )
    if path.is_dir():
        return fits_stamps.load_fits_directory(path, built)
    if path.suffix.lower() in (".h5", ".hdf5"):
        library = GalaxyLibrary.load(path)
        if size is not None and library.stamp_size != size:
            raise UserError(
                f"{path} holds {library.stamp_size} x {library.stamp_size} stamps, not {size} x {size}; "
                f"use size={library.stamp_size} or rebuild it with lenscnn-galaxies size={size}"
            )
        return library
    if fits_stamps.is_fits_name(path.name):
        return cosmos.load_cosmos_catalog(path, built)
    raise UserError(
        f"{path}: unknown galaxy library type; give hudf, a .h5 galaxy library, a directory of FITS stamps "
        "or a COSMOS real_galaxy_catalog_*.fits"
    )
