"""Real-galaxy source libraries: unit-flux, centred stamps of real galaxies (:mod:`.library` for the conventions).

Sources: ``hudf`` (built in, from the Hubble eXtreme Deep Field picture shipped with scikit-image;
:mod:`.hudf`), a directory of FITS stamps (:mod:`.fits_stamps`), GalSim's COSMOS
``RealGalaxyCatalog`` (:mod:`.cosmos`), or an HDF5 file written by :meth:`GalaxyLibrary.save`.
"""

from lenscnn.sim.galaxies.library import SPLITS, GalaxyLibrary, galaxy_split, prepare_stamp
from lenscnn.sim.galaxies.loading import load_library

__all__ = ["SPLITS", "GalaxyLibrary", "galaxy_split", "load_library", "prepare_stamp"]
