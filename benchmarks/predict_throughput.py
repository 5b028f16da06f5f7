"""Prediction throughput of the shipped ensemble of four, in lenses per second.

Rows, all in the same run on the same lenses (the survey prior the ensemble was trained on):

* in memory, batched (``Ensemble.predict`` on batches of 256 images already in memory), with the 8
  symmetries the ensemble is calibrated with and without them;
* in memory, one image at a time: the reference a naive per-image loop gives;
* end to end from a directory of FITS files (``lenscnn-predict``'s ``predict(cfg)`` in process, its
  defaults: find, read with astropy, check, estimate the sky and noise, rescale to the model's noise,
  crop, predict with 8 symmetries, flag, write ``predictions.csv``; the files prepared in ``workers=auto``
  processes, one per core but one), as single exposures (cosmic rays looked for) and as combined exposures
  (``NCOMBINE = 4``: ``cosmic_rays=auto`` skips them); the combined ones also with ``workers=1`` (prepared
  in the process that predicts: the reference for the workers) and with ``symmetries=1``;
* the preparation alone of the single exposures (no networks, no flags) on one core (one process, its native
  thread pools at one thread) and in ``workers`` processes, one per core: how the workers scale with the cores.

The members are the shipped pretrained ensemble if present, else four freshly initialised
quickstart networks (the same computation: throughput does not depend on the weights).
Targets (issues 4 and 36): >= 1,000 lenses/s in memory, >= 200 lenses/s from FITS files;
Hezaveh et al. (2017) reported 100 lenses/s on a GPU.

    python benchmarks/predict_throughput.py [--lenses 2048] [--files 1000] [--threads 2] [--device cuda]
    python benchmarks/predict_throughput.py --tiny   # seconds: 8 lenses, 4 files (tests/test_benchmarks.py)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import open_dict
from threadpoolctl import threadpool_limits

from lenscnn import pretrained
from lenscnn.cli.common import register_resolvers
from lenscnn.cli.predict import predict
from lenscnn.cli.train import build_model
from lenscnn.errors import UserError
from lenscnn.models.ensemble import Ensemble
from lenscnn.preparation.images import prepared_images
from lenscnn.preparation.pipeline import Preparation
from lenscnn.sim import Simulator

TARGETS = {"in memory": 1000.0, "FITS directory": 200.0}


def pretrained_present() -> bool:
    try:
        pretrained.checkpoints()
    except UserError:
        return False
    return True


def quickstart_members(tmp: Path) -> list[Path]:
    """Checkpoints of the shipped quickstart ensemble, or four freshly initialised members."""
    try:
        return pretrained.checkpoints()
    except UserError:  # not built yet (make pretrained): same architecture, random weights
        pass
    with initialize_config_module("lenscnn.conf", version_base="1.3"):
        cfg = compose("train", overrides=["experiment=quickstart_ensemble", "data.simulator.compile=false"])
    datamodule = instantiate(cfg.data, _convert_="all")
    paths = []
    for seed in range(1, 5):
        torch.manual_seed(seed)
        model = build_model(cfg.model, datamodule)
        path = tmp / f"member_{seed}.ckpt"
        torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, path)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lenses", type=int, default=2048)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="where the networks run: cpu, cuda (predict's device=)")
    parser.add_argument("--tiny", action="store_true", help="the same code path in seconds: 8 lenses, 4 files")
    args = parser.parse_args()
    if args.tiny:
        args.lenses, args.files = 8, 4
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        ensemble = Ensemble.from_checkpoints(quickstart_members(tmp)).to(args.device)
        simulator = Simulator.from_config({**ensemble.simulator_config, "compile": False})
        images, _ = simulator.sample(args.lenses, generator=torch.Generator().manual_seed(0))

        batched = {s: in_memory(ensemble, images, s) for s in (8, 1)}

        n_single = min(200, args.lenses)
        t0 = time.perf_counter()
        for k in range(n_single):
            prediction = ensemble.predict(images[k : k + 1], symmetries=1)
        prediction.mean.cpu()  # waits for an accelerator's queue
        single = n_single / (time.perf_counter() - t0)

        end_to_end = {}
        device = f"device={args.device}"
        for name, header in (("single", {}), ("combined", {"NCOMBINE": 4})):
            cutouts = tmp / name
            cutouts.mkdir()
            header = fits.Header({"PIXSCALE": ensemble.pixel_scale, **header})
            for k in range(args.files):
                image = images[k % args.lenses, 0].numpy().astype(np.float32)
                fits.PrimaryHDU(image, header=header).writeto(cutouts / f"lens_{k:05d}.fits")
            end_to_end[name] = from_files(ensemble, cutouts, tmp / f"run_{name}", args.files, [device])
        for name, option in (("workers=1", "workers=1"), ("symmetries=1", "symmetries=1")):
            end_to_end[name] = from_files(ensemble, tmp / "combined", tmp / f"run_{name}", args.files, [option, device])
        cores = len(os.sched_getaffinity(0))
        single_files = sorted((tmp / "single").iterdir())
        with threadpool_limits(limits=1):  # one core (astroscrappy's medians would use every core's OpenMP thread)
            alone = {1: preparation_alone(ensemble, single_files, 1)}
        alone[cores] = preparation_alone(ensemble, single_files, cores)  # each worker one thread

    members = len(ensemble.members)
    print(
        f"shipped ensemble of {members} ({ensemble.image_size[0]}x{ensemble.image_size[1]} px), "
        f"networks on {args.device}, {args.threads} CPU threads, {cores} cores (workers=auto: {max(1, cores - 1)}), "
        f"torch {torch.__version__}"
    )
    print(f"{'setting':<58}{'lenses/s':>10}{'target':>9}{'ratio to target':>17}{'vs per-image loop':>19}")
    rows = [
        ("in memory, batches of 256, 8 symmetries (as calibrated)", batched[8], None),
        ("in memory, batches of 256, symmetries=1", batched[1], TARGETS["in memory"]),
        ("in memory, one image at a time, symmetries=1 (ref.)", single, None),
        (f"FITS directory, single exposures ({args.files} files)", end_to_end["single"], TARGETS["FITS directory"]),
        (f"FITS directory, combined exposures ({args.files} files)", end_to_end["combined"], TARGETS["FITS directory"]),
        ("  the same, workers=1 (prepared in the predicting process)", end_to_end["workers=1"], None),
        ("  the same, symmetries=1", end_to_end["symmetries=1"], TARGETS["FITS directory"]),
        ("preparation alone, single exposures, one core", alone[1], None),
        (f"preparation alone, single exposures, workers={cores}", alone[cores], None),
    ]
    for name, value, target in rows:
        target_text = f"{target:,.0f}" if target else "-"
        ratio_text = f"{value / target:.2f}x" if target else "-"
        print(f"{name:<58}{value:>10,.0f}{target_text:>9}{ratio_text:>17}{value / single:>18.1f}x")
    for name in ("single", "combined"):
        value = end_to_end[name]
        print(f"FITS directory ({name} exposures) / the networks in memory (8 symmetries): {value / batched[8]:.2f}x")
    print(f"preparation alone, workers={cores} / one core: {alone[cores] / alone[1]:.2f}x on {cores} cores")
    print(f"Hezaveh et al. 2017 (GPU): 100 lenses/s -> batched in-memory here is {batched[1] / 100:.1f}x that")


def in_memory(ensemble: Ensemble, images: torch.Tensor, symmetries: int) -> float:
    """Lenses/s of ``Ensemble.predict`` on batches of 256 images in memory."""
    ensemble.predict(images[:256], symmetries=symmetries)  # warm-up
    t0 = time.perf_counter()
    for start in range(0, len(images), 256):
        prediction = ensemble.predict(images[start : start + 256], symmetries=symmetries)
    prediction.mean.cpu()  # waits for an accelerator's queue
    return len(images) / (time.perf_counter() - t0)


def preparation_alone(ensemble: Ensemble, files: list[Path], workers: int) -> float:
    """Files/s of the preparation alone (:func:`lenscnn.preparation.images.prepared_images` with predict's default
    settings, in ``workers`` processes), without networks or flags: what the workers add up to."""
    settings = Preparation()  # conf/preparation/default.yaml
    t0 = time.perf_counter()
    prepared = prepared_images(files, settings, ensemble.image_size, ensemble.pixel_scale, workers=workers)
    done = sum(image.ok for image in prepared)
    assert done == len(files)
    return len(files) / (time.perf_counter() - t0)


def from_files(ensemble: Ensemble, cutouts: Path, out: Path, files: int, options: list[str] | None = None) -> float:
    """Lenses/s of ``lenscnn-predict`` (in process, default preparation and flags, and ``options``) over a
    directory; after a run on its first file, so that the model's domain reference, drawn once per model and
    setting and then cached (~40 s on 2 cores), is not counted."""
    shipped = ensemble.sources == [str(p) for p in pretrained.checkpoints()] if pretrained_present() else False
    options = options or []
    symmetries = [] if any(o.startswith("symmetries=") for o in options) else ["symmetries=8"]
    overrides = [f"input={cutouts}", *symmetries, *(["ensemble=pretrained"] if shipped else []), *options]
    register_resolvers()  # ${lenscnn_pretrained:...}, as the apps do
    with initialize_config_module("lenscnn.conf", version_base="1.3"):
        cfg = compose("predict", overrides=overrides)
    with open_dict(cfg):
        if not shipped:
            cfg.ensemble.checkpoints = [str(p) for p in ensemble.sources]
    with open_dict(cfg):
        cfg.input, cfg.paths.output_dir = str(next(iter(sorted(cutouts.iterdir())))), str(out) + "_warm_up"
    predict(cfg)
    with open_dict(cfg):
        cfg.input, cfg.paths.output_dir = str(cutouts), str(out)
    t0 = time.perf_counter()
    table = predict(cfg).table
    rate = files / (time.perf_counter() - t0)
    assert len(table.read_text().splitlines()) == files + 1
    return rate


if __name__ == "__main__":
    main()
