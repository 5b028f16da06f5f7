"""``python -m lenscnn.cli.simulate``: files written on success, one-line errors on bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from lenscnn.io.hdf5 import read_lens_dataset
from tests.helpers import run_app


def run_simulate(tmp_path, *overrides):
    return run_app("simulate", [f"paths.log_dir={tmp_path / 'logs'}", *overrides], cwd=tmp_path)


def only_output_dir(tmp_path):
    runs = list((tmp_path / "logs" / "simulate" / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def test_simulate_writes_hdf5_fits_and_preview(tmp_path, conf):
    result = run_simulate(tmp_path, "n=6", "preview=4", "formats=[hdf5,fits]", "batch_size=4")
    assert result.returncode == 0, result.stderr
    out = only_output_dir(tmp_path)

    images, params, attrs = read_lens_dataset(out / "lenses.h5")
    assert images.shape == (6, 1, 64, 64) and images.dtype == np.float32
    assert np.all(np.isfinite(images)) and np.any(images != 0)
    assert attrs["pixel_scale"] == pytest.approx(0.08)
    expected_names = {"theta_E", "e1", "e2", "center_x", "center_y"}
    expected_names |= {f"source_{k}" for k in ("amp", "R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y")}
    assert set(params) == expected_names
    assert all(v.shape == (6,) and np.all(np.isfinite(v)) for v in params.values())
    assert len(np.unique(params["theta_E"])) == 6  # six different lenses, two batches

    prior = conf("prior", "quickstart")  # the default prior: every value inside its range
    for section, prefix in (("lens", ""), ("source", "source_")):
        for key, spec in prior[section].items():
            if key == "ellipticity":
                continue
            if key.startswith("offset_"):  # the source centre is drawn relative to the lens centre
                axis = key[-1]
                values = params[f"source_center_{axis}"] - params[f"center_{axis}"]
            else:
                values = params[prefix + key]
            assert np.all((spec["low"] - 1e-6 <= values) & (values <= spec["high"] + 1e-6)), key
        q_low = prior[section]["ellipticity"]["q"]["low"]
        modulus = np.hypot(params[prefix + "e1"], params[prefix + "e2"])
        assert np.all(modulus <= (1 - q_low) / (1 + q_low) + 1e-6)

    with fits.open(out / "lenses.fits") as hdul:
        cube = hdul[0].data
        assert cube.shape == (6, 64, 64)
        np.testing.assert_array_equal(cube, images[:, 0])
        assert hdul[0].header["PIXSCALE"] == pytest.approx(0.08)
        table = hdul["PARAMS"].data
        np.testing.assert_array_equal(table["theta_E"], params["theta_E"])
        np.testing.assert_array_equal(table["source_amp"], params["source_amp"])

    png = (out / "preview.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert not list(out.glob(".*.partial"))  # no leftovers of the atomic writes


def test_same_seed_same_lenses_whatever_n_and_batch_size(tmp_path):
    """Issue 13: ``n=8`` and ``n=64`` (drawn in batches of 5) of the default seed hold the same first 8 lenses:
    every parameter exactly, the noisy images to float32 rounding (batched rendering); another seed other lenses."""
    files = {}
    for name, overrides in (("8", ["n=8"]), ("64", ["n=64", "batch_size=5"]), ("seed", ["n=8", "seed=1"])):
        (tmp_path / name).mkdir()
        result = run_simulate(tmp_path / name, *overrides, "preview=0", "instrument.image_size=16")
        assert result.returncode == 0, result.stderr
        files[name] = read_lens_dataset(only_output_dir(tmp_path / name) / "lenses.h5")
    (images_8, params_8, _), (images_64, params_64, _) = files["8"], files["64"]
    assert images_64.shape[0] == 64 and params_8.keys() == params_64.keys()
    for name, values in params_8.items():
        np.testing.assert_array_equal(values, params_64[name][:8], err_msg=name)
    np.testing.assert_allclose(images_8, images_64[:8], rtol=1e-6, atol=1e-6 * np.abs(images_64).max())
    other_images, other_params, _ = files["seed"]
    assert not np.isin(other_params["theta_E"], params_64["theta_E"]).any()
    assert not np.array_equal(other_images, images_8)


@pytest.mark.parametrize(
    "override,message",
    [
        ("instrument.pixel_scale=-1", "instrument.pixel_scale must be > 0"),
        ("prior.lens.theta_E.low=3", "low (3.0) > high (2.0)"),
    ],
    ids=["negative-pixel-scale", "prior-low-above-high"],
)
def test_user_error_is_one_line_without_traceback(tmp_path, override, message):
    result = run_simulate(tmp_path, "n=2", override)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    assert message in error_lines[0]
    assert not list((tmp_path / "logs").rglob("lenses.*"))  # nothing written


def test_unknown_instrument_is_reported_by_hydra_without_traceback(tmp_path):
    result = run_simulate(tmp_path, "instrument=nonexistent")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "nonexistent" in result.stderr and "quickstart" in result.stderr  # names the available presets


def test_simulate_with_galaxy_sources_from_any_prior_and_their_test_galaxies(tmp_path):
    """Galaxy sources compose with another prior (shear and lens light included) from the command line; the file's
    lenses use the library's test galaxies (``galaxy_split`` default) and their images differ from Sersic sources."""
    from lenscnn.sim.galaxies import load_library

    result = run_simulate(tmp_path, "n=8", "preview=0", "prior=galaxy_galaxy", "+prior.source.galaxies.library=hudf")
    assert result.returncode == 0, result.stderr
    images, params, _ = read_lens_dataset(only_output_dir(tmp_path) / "lenses.h5")
    assert {"source_galaxy", "source_phi_G", "source_flip", "gamma1", "lens_light_amp"} <= set(params)
    test_galaxies = set(load_library("hudf").indices("test").tolist())
    assert set(params["source_galaxy"].astype(int).tolist()) <= test_galaxies
    assert np.all(np.isfinite(images)) and images.sum() > 0


