"""Real-galaxy source libraries: the built-in XDF library, the stamp conventions, splits, the HDF5
file, FITS-stamp directories, COSMOS catalogues, one-line errors and ``lenscnn-galaxies``."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from lenscnn.errors import UserError
from lenscnn.sim.galaxies import SPLITS, GalaxyLibrary, galaxy_split, hudf, load_library, prepare_stamp
from lenscnn.sim.galaxies.library import MIN_R_HALF, half_light_radius
from tests.helpers import run_app

SIZE = 64
CENTRE = (SIZE - 1) / 2


@pytest.fixture(scope="session")
def cache(galaxy_cache) -> Path:
    """The session's private cache directory (never the user's ~/.cache; see tests/conftest.py)."""
    return galaxy_cache


@pytest.fixture(scope="session")
def xdf(cache) -> GalaxyLibrary:
    """The built-in library, built once per session into the private cache."""
    return load_library("hudf", SIZE)


def centroids(images: np.ndarray) -> np.ndarray:
    """``(N, 2)`` flux centroids (row, column) in pixel coordinates."""
    y = np.arange(images.shape[1])
    return np.stack([images.sum(2) @ y, images.sum(1) @ y], axis=1) / images.sum((1, 2))[:, None]


def exponential_galaxy(
    shape=(80, 80), centre=None, h=3.0, q=0.6, angle=0.5, flux=5000.0, noise=1.0, sky=10.0, seed=0
) -> np.ndarray:
    """An elliptical exponential disc (scale length ``h`` pixels) on a sky with Gaussian noise."""
    rng = np.random.default_rng(seed)
    cy, cx = centre if centre is not None else ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
    y, x = np.indices(shape, dtype=float)
    u = (x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)
    v = -(x - cx) * math.sin(angle) + (y - cy) * math.cos(angle)
    profile = np.exp(-np.hypot(u, v / q) / h)
    return sky + flux * profile / profile.sum() + noise * rng.standard_normal(shape)


def assert_one_line(exc_info, *fragments: str) -> None:
    message = str(exc_info.value)
    assert "\n" not in message and message, message
    for fragment in fragments:
        assert fragment in message, message


def write_stamp(path: Path, image: np.ndarray, **header) -> Path:
    hdu = fits.PrimaryHDU(image.astype(np.float32))
    hdu.header.update(header)
    hdu.writeto(path)
    return path


def celestial(scale_arcsec: float, rotation: float = 0.0, cd: bool = False) -> dict:
    """A TAN WCS of ``scale_arcsec`` square pixels, as CDELT or as a rotated CD matrix."""
    wcs = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 53.16, "CRVAL2": -27.78, "CRPIX1": 40, "CRPIX2": 40}
    s = scale_arcsec / 3600
    if cd:
        c, n = math.cos(rotation), math.sin(rotation)
        return {**wcs, "CD1_1": -s * c, "CD1_2": s * n, "CD2_1": s * n, "CD2_2": s * c}
    return {**wcs, "CDELT1": -s, "CDELT2": s}


# --------------------------------------------------------------------------------------------------
# the built-in XDF library


def test_xdf_library_stamps_follow_the_conventions(xdf, cache):
    n = len(xdf)
    assert n >= 100
    assert xdf.images.shape == (n, SIZE, SIZE) and xdf.images.dtype == np.float32
    assert np.all(xdf.images >= 0)
    np.testing.assert_allclose(xdf.images.sum((1, 2), dtype=np.float64), 1.0, atol=1e-5)
    assert np.abs(centroids(xdf.images.astype(np.float64)) - CENTRE).max() < 0.5
    assert np.all(xdf.r_half >= MIN_R_HALF)
    np.testing.assert_allclose(xdf.r_half[:20], [half_light_radius(s) for s in xdf.images[:20]])
    assert np.all(xdf.pixel_scale >= hudf.PIXEL_SCALE) and np.any(xdf.pixel_scale == hudf.PIXEL_SCALE)
    assert len(set(xdf.names)) == n and all(name.startswith("hudf-") for name in xdf.names)
    assert np.all(xdf.images[:, 0, :] == 0) and np.all(xdf.images[:, :, -1] == 0)  # zero outside the footprints
    assert "XDF" in xdf.origin or "Deep Field" in xdf.origin
    assert (cache / f"hudf_v{hudf.VERSION}_{SIZE}px.h5").is_file()


def test_xdf_build_is_deterministic(xdf):
    again = hudf.build_hudf(SIZE)
    assert again.names == xdf.names
    np.testing.assert_array_equal(again.images, xdf.images)
    np.testing.assert_array_equal(again.pixel_scale, xdf.pixel_scale)


def test_xdf_library_is_loaded_from_the_cache(xdf, monkeypatch):
    def no_build(size):
        raise AssertionError("the cached library should have been loaded, not rebuilt")

    monkeypatch.setattr(hudf, "build_hudf", no_build)
    cached = load_library("hudf", SIZE)
    assert cached.names == xdf.names
    np.testing.assert_array_equal(cached.images, xdf.images)


def test_corrupt_cache_is_rebuilt(xdf, tmp_path, monkeypatch):
    monkeypatch.setenv("LENSCNN_CACHE", str(tmp_path))
    hudf.cache_path(SIZE).write_bytes(b"not HDF5")
    monkeypatch.setattr(hudf, "build_hudf", lambda size: xdf)
    assert load_library("hudf", SIZE) is xdf
    assert GalaxyLibrary.load(hudf.cache_path(SIZE)).names == xdf.names
    assert not list(tmp_path.glob(".*"))  # no temporary files left


# --------------------------------------------------------------------------------------------------
# splits


def test_split_is_deterministic_and_near_80_10_10():
    names = [f"galaxy-{i}" for i in range(20000)]
    splits = np.array([galaxy_split(name) for name in names])
    assert [galaxy_split(name) for name in names[:50]] == list(splits[:50])
    fractions = np.bincount(splits, minlength=3) / len(names)
    np.testing.assert_allclose(fractions, [0.8, 0.1, 0.1], atol=0.015)
    assert galaxy_split("hudf-0042") == galaxy_split("hudf-0042")
    assert len({galaxy_split(f"x{i}") for i in range(100)}) == 3


def test_split_does_not_depend_on_library_order(xdf):
    order = np.random.default_rng(1).permutation(len(xdf))
    shuffled = GalaxyLibrary(
        xdf.images[order], xdf.pixel_scale[order], xdf.r_half[order], tuple(xdf.names[i] for i in order), xdf.origin
    )
    np.testing.assert_array_equal(shuffled.split, xdf.split[order])
    for split in SPLITS:
        assert {shuffled.names[i] for i in shuffled.indices(split)} == {xdf.names[i] for i in xdf.indices(split)}


def test_split_indices_are_disjoint_and_cover_the_library(xdf):
    parts = [xdf.indices(split) for split in SPLITS]
    assert all(p.dtype == np.int64 and len(p) > 0 for p in parts)
    joined = np.concatenate(parts)
    assert len(joined) == len(xdf) and set(joined) == set(range(len(xdf)))
    assert len(parts[0]) > 0.6 * len(xdf) and all(len(p) > 0.04 * len(xdf) for p in parts[1:])
    with pytest.raises(UserError) as exc_info:
        xdf.indices("holdout")
    assert_one_line(exc_info, "holdout")


def test_empty_split_is_a_user_error(xdf):
    train = next(i for i in range(len(xdf)) if xdf.split[i] == 0)
    one = GalaxyLibrary(xdf.images[[train]], xdf.pixel_scale[[train]], xdf.r_half[[train]], (xdf.names[train],), "x")
    assert list(one.indices("train")) == [0]
    with pytest.raises(UserError) as exc_info:
        one.indices("test")
    assert_one_line(exc_info, "no test galaxies")


# --------------------------------------------------------------------------------------------------
# the HDF5 file


def test_hdf5_round_trip(xdf, tmp_path):
    path = tmp_path / "sub" / "library.h5"
    xdf.save(path)
    loaded = load_library(str(path), SIZE)
    assert loaded.names == xdf.names and loaded.origin == xdf.origin
    np.testing.assert_array_equal(loaded.images, xdf.images)
    np.testing.assert_array_equal(loaded.pixel_scale, xdf.pixel_scale)
    np.testing.assert_array_equal(loaded.r_half, xdf.r_half)
    np.testing.assert_array_equal(loaded.split, xdf.split)
    assert not list(path.parent.glob(".*"))  # atomic write: no leftovers
    with pytest.raises(UserError) as exc_info:
        load_library(str(path), 32)
    assert_one_line(exc_info, "size=64")


@pytest.mark.parametrize("content", [b"", b"\x89HDF\r\n\x1a\n garbage" * 10], ids=["empty", "garbage"])
def test_corrupt_hdf5_is_a_user_error(tmp_path, content):
    path = tmp_path / "broken.h5"
    path.write_bytes(content)
    with pytest.raises(UserError) as exc_info:
        load_library(str(path))
    assert_one_line(exc_info, str(path))


def test_foreign_hdf5_is_a_user_error(tmp_path):
    import h5py

    path = tmp_path / "lenses.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 8, 8))
    with pytest.raises(UserError) as exc_info:
        GalaxyLibrary.load(path)
    assert_one_line(exc_info, "not a lenscnn galaxy library")


# --------------------------------------------------------------------------------------------------
# stamp preparation


def test_prepare_stamp_centres_normalises_and_removes_neighbours():
    galaxy = exponential_galaxy(centre=(37.3, 44.8), seed=1)
    neighbour = exponential_galaxy(centre=(10.0, 12.0), h=2.0, flux=4000.0, noise=0.0, sky=0.0)
    alone = prepare_stamp(galaxy, 0.05, SIZE)
    crowded = prepare_stamp(galaxy + neighbour, 0.05, SIZE)
    assert alone is not None and crowded is not None
    for stamp, scale in (alone, crowded):
        assert stamp.shape == (SIZE, SIZE) and stamp.dtype == np.float32 and scale == 0.05
        assert stamp.min() >= 0 and abs(stamp.sum(dtype=np.float64) - 1) < 1e-5
        np.testing.assert_allclose(centroids(stamp[None].astype(np.float64))[0], CENTRE, atol=1e-3)
    # the neighbour (45% of the light) is masked out: the stamps differ only at a few footprint-edge pixels
    assert np.abs(crowded[0] - alone[0]).sum() < 0.01
    r_true = 1.678 * 3.0 * math.sqrt(0.6)  # exponential disc: r_half = 1.678 h, circularised
    assert half_light_radius(alone[0]) == pytest.approx(r_true, rel=0.15)


def test_prepare_stamp_bins_large_galaxies_and_uses_a_given_mask():
    big = exponential_galaxy(shape=(300, 300), h=12.0, q=0.9, flux=2e5, noise=0.5)
    stamp, scale = prepare_stamp(big, 0.03, SIZE)
    assert scale in (0.06, 0.09, 0.12, 0.15)  # binned by an integer factor
    assert abs(stamp.sum(dtype=np.float64) - 1) < 1e-5
    np.testing.assert_allclose(centroids(stamp[None].astype(np.float64))[0], CENTRE, atol=1e-3)
    assert stamp[0].max() == 0 and stamp[:, 0].max() == 0

    image = exponential_galaxy(noise=0.0, sky=0.0)
    mask = np.zeros(image.shape, dtype=bool)
    mask[30:50, 20:60] = True
    masked, _ = prepare_stamp(image, 0.1, SIZE, mask)
    assert np.count_nonzero(masked) <= (20 + 1) * (40 + 1)  # nothing outside the mask (plus the sub-pixel shift)


def test_prepare_stamp_drops_unresolved_and_faint_sources():
    star = exponential_galaxy(h=0.3, flux=1e4, seed=2)
    assert prepare_stamp(star, 0.1, SIZE) is None
    assert prepare_stamp(exponential_galaxy(flux=5.0, seed=3), 0.1, SIZE) is None
    assert prepare_stamp(np.zeros((40, 40)), 0.1, SIZE) is None


def test_prepare_stamp_rejects_nan():
    image = exponential_galaxy()
    image[3, 4] = np.nan
    with pytest.raises(UserError) as exc_info:
        prepare_stamp(image, 0.1)
    assert_one_line(exc_info, "NaN")


# --------------------------------------------------------------------------------------------------
# FITS stamps


def test_fits_directory_pixel_scales(tmp_path):
    write_stamp(tmp_path / "cdelt.fits", exponential_galaxy(seed=4), **celestial(0.05))
    write_stamp(tmp_path / "cd.fits", exponential_galaxy(seed=5), **celestial(0.1, rotation=0.7, cd=True))
    write_stamp(tmp_path / "pixscale.fit", exponential_galaxy(seed=6), PIXSCALE=0.2)
    (tmp_path / "notes.txt").write_text("not a stamp")
    library = load_library(str(tmp_path), SIZE)
    scales = dict(zip(library.names, library.pixel_scale, strict=True))
    assert set(scales) == {"cdelt", "cd", "pixscale"}
    assert scales["cdelt"] == pytest.approx(0.05, rel=1e-6)
    assert scales["cd"] == pytest.approx(0.1, rel=1e-6)
    assert scales["pixscale"] == pytest.approx(0.2)
    np.testing.assert_allclose(library.images.sum((1, 2), dtype=np.float64), 1.0, atol=1e-5)
    assert str(tmp_path.resolve()) in library.origin


def test_fits_image_extension_is_read(tmp_path):
    image = fits.ImageHDU(exponential_galaxy(seed=7).astype(np.float32))
    image.header["PIXSCALE"] = 0.03
    fits.HDUList([fits.PrimaryHDU(), image]).writeto(tmp_path / "ext.fits.gz")
    library = load_library(str(tmp_path), SIZE)
    assert library.names == ("ext",) and library.pixel_scale[0] == pytest.approx(0.03)


def test_empty_directory_is_a_user_error(tmp_path):
    (tmp_path / "readme.md").write_text("no stamps here")
    with pytest.raises(UserError) as exc_info:
        load_library(str(tmp_path))
    assert_one_line(exc_info, "no FITS files", str(tmp_path))


def test_stamp_without_pixel_scale_is_a_user_error(tmp_path):
    write_stamp(tmp_path / "a.fits", exponential_galaxy(), **celestial(0.05))
    write_stamp(tmp_path / "b.fits", exponential_galaxy())
    with pytest.raises(UserError) as exc_info:
        load_library(str(tmp_path))
    assert_one_line(exc_info, "b.fits", "PIXSCALE", "WCS")


def test_stamp_with_nan_is_a_user_error(tmp_path):
    image = exponential_galaxy()
    image[5:7, 5:7] = np.nan
    write_stamp(tmp_path / "holes.fits", image, PIXSCALE=0.05)
    with pytest.raises(UserError) as exc_info:
        load_library(str(tmp_path))
    assert_one_line(exc_info, "holes.fits", "NaN", "mask")


def test_unreadable_fits_is_a_user_error(tmp_path):
    (tmp_path / "broken.fits").write_bytes(b"SIMPLE  = this is not FITS" * 3)
    with pytest.raises(UserError) as exc_info:
        load_library(str(tmp_path))
    assert_one_line(exc_info, "broken.fits")


def test_library_where_every_stamp_is_dropped_is_a_user_error(tmp_path):
    for seed in range(2):
        write_stamp(tmp_path / f"noise{seed}.fits", np.random.default_rng(seed).normal(size=(48, 48)), PIXSCALE=0.1)
    with pytest.raises(UserError) as exc_info:
        load_library(str(tmp_path))
    assert_one_line(exc_info, "no usable galaxy")


def test_unknown_library_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as exc_info:
        load_library(str(tmp_path / "missing"))
    assert_one_line(exc_info, "not found", "hudf")


# --------------------------------------------------------------------------------------------------
# COSMOS RealGalaxyCatalog


def write_cosmos(directory: Path, n: int = 4, missing: bool = False) -> Path:
    """A small RealGalaxyCatalog (GalSim's column names) and its image file: galaxy k in HDU k."""
    images = [exponential_galaxy(shape=(60 + 4 * k, 56), h=4.0, flux=2e4, sky=0.0, seed=k) for k in range(n)]
    hdus = [fits.PrimaryHDU(images[0].astype(np.float32))] + [fits.ImageHDU(im.astype(np.float32)) for im in images[1:]]
    if not missing:
        fits.HDUList(hdus).writeto(directory / "real_galaxy_images_test_n1.fits")
    columns = [
        fits.Column(name="IDENT", format="J", array=np.arange(1000, 1000 + n)),
        fits.Column(name="RA", format="D", array=np.full(n, 150.1)),
        fits.Column(name="MAG", format="D", array=np.full(n, 22.0)),
        fits.Column(name="GAL_FILENAME", format="32A", array=["real_galaxy_images_test_n1.fits"] * n),
        fits.Column(name="PSF_FILENAME", format="32A", array=["real_galaxy_PSF_images_test_n1.fits"] * n),
        fits.Column(name="GAL_HDU", format="J", array=np.arange(n)),
        fits.Column(name="PSF_HDU", format="J", array=np.arange(n)),
        fits.Column(name="PIXEL_SCALE", format="D", array=np.full(n, 0.03)),
    ]
    catalog = directory / "real_galaxy_catalog_test.fits"
    fits.BinTableHDU.from_columns(columns).writeto(catalog)
    return catalog


def test_cosmos_catalogue_loads(tmp_path):
    catalog = write_cosmos(tmp_path)
    library = load_library(str(catalog), SIZE)
    assert library.names == ("cosmos-1000", "cosmos-1001", "cosmos-1002", "cosmos-1003")
    np.testing.assert_allclose(library.pixel_scale, 0.03)
    np.testing.assert_allclose(library.images.sum((1, 2), dtype=np.float64), 1.0, atol=1e-5)
    assert np.abs(centroids(library.images.astype(np.float64)) - CENTRE).max() < 0.01
    np.testing.assert_allclose(library.r_half, 1.678 * 4.0 * math.sqrt(0.6), rtol=0.15)
    assert "COSMOS" in library.origin


def test_cosmos_catalogue_with_missing_images_is_a_user_error(tmp_path):
    catalog = write_cosmos(tmp_path, missing=True)
    with pytest.raises(UserError) as exc_info:
        load_library(str(catalog))
    assert_one_line(exc_info, "real_galaxy_images_test_n1.fits", "galsim_download_cosmos")


def test_fits_table_without_cosmos_columns_is_a_user_error(tmp_path):
    path = tmp_path / "table.fits"
    fits.BinTableHDU.from_columns([fits.Column(name="ID", format="J", array=[1, 2])]).writeto(path)
    with pytest.raises(UserError) as exc_info:
        load_library(str(path))
    assert_one_line(exc_info, "GAL_FILENAME")


# --------------------------------------------------------------------------------------------------
# lenscnn-galaxies


def run_galaxies(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``lenscnn-galaxies`` (with the session's private ``LENSCNN_CACHE``)."""
    return run_app("galaxies", [f"hydra.run.dir={tmp_path / 'run'}", *overrides], cwd=tmp_path)


def test_cli_writes_library_and_preview(xdf, tmp_path):
    out = tmp_path / "xdf.h5"
    result = run_galaxies(tmp_path, f"out={out}", "preview=6")
    assert result.returncode == 0, result.stderr
    assert GalaxyLibrary.load(out).names == xdf.names
    png = (tmp_path / "run" / "galaxies.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    counts = np.bincount(xdf.split, minlength=3)
    assert f"{len(xdf)} galaxies (train {counts[0]}, val {counts[1]}, test {counts[2]})" in result.stdout
    assert str(out) in result.stdout


def test_cli_bad_library_exits_2_with_one_line(tmp_path):
    result = run_galaxies(tmp_path, f"library={tmp_path / 'nowhere'}")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: "), result.stderr
    assert "nowhere" in result.stderr and "Traceback" not in result.stderr
