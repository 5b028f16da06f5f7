"""``write_simulated_set``: the first ``n`` lenses of a seed written to HDF5 and/or FITS, equal to
``Simulator.sample`` from the same seed, atomically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lenscnn.data.simulated_set import write_simulated_set
from lenscnn.io.fits import read_lens_dataset_fits
from lenscnn.io.hdf5 import read_lens_dataset
from tests.helpers import make_simulator

#: 16 x 16 pixels of 0.1 arcsec, Gaussian PSF and Gaussian (counter-based, hence reproducible) noise.
INSTRUMENT = {
    "image_size": 16,
    "pixel_scale": 0.1,
    "psf": {"type": "gaussian", "fwhm": 0.2},
    "noise": {"background_rms": 0.02, "exposure_time": 50.0, "poisson": "gaussian"},
}
SEED = 7


@pytest.fixture(scope="module")
def simulator():
    torch.set_num_threads(1)
    return make_simulator(INSTRUMENT)


def sampled(simulator, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The first ``n`` lenses of :data:`SEED`, drawn in one batch: ``(images, {name: float64})``."""
    images, params = simulator.sample(n, simulator.make_generator(SEED), split="test")
    return images.numpy(), {k: v.double().numpy() for k, v in params.items()}


def test_hdf5_and_fits_hold_the_lenses_of_sample(simulator, tmp_path):
    result = write_simulated_set(
        simulator, 5, tmp_path, seed=SEED, formats=["hdf5", "fits"], batch_size=5, split="test", config_yaml="a: 1\n"
    )
    images, params = sampled(simulator, 5)
    assert result.files == {"hdf5": tmp_path / "lenses.h5", "fits": tmp_path / "lenses.fits"}
    assert result.names == simulator.drawn_names and result.pixel_scale == 0.1
    assert result.images.shape == (5, 1, 16, 16) and result.images.dtype == np.float32  # FITS keeps every lens
    np.testing.assert_array_equal(result.images, images)
    assert list(result.params) == result.names
    for name in result.names:
        np.testing.assert_array_equal(result.params[name], params[name], err_msg=name)

    h5_images, h5_params, attrs = read_lens_dataset(tmp_path / "lenses.h5")
    np.testing.assert_array_equal(h5_images, images)
    assert h5_params.keys() == params.keys()
    for name, values in params.items():
        np.testing.assert_array_equal(h5_params[name], values, err_msg=name)
    assert attrs["pixel_scale"] == 0.1 and attrs["config"] == "a: 1\n"
    assert json.loads(attrs["kwargs_model"]) == simulator.lens_model.kwargs_model()

    fits_images, fits_params, fits_attrs = read_lens_dataset_fits(tmp_path / "lenses.fits")
    np.testing.assert_array_equal(fits_images, images)
    np.testing.assert_array_equal(fits_params["theta_E"], params["theta_E"])
    assert fits_attrs["pixel_scale"] == 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenses.fits", "lenses.h5"]  # no .partial left


def test_batches_continue_the_stream_and_keep_only_the_first_images(simulator, tmp_path):
    """HDF5 only, in batches of 2 (2 + 2 + 1): the same lenses as one batch; only ``keep`` images are returned."""
    result = write_simulated_set(simulator, 5, tmp_path, seed=SEED, batch_size=2, split="test", keep=3)
    images, params = sampled(simulator, 5)
    assert result.files == {"hdf5": tmp_path / "lenses.h5"}
    assert result.images.shape == (3, 1, 16, 16)
    h5_images, h5_params, _ = read_lens_dataset(tmp_path / "lenses.h5")
    assert h5_images.shape == (5, 1, 16, 16)
    np.testing.assert_allclose(h5_images, images, rtol=1e-6, atol=1e-6 * np.abs(images).max())
    np.testing.assert_array_equal(result.images, h5_images[:3])
    for name, values in params.items():
        np.testing.assert_array_equal(h5_params[name], values, err_msg=name)
        np.testing.assert_array_equal(result.params[name], values, err_msg=name)


def test_fits_only(simulator, tmp_path):
    result = write_simulated_set(simulator, 3, tmp_path, seed=SEED, formats=["fits"], batch_size=3, split="test")
    images, params = sampled(simulator, 3)
    assert result.files == {"fits": tmp_path / "lenses.fits"}
    assert [p.name for p in tmp_path.iterdir()] == ["lenses.fits"]
    fits_images, fits_params, _ = read_lens_dataset_fits(tmp_path / "lenses.fits")
    assert fits_images.shape == (3, 1, 16, 16)
    np.testing.assert_array_equal(fits_images, images)
    np.testing.assert_array_equal(result.images, images)
    assert fits_params.keys() == params.keys()
    for name, values in params.items():
        np.testing.assert_array_equal(fits_params[name], values, err_msg=name)


def test_a_failed_run_leaves_no_file(simulator, tmp_path, monkeypatch):
    """Rendering fails in the second batch: neither the streamed HDF5 file nor the FITS file is left."""
    calls = []
    sample = simulator.sample

    def failing_sample(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return sample(*args, **kwargs)

    monkeypatch.setattr(simulator, "sample", failing_sample)
    with pytest.raises(RuntimeError, match="out of memory"):
        write_simulated_set(simulator, 4, tmp_path, seed=SEED, formats=["hdf5", "fits"], batch_size=2)
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []


def test_unknown_format_is_refused_before_anything_is_written(simulator, tmp_path):
    with pytest.raises(ValueError, match=r"unknown formats \['png'\]"):
        write_simulated_set(simulator, 2, tmp_path, seed=SEED, formats=["hdf5", "png"])
    assert list(tmp_path.iterdir()) == []