@pytest.mark.parametrize(
    "override,message",
    [
        ("prior.source.galaxies.library=/no/such/library.h5", "galaxy library '/no/such/library.h5' not found"),
        ("prior.source.galaxies.fraction=1.5", "fraction' must be a number in [0, 1]"),
        ("galaxy_split=training", "galaxy_split must be one of"),
    ],
    ids=["missing-library", "bad-fraction", "bad-split"],
)
def test_bad_galaxy_source_settings_are_one_line_errors(tmp_path, override, message):
    result = run_simulate(tmp_path, "n=2", "prior=realistic", override)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_simulated_files_record_the_lens_model(tmp_path):
    """An EPL prior with a second lens light: HDF5 and FITS carry lenstronomy's profile lists, and the
    parameters of every component (the slope, the second light's own parameters)."""
    result = run_simulate(
        tmp_path,
        "n=3",
        "prior=epl",
        "formats=[hdf5,fits]",
        "+prior.lens_light_2={R_sersic:{dist:uniform,low:1.5,high:3.0},n_sersic:1.0,"
        "ellipticity:{q:{dist:uniform,low:0.6,high:1.0},phi:mass},flux_ratio:{dist:uniform,low:1.0,high:5.0}}",
    )
    assert result.returncode == 0, result.stderr
    out = only_output_dir(tmp_path)
    _, params, attrs = read_lens_dataset(out / "lenses.h5")
    assert json.loads(attrs["kwargs_model"]) == {
        "lens_model_list": ["EPL", "SHEAR"],
        "source_light_model_list": ["SERSIC_ELLIPSE"],
        "lens_light_model_list": ["SERSIC_ELLIPSE", "SERSIC_ELLIPSE"],
    }
    assert np.all((params["gamma"] >= 1.7) & (params["gamma"] <= 2.3))
    assert np.all((params["lens_light_2_R_sersic"] >= 1.5) & (params["lens_light_2_R_sersic"] <= 3.0))
    assert "lens_light_2_center_x" not in params  # on the lens centre
    with fits.open(out / "lenses.fits") as hdul:
        header = hdul[0].header
        assert (header["LENSMODL"], header["SRCMODL"], header["LLMODL"]) == (
            "EPL,SHEAR",
            "SERSIC_ELLIPSE",
            "SERSIC_ELLIPSE,SERSIC_ELLIPSE",
        )
        np.testing.assert_array_equal(hdul["PARAMS"].data["gamma"], params["gamma"])


def test_cuda_without_a_cuda_device_is_one_line_and_leaves_no_run_directory(tmp_path):
    """``device=cuda`` where torch has no CUDA device (a CPU-only build, or none visible: hidden here with
    CUDA_VISIBLE_DEVICES) is refused before anything is written, and the run directory is removed."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-m", "lenscnn.cli.simulate", f"paths.log_dir={tmp_path / 'logs'}", "device=cuda", "n=2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: device=cuda: this torch has no CUDA device"), result.stderr
    assert result.stderr.strip().count("\n") == 0 and "use device=cpu" in result.stderr
    assert not (tmp_path / "logs").exists()


def test_checked_device():
    from lenscnn.cli.simulate import checked_device
    from lenscnn.errors import UserError

    assert checked_device("cpu").type == "cpu"
    with pytest.raises(UserError, match="not a torch device"):
        checked_device("gpu")
