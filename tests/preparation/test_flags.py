"""The shipped ensemble's domain flags through ``lenscnn-predict``'s defaults: lenses of its own training
distribution are rarely flagged (the reference is prepared exactly as inputs are: cosmic rays cleaned,
rescaled to the model's noise), while noise and a constant image are (``benchmarks/domain_flags.py``
measures more kinds of garbage, some of which the flags still miss). Stars on a clean sky are flagged by what
the networks make of them: an Einstein radius they cannot measure (``uncertain``)."""

from __future__ import annotations

import csv

import numpy as np
from astropy.io import fits
from omegaconf import OmegaConf

from lenscnn.sim import Simulator
from tests.helpers import compose_config, run_app


def flagged(folder, tmp_path) -> list[str]:
    result = run_app("predict", [f"input={folder}", f"hydra.run.dir={tmp_path / folder.name}"])
    assert result.returncode == 0, result.stderr[-2000:]
    return [r["flags"] for r in csv.DictReader((tmp_path / folder.name / "predictions.csv").open())]


def test_clean_survey_lenses_are_rarely_flagged_and_garbage_is(tmp_path):
    config = OmegaConf.to_container(compose_config("train", ["experiment=survey"]).data.simulator, resolve=True)
    simulator = Simulator.from_config(config, compile=False)
    images, _ = simulator.sample(100, simulator.make_generator(41))  # held out: not the reference's seed
    clean, garbage = tmp_path / "clean", tmp_path / "garbage"
    clean.mkdir(), garbage.mkdir()
    header = fits.Header({"PIXSCALE": 0.08})
    for k, image in enumerate(images[:, 0].numpy()):
        fits.writeto(clean / f"lens{k:03d}.fits", image, header)
    rng = np.random.default_rng(4)
    for k in range(10):
        noise = rng.normal(0.0, 0.02, (64, 64)) + rng.uniform(-0.3, 0.3)
        fits.writeto(garbage / f"noise{k}.fits", noise.astype(np.float32), header)
    fits.writeto(garbage / "constant.fits", np.full((64, 64), 0.3, np.float32), header)
    y, x = np.mgrid[:64, :64] - 31.5
    for k in range(10):  # a Moffat star (FWHM 0.16", beta 3) on the model's own noise, its sky subtracted
        cx, cy = rng.uniform(-8, 8, 2)
        star = (1 + ((x - cx) ** 2 + (y - cy) ** 2) / 1.96**2) ** -3.0
        star = star / star.sum() * 10 ** rng.uniform(0.5, 3) + rng.normal(0.0, 0.025, (64, 64))
        fits.writeto(garbage / f"star{k}.fits", star.astype(np.float32), header)
    flags = flagged(clean, tmp_path)
    assert len(flags) == 100 and sum(map(bool, flags)) <= 3, [
        f for f in flags if f
    ]  # 5.5% of 200 before the reference was prepared as inputs are
    garbage_flags = flagged(garbage, tmp_path)
    assert len(garbage_flags) == 21 and all(garbage_flags), [f[:90] for f in garbage_flags]
    names = sorted(p.name for p in garbage.glob("*.fits"))
    stars = [f for f, name in zip(garbage_flags, names, strict=True) if "star" in name]
    assert sum("uncertain: sigma(theta_E)/theta_E" in f for f in stars) >= 8, stars
