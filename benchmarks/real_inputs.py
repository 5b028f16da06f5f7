"""Real cutouts as obtained, measured on simulated test lenses written as FITS and read back by
``lenscnn-predict``'s own code path (:meth:`lenscnn.evaluation.cutouts.CutoutPredictor.batches`).

1. **Accuracy under what archives leave in**: the shipped ensemble's fixed test lenses (clean
   realistic prior) written as FITS, clean and with a pedestal of +0.1 / -0.1 counts/s/px, 20
   cosmic-ray hits (the same lenses and noise), a NaN border, and all of them at once; theta_E RMSE
   with predict's defaults (sky estimated, cosmic rays masked) against the clean images', and
   against the images as they are (``sky=none cosmic_rays=false``).
2. **Domain flags**: the fraction of images flagged, clean and with a PSF twice the model's (given
   as the ``PSF_FWHM`` header keyword), a pedestal of 30x the noise rms left in (``sky=none``), 3x the
   noise, blank images and images x100 in flux; against the training distribution of the shipped
   ensemble (survey prior and nuisances) and of a model trained on the test lenses' prior without
   nuisances (the realistic prior: what the ensemble shipped before was trained on).
3. **Batches that survive**: a directory of 20 cutouts with 3 bad files through ``lenscnn-predict``;
   and the time to the refusal of a single bad input.

    python benchmarks/real_inputs.py [--lenses 512] [--flag-lenses 100] [--ckpt MODEL.ckpt]
    python benchmarks/real_inputs.py --tiny   # seconds: 4 lenses, 64-image domain references, 1 thread (tests)

With ``--ckpt``, a model of your own on its own prior's test lenses (e.g. ``make train``'s
quickstart model, trained on clean images: there the preparation is what keeps it accurate).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits

from lenscnn import pretrained
from lenscnn.evaluation.cutouts import CutoutPredictor
from lenscnn.evaluation.datasets import simulated_set
from lenscnn.models.ensemble import Ensemble
from lenscnn.preparation.domain import REFERENCE_SIZE, DomainReference
from lenscnn.preparation.pipeline import Preparation

RMS = 0.01  # the quickstart instrument's background rms [counts/s/px]


def conf(group: str, name: str) -> dict:
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module("lenscnn.conf", version_base="1.3"):
        cfg = compose("eval", overrides=[f"{group}={name}"])
    return OmegaConf.to_container(cfg[group], resolve=True)


#: Training images drawn for each domain reference (``--tiny``: fewer).
SETTINGS = {"reference_size": REFERENCE_SIZE}

#: The prior of the test lenses: the clean realistic one (the model card's robustness table) for the
#: shipped ensemble; a checkpoint's own (``--ckpt``) otherwise.
PRIOR: dict = {}


def render(ensemble: Ensemble, lenses: int, observation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed test lenses of :data:`PRIOR` with an ``observation`` (``none`` or e.g. ``cosmic_rays``):
    ``(images (n, H, W), theta_E (n,))``."""
    prior = PRIOR or ensemble.simulator_config["prior"]
    config = {**ensemble.simulator_config, "prior": prior, "observation": conf("observation", observation)}
    test = simulated_set(config, "test", lenses)
    images, theta = [], []
    for batch, params in test.batches(256, torch.device("cpu")):
        images.append(batch[:, 0].double())
        theta.append(params["theta_E"].double())
    return torch.cat(images), torch.cat(theta)


def write(directory: Path, images: torch.Tensor, **header: float) -> list[Path]:
    directory.mkdir(parents=True)
    files = []
    for k, image in enumerate(images.numpy()):
        path = directory / f"lens_{k:05d}.fits"
        fits.PrimaryHDU(image.astype(np.float32), header=fits.Header({"PIXSCALE": 0.08, **header})).writeto(path)
        files.append(path)
    return files


def predict(
    files: list[Path], ensemble: Ensemble, reference: DomainReference, refused: bool = False, **settings
) -> tuple[np.ndarray, list]:
    """theta_E per file and the flags, through predict's code path with ``settings`` over the defaults. With
    ``refused``, an image predict refuses (a ``failed`` row, e.g. a blank one: every pixel masked) counts as
    flagged (theta_E NaN, its reason as the flag); else it is an error."""
    theta, flags = [], []
    index = ensemble.target_names.index("theta_E")
    predictor = CutoutPredictor(ensemble, reference, symmetries=ensemble.symmetries())
    for results, _ in predictor.batches(files, Preparation(**settings), {}):
        for result in results:
            if not result.ok and refused:
                theta.append(np.nan)
                flags.append([f"refused: {result.error}"])
                continue
            assert result.ok, result.error
            theta.append(result.mean[index])
            flags.append(result.flags)
    return np.array(theta), flags


def accuracy(ensemble: Ensemble, reference: DomainReference, lenses: int, root: Path) -> None:
    clean, truth = render(ensemble, lenses, "none")
    rays, _ = render(ensemble, lenses, "cosmic_rays")
    border = clean.clone()
    border[:, :3] = np.nan
    border[:, :, -3:] = np.nan
    everything = rays + 0.1
    everything[:, :3] = np.nan
    everything[:, :, -3:] = np.nan
    sets = {
        "clean": clean,
        "pedestal +0.1": clean + 0.1,
        "pedestal -0.1": clean - 0.1,
        "20 cosmic rays": rays,
        "NaN border (3 px)": border,
        "all: +0.1, rays, NaN border": everything,
    }
    truth = truth.numpy()
    print(f"\n1. theta_E RMSE [arcsec], {lenses} test lenses written as FITS (ratio to the clean images')")
    print(f"{'set':30s} {'defaults':>10s} {'ratio':>7s} {'as is':>10s} {'ratio':>7s}")
    base = {}
    for name, images in sets.items():
        files = write(root / name.replace(" ", "_").replace(":", "").replace(",", ""), images)
        cells = []
        for mode, settings in (("defaults", {}), ("as is", {"sky": "none", "cosmic_rays": False})):
            theta, _ = predict(files, ensemble, reference, **settings)
            rmse = float(np.sqrt(np.mean((theta - truth) ** 2)))
            base.setdefault(mode, rmse)
            cells.append(f"{rmse:10.4f} {rmse / base[mode]:7.3f}")
        print(f"{name:30s} {' '.join(cells)}")


