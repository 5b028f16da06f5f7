"""Refine on simulated SLACS-like lenses, as a user runs it on archival cutouts: is the fit better than the network,
and can its convergence flag be trusted?

Lenses are drawn from the ``survey`` prior (SIE + external shear, a Sersic or real HUDF-galaxy source, a bulge +
envelope lens galaxy, neighbouring galaxies and a field star) with the ``survey`` observation (per-image PSF of
0.08-0.25" FWHM, Gaussian or Moffat; residual sky and its gradient; correlated noise; cosmic rays, hot pixels,
masked disks), rendered by lenscnn on 96 x 96 pixels of 0.08" (a cutout larger than the network's 64 px field,
as archives deliver them). Each is written as FITS as archives deliver it: its PSF in a ``PSF`` HDU, its pixel
scale, and no ``EXPTIME`` (so refine estimates the shot noise from the image) nor ``NCOMBINE`` (so cosmic rays are
looked for). Then the apps run on that directory as a user would:

* ``lenscnn-predict`` with its defaults (the shipped ensemble);
* ``lenscnn-refine`` with its defaults (the fit field chosen per lens, neighbours masked, the noise model
  estimated, the file's PSF), plus ``--refine`` options (e.g. ``fit.mcmc_run=100`` for sigmas).

Printed: per target the RMSE of the network and of refine (and refine / network for theta_E: RMSE and median
absolute error), the share of fits reported converged, how often a
converged fit is off by more than 3 sigma (refine's MCMC sigma when it ran; the network's sigma otherwise), the
reasons fits were not converged, the median reduced chi^2 and the median wall time per lens.

    OMP_NUM_THREADS=1 python benchmarks/refine_slacs_like.py [--lenses 24] [--seed 5] [--workers 2]
        [--refine fit.mcmc_burn=50 fit.mcmc_run=50 ...] [--keep DIR]
    python benchmarks/refine_slacs_like.py --tiny   # 2 lenses, a tiny fit budget (tests)
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import yaml
from astropy.io import fits

from lenscnn import pretrained
from lenscnn.sim import Simulator

CONF = Path(pretrained.__file__).parents[1] / "conf"
#: The targets scored (the network's).
TARGETS = ("theta_E", "e1", "e2", "center_x", "center_y")
#: The cutouts' size [pixels of 0.08"]: larger than the network's 64, as archives deliver them.
CUTOUT = 96
TINY_FIT = [
    "fit.n_particles=6",
    "fit.n_iterations=3",
    "fit.starts=2",
    "fit.light_iterations=2",
    "fit.final_iterations=2",
    "plots=false",
]


def load_conf(name: str) -> dict:
    with open(CONF / f"{name}.yaml") as f:
        spec = yaml.safe_load(f)
    spec.pop("defaults", None)
    return spec


def write_cutouts(directory: Path, lenses: int, seed: int) -> list[dict[str, float]]:
    """Render the lenses and write them as FITS (image, ``PSF`` HDU); their true parameters, by file."""
    prior = {**load_conf("prior/realistic"), **load_conf("prior/survey")}
    simulator = Simulator.from_config(
        {
            "instrument": {**load_conf("instrument/quickstart"), "image_size": CUTOUT},
            "prior": prior,
            "observation": load_conf("observation/survey"),
            "dtype": "float64",
        }
    )
    images, params = simulator.sample(lenses, torch.Generator().manual_seed(seed), split="test")
    kernels = simulator.observation.psf_kernels(params)
    truths = []
    directory.mkdir(parents=True)
    for k in range(lenses):
        header = fits.Header({"PIXSCALE": 0.08})
        psf = fits.ImageHDU(kernels[k].numpy().astype(np.float32), header=fits.Header({"PIXSCALE": 0.08}), name="PSF")
        fits.HDUList([fits.PrimaryHDU(images[k, 0].numpy().astype(np.float32), header=header), psf]).writeto(
            directory / f"lens_{k:03d}.fits"
        )
        truths.append({name: float(params[name][k]) for name in TARGETS})
    return truths


def run_app(app: str, *overrides: str) -> None:
    command = [sys.executable, "-m", f"lenscnn.cli.{app}", *overrides]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {Path(row["image"]).name: row for row in csv.DictReader(f)}


def rmse(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lenses", type=int, default=24)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--refine", nargs="*", default=[], help="more lenscnn-refine overrides")
    parser.add_argument("--keep", type=Path, default=None, help="work in this (new) directory and keep it")
    parser.add_argument("--tiny", action="store_true", help="2 lenses and a tiny fit budget: the code path only")
    args = parser.parse_args()
    if args.tiny:
        args.lenses, args.workers, args.refine = 2, 1, [*TINY_FIT, *args.refine]
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        cutouts = root / "cutouts"
        truths = dict(
            zip(
                (f"lens_{k:03d}.fits" for k in range(args.lenses)),
                write_cutouts(cutouts, args.lenses, args.seed),
                strict=True,
            )
        )
        run_app("predict", f"input={cutouts}", f"hydra.run.dir={root / 'predict'}")
        run_app(
            "refine",
            f"input={cutouts}",
            f"predictions={root / 'predict'}",
            f"workers={args.workers}",
            f"hydra.run.dir={root / 'refine'}",
            *args.refine,
        )
        network, refined = read_rows(root / "predict" / "predictions.csv"), read_rows(root / "refine" / "refined.csv")
    report(truths, network, refined, args)


def report(
    truths: dict[str, dict[str, float]],
    network: dict[str, dict[str, str]],
    refined: dict[str, dict[str, str]],
    args: argparse.Namespace,
) -> None:
    names = sorted(truths)
    fitted = [n for n in names if refined[n]["status"] == "ok"]

    def value(row: dict[str, str], name: str, fallback: str | None = None) -> float:
        cell = row.get(name) or (row.get(fallback) if fallback else "")
        return float(cell) if cell else math.nan

    print(
        f"{len(names)} SLACS-like lenses (survey prior with neighbours and a star, survey observation, {CUTOUT} px "
        f'of 0.08", PSF HDU, no EXPTIME); lenscnn-predict and lenscnn-refine defaults'
        + (f" + {' '.join(args.refine)}" if args.refine else "")
        + f"; {len(fitted)} fitted"
    )
    print(f"{'RMSE':10s}" + "".join(f"{t:>11s}" for t in TARGETS))
    for label, column in (("network", "net_{}"), ("refine", "{}")):
        errors = {t: [value(refined[n], column.format(t), f"net_{t}") - truths[n][t] for n in names] for t in TARGETS}
        print(f"{label:10s}" + "".join(f"{rmse(errors[t]):11.4f}" for t in TARGETS))
    errors = {
        label: [abs(value(refined[n], column.format("theta_E"), "net_theta_E") - truths[n]["theta_E"]) for n in names]
        for label, column in (("network", "net_{}"), ("refine", "{}"))
    }
    print(
        f"theta_E refine / network: RMSE {rmse(errors['refine']) / rmse(errors['network']):.3f}x, median |error| "
        f"{statistics.median(errors['refine']) / statistics.median(errors['network']):.3f}x"
    )
    converged = [n for n in fitted if refined[n]["converged"] == "true"]
    print(f"converged: {len(converged)}/{len(names)} ({len(converged) / len(names):.0%})")
    for group, members in (("converged", converged), ("not converged", [n for n in fitted if n not in converged])):
        if members:
            errors = [value(refined[n], "theta_E") - truths[n]["theta_E"] for n in members]
            print(f"  theta_E RMSE of the {group} fits: {rmse(errors):.4f} ({len(members)})")
    for kind, column in (("refine's MCMC sigma", "theta_E_sigma"), ("the network's sigma", "net_theta_E_sigma")):
        sigmas = [value(refined[n], column) for n in converged]
        if converged and all(s > 0 for s in sigmas):
            off = sum(
                abs(value(refined[n], "theta_E") - truths[n]["theta_E"]) > 3 * s
                for n, s in zip(converged, sigmas, strict=True)
            )
            print(f"  converged but theta_E off by > 3 x {kind}: {off}/{len(converged)}")
    reasons = Counter(
        re.sub(r"\d[\d.]*", "#", part.split(":")[0].split(" (")[0])
        for n in fitted
        for part in refined[n]["why"].split("; ")
        if part
    )
    print("why not converged: " + ("; ".join(f"{r} {c}" for r, c in reasons.most_common()) or "-"))
    medians = ("reduced_chi2", "seconds", "arc_residual", "arc_snr", "exposure_time", "neighbours_masked")
    for column in (*medians, "pixels_fitted"):
        cells = [value(refined[n], column) for n in fitted]
        cells = [c for c in cells if math.isfinite(c)]
        print(f"median {column}: {statistics.median(cells):.4g}" if cells else f"median {column}: -")
    print("\nper lens: truth theta_E, network, refine, converged, why")
    for n in names:
        row = refined[n]
        print(
            f"{n} {truths[n]['theta_E']:.3f} {value(row, 'net_theta_E'):.3f} {value(row, 'theta_E'):.3f} "
            f"{row['converged']:5s} chi2 {value(row, 'reduced_chi2'):.3g} arc {value(row, 'arc_residual'):.0f} "
            f"S/N {value(row, 'arc_snr'):.3g} "
            f"{row['why'] or row['status'][:60]}"
        )


if __name__ == "__main__":
    main()
