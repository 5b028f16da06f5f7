"""Inputs in any flux unit: the same cutouts in counts/s, scaled by 1e-3 and 1e3, in MJy/sr and in
microjansky give the shipped ensemble the same answers through ``lenscnn-predict``'s defaults
(``units=noise``: each image rescaled by its own noise), where ``units=counts`` does not."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from astropy import units as u
from astropy.io import fits
from omegaconf import OmegaConf

from lenscnn import pretrained
from lenscnn.preparation.pipeline import Preparation, prepare, read_file
from lenscnn.sim import Simulator
from tests.helpers import compose_config, run_app

#: AB magnitude of 1 count/s (HST ACS/F814W-like), converting counts/s to janskys.
ZERO_POINT = 25.94
SCALE = 0.05  # arcsec/px: HST-like cutouts, resampled to the model's 0.08"


def unit_systems(image: np.ndarray) -> dict[str, tuple[np.ndarray, str]]:
    """The image [counts/s per pixel] in five unit systems, with its ``BUNIT``."""
    per_count = (3631 * 10 ** (-0.4 * ZERO_POINT)) * u.Jy
    pixel = ((SCALE * u.arcsec) ** 2).to(u.sr)
    return {
        "counts/s": (image, "COUNTS/S"),
        "x1e-3": (image * 1e-3, "mCOUNTS/S"),
        "x1e3": (image * 1e3, "kCOUNTS/S"),
        "MJy/sr": (image * (per_count / pixel).to_value(u.MJy / u.sr), "MJy/sr"),
        "uJy": (image * per_count.to_value(u.uJy), "uJy"),
    }


@pytest.fixture(scope="module")
def cutouts(tmp_path_factory):
    """Eight survey lenses (sky, PSFs, noise, cosmic rays of the survey observation) seen at 0.05"/px in a
    6.4" field, each written in every unit system of :func:`unit_systems`."""
    config = OmegaConf.to_container(compose_config("train", ["experiment=survey"]).data.simulator, resolve=True)
    instrument = {**config["instrument"], "image_size": 128, "pixel_scale": SCALE}
    instrument["noise"] = {**instrument["noise"], "background_rms": 0.01 * SCALE / 0.08}  # same depth per arcsec^2
    fine = Simulator.from_config({**config, "instrument": instrument}, compile=False)
    images, params = fine.sample(8, fine.make_generator(36))
    root = tmp_path_factory.mktemp("units")
    for unit in unit_systems(images[0, 0].numpy()):
        (root / unit.replace("/", "_per_")).mkdir()
    for k, image in enumerate(images[:, 0].double().numpy()):
        for unit, (data, bunit) in unit_systems(image).items():
            header = fits.Header({"PIXSCALE": SCALE, "BUNIT": bunit})
            fits.writeto(root / unit.replace("/", "_per_") / f"lens{k}.fits", data.astype(np.float32), header)
    return root, params


def predicted(root, tmp_path, *options) -> dict[str, dict[str, tuple[float, float]]]:
    """theta_E and its sigma per lens, per unit system, from lenscnn-predict with the shipped ensemble."""
    out = {}
    for folder in sorted(root.iterdir()):
        run = tmp_path / folder.name
        result = run_app("predict", [f"input={folder}", *options, f"hydra.run.dir={run}"])
        assert result.returncode == 0, result.stderr[-2000:]
        rows = list(csv.DictReader((run / "predictions.csv").open()))
        out[folder.name] = {
            r["image"].rsplit("/", 1)[-1]: (float(r["theta_E"]), float(r["theta_E_sigma"])) for r in rows
        }
    return out


def test_theta_E_does_not_depend_on_the_flux_unit(cutouts, tmp_path):
    root, params = cutouts
    answers = predicted(root, tmp_path)
    base = answers["counts_per_s"]
    print("\ntheta_E per lens [arcsec], true / counts/s / largest change in another unit [sigma]")
    for name, (theta, sigma) in base.items():
        worst = max(abs(answers[unit][name][0] - theta) / sigma for unit in answers)
        true = float(params["theta_E"][int(name[4:-5])])
        print(f"{name}: {true:.3f} / {theta:.3f} +- {sigma:.3f} / {worst:.4f}")
        assert worst <= 0.1, (name, {unit: answers[unit][name] for unit in answers})
        assert abs(theta - true) < max(0.15, 4 * sigma)  # and the answers are the lenses'


def test_counts_taken_as_they_are_do_depend_on_the_unit(cutouts):
    """What the rescaling prevents: read as counts/s, the image scaled by 1e-3 (a thousand times fainter than any
    training image) moves theta_E by several sigma (the shipped ensemble on the prepared pixels, as predict
    gives them, without its domain flags)."""
    root, _ = cutouts
    ensemble = pretrained.load()
    settings = Preparation(units="counts")
    shifts = []
    for name in sorted(p.name for p in (root / "counts_per_s").iterdir()):
        images = []
        for unit in ("counts_per_s", "x1e-3"):
            ((cutout, variance, flagged),) = read_file(root / unit / name, settings)
            prepared = prepare(cutout, settings, ensemble.image_size, ensemble.pixel_scale, variance, flagged)
            images.append(prepared.image)
        prediction = ensemble.predict(torch.stack(images))
        shifts.append(float((prediction.mean[1, 0] - prediction.mean[0, 0]).abs() / prediction.sigma[0, 0]))
    assert np.median(shifts) > 1, shifts


def test_blank_constant_and_nan_images_are_refused_or_flagged(tmp_path):
    inputs = tmp_path / "bad"
    inputs.mkdir()
    header = fits.Header({"PIXSCALE": 0.08})
    fits.writeto(inputs / "zeros.fits", np.zeros((80, 80), np.float32), header)
    fits.writeto(inputs / "constant.fits", np.full((80, 80), 3.5e-19, np.float32), header)
    fits.writeto(inputs / "nan.fits", np.full((80, 80), np.nan, np.float32), header)
    result = run_app("predict", [f"input={inputs}", f"hydra.run.dir={tmp_path / 'run'}"])
    rows = {r["image"].rsplit("/", 1)[-1]: r for r in csv.DictReader((tmp_path / "run" / "predictions.csv").open())}
    assert result.returncode != 0  # some files failed
    assert rows["zeros.fits"]["status"].startswith("failed: ") and "every pixel" in rows["zeros.fits"]["status"]
    assert rows["nan.fits"]["status"].startswith("failed: ")
    assert "blank or constant image" in rows["constant.fits"]["flags"]
