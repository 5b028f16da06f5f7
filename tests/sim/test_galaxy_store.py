"""``lenscnn.sim.galaxies.store``: a library written where ``lenscnn-galaxies`` writes it, and its summary."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lenscnn.sim.galaxies import GalaxyLibrary, hudf, load_library
from lenscnn.sim.galaxies.store import LibrarySummary, summarize, write_library
from tests.sim.test_galaxies import exponential_galaxy, write_stamp


def test_summary_counts_the_splits_and_takes_the_median_radius_in_arcsec():
    """``g0`` is a test galaxy, ``g10`` a validation one, ``g1`` .. ``g9`` training ones (:func:`galaxy_split`)."""
    n = 11
    library = GalaxyLibrary(
        images=np.full((n, 8, 8), 1 / 64),
        pixel_scale=np.r_[np.full(10, 0.05), 0.1],
        r_half=np.arange(1.0, n + 1),  # 1 .. 11 pixels
        names=tuple(f"g{i}" for i in range(n)),
        origin="test stamps",
    )
    summary = summarize(library)
    assert summary == LibrarySummary(per_split={"train": 9, "val": 1, "test": 1}, median_r_half=pytest.approx(0.3))
    assert list(summary.per_split) == ["train", "val", "test"]
    # radii in arcsec: 0.05, 0.10, ..., 0.50 and 1.1: the median is the sixth, 0.30


def test_a_built_library_goes_to_the_run_directory_or_to_out(tmp_path):
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    for seed in range(3):
        write_stamp(stamps / f"g{seed}.fits", exponential_galaxy(seed=seed), PIXSCALE=0.05)
    run = tmp_path / "run"
    run.mkdir()

    library, path = write_library(str(stamps), 32, out_dir=run)
    assert path == run / "galaxies.h5" and len(library) == 3 and library.stamp_size == 32
    saved = GalaxyLibrary.load(path)
    assert saved.names == library.names
    np.testing.assert_array_equal(saved.images, library.images)

    other, out = write_library(str(stamps), 32, out_dir=run, out=tmp_path / "lib" / "mine.h5")
    assert out == tmp_path / "lib" / "mine.h5" and GalaxyLibrary.load(out).names == other.names
    summary = summarize(other)
    assert sum(summary.per_split.values()) == 3
    assert math.isclose(summary.median_r_half, float(np.median(other.r_half * other.pixel_scale)))


def test_hudf_stays_in_its_cache_unless_out_names_another_file(tmp_path):
    library, path = write_library("hudf", 64, out_dir=tmp_path)
    assert path == hudf.cache_path(64) and path.is_file()
    assert list(tmp_path.iterdir()) == []  # nothing in the run directory
    copy, out = write_library("hudf", 64, out_dir=tmp_path, out=tmp_path / "xdf.h5")
    assert out == tmp_path / "xdf.h5"
    assert load_library(str(out), 64).names == library.names == copy.names
