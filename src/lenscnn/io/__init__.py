"""Reading and writing FITS (astropy) and HDF5 (h5py) files."""