def flag_fractions(ensemble: Ensemble, lenses: int, root: Path) -> None:
    clean, _ = render(ensemble, lenses, "none")
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0), dtype=clean.dtype) * RMS * 8**0.5
    psf = 2 * ensemble.simulator_config["instrument"]["psf"]["fwhm"]
    cases = {
        "clean": (clean, {}, {}),
        f'PSF FWHM {psf:.2f}" (2x)': (clean, {"PSF_FWHM": psf}, {}),
        "pedestal 30 rms, sky=none": (clean + 30 * RMS, {}, {"sky": "none"}),
        "pedestal 30 rms, defaults": (clean + 30 * RMS, {}, {}),
        "3x the noise": (clean + noise, {}, {}),
        "blank": (torch.zeros_like(clean), {}, {}),
        "x100 in flux": (clean * 100, {}, {}),
    }
    # the shipped model's training distribution, and a model trained on the test lenses' prior without
    # nuisances (for the shipped ensemble: the realistic prior, what the ensemble before it was trained on)
    models = {
        "shipped": ensemble.simulator_config,
        "clean-trained": {
            **ensemble.simulator_config,
            "prior": PRIOR or ensemble.simulator_config["prior"],
            "observation": None,
        },
    }
    references = {
        (name, subtract): DomainReference.simulate(
            config, ensemble.target_names, SETTINGS["reference_size"], subtract_sky=subtract
        )
        for name, config in models.items()
        for subtract in (True, False)
    }
    print(f"\n2. fraction of {lenses} images flagged (or refused: a failed row)")
    print(f"{'images':30s} {'shipped (survey)':>17s} {'clean-trained':>14s}")
    for k, (name, (images, header, settings)) in enumerate(cases.items()):
        files = write(root / f"flags_{k}", images, **header)
        subtract = settings.get("sky", "estimate") == "estimate"
        fractions = [
            np.mean([bool(f) for f in predict(files, ensemble, references[model, subtract], True, **settings)[1]])
            for model in models
        ]
        print(f"{name:30s} {fractions[0]:17.2f} {fractions[1]:14.2f}")


def batches(ensemble: Ensemble, root: Path, ckpt: str | None) -> None:
    clean, _ = render(ensemble, 17, "none")
    directory = root / "batch"
    write(directory, clean)
    (directory / "bad_1_truncated.fits").write_bytes((directory / "lens_00000.fits").read_bytes()[:4000])
    (directory / "bad_2_text.fits").write_text("not a FITS file\n")
    fits.PrimaryHDU(np.zeros((20, 20), dtype=np.float32), header=fits.Header({"PIXSCALE": 0.08})).writeto(
        directory / "bad_3_small.fits"
    )
    app = [str(Path(sys.executable).parent / "lenscnn-predict"), *([f"ckpt_path={ckpt}"] if ckpt else [])]
    out = root / "batch_run"
    result = subprocess.run([*app, f"input={directory}", f"hydra.run.dir={out}"], capture_output=True, text=True)
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    ok = sum(r["status"] == "ok" for r in rows)
    failed = [r for r in rows if r["status"] != "ok"]
    error_lines = [line for line in (result.stdout + result.stderr).splitlines() if "failed:" in line]
    print(
        f"\n3. a directory of 20 cutouts with 3 bad files: exit {result.returncode}, "
        f"{ok} predictions, {len(failed)} failed rows"
    )
    for row in failed:
        print(f"   {Path(row['image']).name}: {row['status']}")
    print(f"   log lines naming a failure: {len(error_lines)}")
    start = time.perf_counter()
    single = subprocess.run(
        [*app, f"input={directory / 'bad_2_text.fits'}", f"hydra.run.dir={root / 'single'}"],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    print(f"   a single bad input: exit {single.returncode} after {seconds:.1f} s: {single.stderr.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lenses", type=int, default=512)
    parser.add_argument("--flag-lenses", type=int, default=100)
    parser.add_argument("--parts", default="123", help="which parts to run, e.g. 2 or 13")
    parser.add_argument("--ckpt", help="a checkpoint to measure instead of the shipped ensemble (its own prior)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="the same code path in seconds: 4 lenses, domain references of 64 images, 1 thread",
    )
    args = parser.parse_args()
    if args.tiny:
        # one thread: on 2 busy cores, torch's idle OpenMP threads slow astroscrappy's (cosmic rays) ~100x
        args.lenses, args.flag_lenses, args.threads = 4, 4, 1
        SETTINGS["reference_size"] = 64
    torch.set_num_threads(args.threads)
    if args.ckpt:
        ensemble = Ensemble.from_checkpoints([args.ckpt])
    else:
        ensemble = Ensemble.from_checkpoints(pretrained.checkpoints(), pretrained.calibration_file())
        PRIOR.update(conf("prior", "realistic"))
    reference = DomainReference.simulate(ensemble.simulator_config, ensemble.target_names, SETTINGS["reference_size"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "1" in args.parts:
            accuracy(ensemble, reference, args.lenses, root)
        if "2" in args.parts:
            flag_fractions(ensemble, args.flag_lenses, root)
        if "3" in args.parts:
            batches(ensemble, root, args.ckpt)


if __name__ == "__main__":
    main()
