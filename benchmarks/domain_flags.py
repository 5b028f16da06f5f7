"""Do the domain flags mean "don't trust this answer"? Clean lenses and kinds of garbage through
``lenscnn-predict``'s own code path with its defaults, with the shipped ensemble.

Per kind, ``--n`` FITS cutouts are written and predicted (:func:`lenscnn.evaluation.cutouts.predict_cutouts`);
the table gives the share flagged, refused (a ``failed`` row) and the two together, and which flag fired
most. The kinds:

* ``clean``: lenses of the training distribution (survey prior and observation) at the model's 0.08"/px;
* ``clean 0.05"``: the same prior seen at HST's 0.05"/px in 6.4" cutouts (resampled by predict);
* ``blank`` (all 0), ``constant`` (one level), ``noise only`` (white noise on a residual sky);
* ``star``: a Moffat point source and the sky noise, nothing else;
* ``galaxy without arcs``: the survey prior with the source 1,000x fainter (the lens light as bright as
  usual): an elliptical and its neighbours, no visible arcs;
* ``pixel scale x0.5`` / ``x2``: clean lenses whose header claims half or twice their pixel scale;
* ``theta_E 3-4"``: lenses of the survey prior with Einstein radii far above its 0.5-2".

Targets (issue 36): every kind of garbage flagged or refused in >= 95% of cases, clean lenses flagged in
<= 2%.

    python benchmarks/domain_flags.py [--n 100]
"""

from __future__ import annotations

import argparse
import collections
import copy
import tempfile
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from lenscnn import pretrained
from lenscnn.evaluation.cutouts import check_inputs, domain_reference, predict_cutouts
from lenscnn.io.cutouts import find_inputs
from lenscnn.preparation.pipeline import Preparation
from lenscnn.sim import Simulator

SCALE = 0.08


def survey_config() -> dict:
    with initialize_config_module("lenscnn.conf", version_base="1.3"):
        cfg = compose("train", overrides=["experiment=survey"])
    return OmegaConf.to_container(cfg.data.simulator, resolve=True)


def render(config: dict, n: int, seed: int, size: int = 64, scale: float = SCALE) -> np.ndarray:
    """``n`` images ``(n, size, size)`` of a simulator config on a grid of ``scale`` arcsec."""
    instrument = {**config["instrument"], "image_size": size, "pixel_scale": scale}
    instrument["noise"] = {
        **instrument["noise"],
        "background_rms": instrument["noise"]["background_rms"] * scale / SCALE,
    }
    simulator = Simulator.from_config({**config, "instrument": instrument}, compile=False)
    images, _ = simulator.sample(n, simulator.make_generator(seed))
    return images[:, 0].numpy()


def kinds(n: int, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, float]]:
    """``{kind: (images (n, H, W), pixel scale written in the header)}``."""
    config = survey_config()
    clean = render(config, n, 1)
    faint = copy.deepcopy(config)
    faint["prior"]["source"]["amp"] = {"dist": "log_uniform", "low": 0.03, "high": 0.3}
    faint["prior"]["lens_light"].update(
        flux_ratio={"dist": "log_uniform", "low": 1e3, "high": 1e6}, absent_fraction=0.0
    )
    faint["prior"]["lens_light_2"]["flux_ratio"] = {"dist": "log_uniform", "low": 5e2, "high": 5e5}
    wide = copy.deepcopy(config)
    wide["prior"]["lens"]["theta_E"] = {"dist": "uniform", "low": 3.0, "high": 4.0}
    rms = 0.01 * np.exp(rng.uniform(np.log(0.5), np.log(4.0), (n, 1, 1)))
    noise = rng.normal(0.0, 1.0, (n, 64, 64)) * rms
    sky = rng.uniform(-30, 30, (n, 1, 1)) * rms
    y, x = np.mgrid[:64, :64] - 31.5
    centre = rng.uniform(-10, 10, (n, 2, 1, 1))
    fwhm = rng.uniform(0.08, 0.25, (n, 1, 1)) / SCALE
    beta = rng.uniform(2.0, 5.0, (n, 1, 1))
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    moffat = (1 + ((x - centre[:, 0]) ** 2 + (y - centre[:, 1]) ** 2) / alpha**2) ** -beta
    stars = moffat / moffat.sum(axis=(1, 2), keepdims=True) * np.exp(rng.uniform(np.log(2), np.log(2000), (n, 1, 1)))
    return {
        "clean": (clean, SCALE),
        'clean 0.05"': (render(config, n, 2, size=128, scale=0.05), 0.05),
        "blank": (np.zeros((n, 64, 64)), SCALE),
        "constant": (np.full((n, 64, 64), 1.0) * rng.uniform(-1, 1, (n, 1, 1)), SCALE),
        "noise only": (noise + sky, SCALE),
        "star": (stars + noise + sky, SCALE),
        "galaxy without arcs": (render(faint, n, 3), SCALE),
        "pixel scale x0.5": (render(config, n, 4, size=128), SCALE / 2),
        "pixel scale x2": (clean, SCALE * 2),
        'theta_E 3-4"': (render(wide, n, 5, size=96), SCALE),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    ensemble = pretrained.load()
    settings = Preparation()
    reference = domain_reference(ensemble, settings, 0, 8)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, (images, scale) in kinds(args.n, np.random.default_rng(36)).items():
            folder = Path(tmp) / kind.replace(" ", "_").replace('"', "")
            folder.mkdir()
            for k, image in enumerate(images):
                fits.writeto(folder / f"{k:04d}.fits", image.astype(np.float32), fits.Header({"PIXSCALE": scale}))
            files = find_inputs(str(folder))
            results = [
                r
                for batch, _ in predict_cutouts(
                    files, settings, ensemble, reference, check_inputs(files, settings), batch_size=256
                )
                for r in batch
            ]
            refused = sum(not r.ok for r in results)
            flagged = sum(r.ok and bool(r.flags) for r in results)
            reasons = collections.Counter(f.split(":")[0].split(" ")[0] for r in results if r.ok for f in r.flags)
            reasons.update(f"refused: {r.error.split(': ')[-1][:40]}" for r in results if not r.ok)
            rows.append((kind, len(results), flagged, refused, reasons.most_common(2)))
    print(f"shipped ensemble, lenscnn-predict defaults, {args.n} cutouts per kind")
    print(f"{'kind':<22}{'flagged':>9}{'refused':>9}{'either':>8}  {'target':<8} most common reasons")
    for kind, total, flagged, refused, reasons in rows:
        target = "<= 2%" if kind.startswith("clean") else ">= 95%"
        either = (flagged + refused) / total
        print(
            f"{kind:<22}{flagged / total:>9.0%}{refused / total:>9.0%}{either:>8.0%}  {target:<8} "
            + "; ".join(f"{name} ({count})" for name, count in reasons)
        )


if __name__ == "__main__":
    main()
