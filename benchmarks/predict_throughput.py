"""Prediction throughput of the quickstart ensemble of four, in lenses per second.

Rows, all in the same run on the same lenses:

* in memory, batched (``Ensemble.predict`` on batches of 256 images already in memory);
* in memory, one image at a time: the reference a naive per-image loop gives;
* end to end from a directory of FITS files (``lenscnn-predict``'s ``predict(cfg)`` in
  process: find, read with astropy, check, crop, predict, write ``predictions.csv``).

The members are the shipped pretrained ensemble if present, else four freshly initialised
quickstart networks (the same computation: throughput does not depend on the weights).
Targets (issue 4): >= 1,000 lenses/s in memory, >= 200 lenses/s from FITS files on this CPU;
Hezaveh et al. (2017) reported 100 lenses/s on a GPU.

    python benchmarks/predict_throughput.py [--lenses 2048] [--files 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import open_dict

from lenscnn import pretrained
from lenscnn.cli.predict import predict
from lenscnn.cli.train import build_model
from lenscnn.errors import UserError
from lenscnn.models.ensemble import Ensemble
from lenscnn.sim import Simulator

TARGETS = {"in memory": 1000.0, "FITS directory": 200.0}


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        ensemble = Ensemble.from_checkpoints(quickstart_members(tmp))
        simulator = Simulator.from_config({**ensemble.simulator_config, "compile": False})
        images, _ = simulator.sample(args.lenses, generator=torch.Generator().manual_seed(0))

        ensemble.predict(images[:256])  # warm-up
        t0 = time.perf_counter()
        for start in range(0, args.lenses, 256):
            ensemble.predict(images[start : start + 256])
        batched = args.lenses / (time.perf_counter() - t0)

        n_single = min(200, args.lenses)
        t0 = time.perf_counter()
        for k in range(n_single):
            ensemble.predict(images[k : k + 1])
        single = n_single / (time.perf_counter() - t0)

        cutouts = tmp / "cutouts"
        cutouts.mkdir()
        header = fits.Header({"PIXSCALE": ensemble.pixel_scale})
        for k in range(args.files):
            fits.PrimaryHDU(images[k % args.lenses, 0].numpy().astype(np.float32), header=header).writeto(
                cutouts / f"lens_{k:05d}.fits"
            )
        with initialize_config_module("lenscnn.conf", version_base="1.3"):
            cfg = compose("predict", overrides=[f"input={cutouts}"])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp / "run")
            cfg.ensemble.checkpoints = [str(p) for p in ensemble.sources]
        t0 = time.perf_counter()
        out, _ = predict(cfg)
        end_to_end = args.files / (time.perf_counter() - t0)
        assert len(out.read_text().splitlines()) == args.files + 1

    members = len(ensemble.members)
    print(
        f"quickstart ensemble of {members} ({ensemble.image_size[0]}x{ensemble.image_size[1]} px), "
        f"{args.threads} CPU threads, torch {torch.__version__}"
    )
    print(f"{'setting':<38}{'lenses/s':>10}{'target':>9}{'ratio to target':>17}{'vs per-image loop':>19}")
    rows = [
        ("in memory, batches of 256", batched, TARGETS["in memory"]),
        ("in memory, one image at a time (ref.)", single, None),
        (f"FITS directory ({args.files} files)", end_to_end, TARGETS["FITS directory"]),
    ]
    for name, value, target in rows:
        target_text = f"{target:,.0f}" if target else "-"
        ratio_text = f"{value / target:.2f}x" if target else "-"
        print(f"{name:<38}{value:>10,.0f}{target_text:>9}{ratio_text:>17}{value / single:>18.1f}x")
    print(f"Hezaveh et al. 2017 (GPU): 100 lenses/s -> batched in-memory here is {batched / 100:.1f}x that")


if __name__ == "__main__":
    main()
