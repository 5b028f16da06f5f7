"""Refine on lenses whose lens galaxy is a bulge + envelope elliptical: does the fit beat the network?

Lenses are drawn from the ``survey`` prior without its neighbours and field star (SIE + external shear,
a Sersic or real HUDF-galaxy source, lens light in two concentric Sersic components, a bulge and an
envelope, each absent in some lenses) and rendered by lenscnn's simulator with the quickstart instrument
(64 x 64 pixels of 0.08", Gaussian PSF, background and shot noise), test-split galaxies. Then:

* (a) the network: the shipped ``survey`` ensemble (``lenscnn.pretrained``, calibrated, 8 symmetries)
  predicts every image (or, with ``--starts-from offsets``, the truth plus Gaussian offsets of the given
  sigma, 0.04" in ``theta_E``, as a stand-in network);
* (b) ``lenscnn.modelling.fitting`` from those predictions as ``lenscnn-refine`` runs it by default: the prior's
  lens model with two lens-light components on the lens centre (``lens_light=2``) and a free sky level,
  ``fit.starts`` PSO starts drawn from the network's posterior, the best continued by a final PSO stage,
  the source seeded from the arcs.

Printed: per lens parameter the RMSE of the network and of the fit, the share of fits reported converged
(``lenscnn.modelling.settings.Convergence``), the median reduced chi^2 and the median wall time per image, and
the issue's targets (refine theta_E RMSE <= 0.5 x the network's; converged >= 90%).

    OMP_NUM_THREADS=1 python benchmarks/refine_ellipticals.py [--lenses 24] [--workers 2] [--starts 4]
        [--particles 60] [--iterations 60] [--final-iterations 150] [--lens-light 2] [--no-sky]
        [--starts-from ensemble|offsets]
    python benchmarks/refine_ellipticals.py --tiny   # seconds: 2 lenses, 2 starts of 4 x 2, 1 process (tests)
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import yaml

from lenscnn import pretrained
from lenscnn.errors import one_line
from lenscnn.modelling.fit_setup import FitSetup
from lenscnn.modelling.fitting import fit_lens_model
from lenscnn.modelling.kwargs import fitted_model, lens_model_kwargs, observation_kwargs, parameter_moments, seed_source
from lenscnn.modelling.records import FitResult
from lenscnn.modelling.settings import Budget, Convergence
from lenscnn.sim import Simulator
from lenscnn.sim.prior_config import lens_model_of

CONF = Path(pretrained.__file__).parents[1] / "conf"
#: Prior sections the benchmark drops: light that is no part of the lens galaxy.
NEIGHBOURS = ("neighbour", "neighbour_2", "star")
#: Lens parameters scored (the network's targets and the shear).
SCORED = ("theta_E", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2")
#: Stand-in network sigmas of ``--starts-from offsets`` (arcsec for theta_E and the centre).
OFFSET_SIGMA = {"theta_E": 0.04, "e1": 0.05, "e2": 0.05, "center_x": 0.02, "center_y": 0.02}


def fit_image(
    image: np.ndarray, setup: FitSetup, budget: Budget, seed: int, convergence: Convergence
) -> FitResult | str:
    """The fit of one image (in a worker process), or why it failed."""
    try:
        return fit_lens_model(image, setup, budget, None, False, seed, convergence=convergence)
    except Exception as exc:  # a failed fit is counted, not fatal
        return f"failed: {one_line(exc, with_type=True)}"


def load_conf(name: str) -> dict:
    with open(CONF / f"{name}.yaml") as f:
        return yaml.safe_load(f)


def survey_prior() -> dict:
    """The survey prior (its ``realistic`` defaults merged) without neighbours and the star."""
    base = load_conf("prior/realistic")
    spec = load_conf("prior/survey")
    spec.pop("defaults", None)
    merged = {**base, **spec}
    return {k: v for k, v in merged.items() if k not in NEIGHBOURS}


def rmse(estimates: list[float], truths: list[float]) -> float:
    return math.sqrt(float(np.mean((np.asarray(estimates) - np.asarray(truths)) ** 2)))


def network_predictions(
    images: np.ndarray, lenses: list[dict[str, float]], source: str, rng: np.random.Generator
) -> tuple[list[dict[str, float]], list[dict[str, float]], float]:
    """Means and sigmas per image, and the seconds per image they took."""
    start = time.perf_counter()
    if source == "offsets":
        means = [{k: p[k] + s * rng.standard_normal() for k, s in OFFSET_SIGMA.items()} for p in lenses]
        sigmas = [dict(OFFSET_SIGMA) for _ in lenses]
        return means, sigmas, 0.0
    ensemble = pretrained.load()
    with torch.no_grad():
        prediction = ensemble.predict(torch.tensor(images[:, None], dtype=torch.float32))
    names = list(ensemble.target_names)
    mean, sigma = prediction.mean.double().numpy(), prediction.sigma.double().numpy()
    means = [dict(zip(names, row.tolist(), strict=True)) for row in mean]
    sigmas = [dict(zip(names, row.tolist(), strict=True)) for row in sigma]
    return means, sigmas, (time.perf_counter() - start) / len(lenses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lenses", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--starts", type=int, default=4, help="PSO starts per image (fit.starts)")
    parser.add_argument("--particles", type=int, default=60, help="PSO particles per start (fit.n_particles)")
    parser.add_argument("--iterations", type=int, default=60, help="PSO iterations per start (fit.n_iterations)")
    parser.add_argument(
        "--light-iterations", type=int, default=60, help="PSO iterations of the lens light alone (fit.light_iterations)"
    )
    parser.add_argument(
        "--final-iterations", type=int, default=150, help="PSO iterations of the kept start (fit.final_iterations)"
    )
    parser.add_argument("--lens-light", type=int, default=2, help="lens-light components fitted (lens_light)")
    parser.add_argument("--no-sky", action="store_true", help="fit no sky level")
    parser.add_argument("--starts-from", choices=("ensemble", "offsets"), default="ensemble")
    parser.add_argument(
        "--tiny", action="store_true", help="the same code path in seconds: 2 lenses, 2 starts of 4 x 2, 1 process"
    )
    args = parser.parse_args()
    if args.tiny:
        args.lenses, args.workers, args.starts = 2, 1, 2
        args.particles, args.iterations, args.light_iterations, args.final_iterations = 4, 2, 2, 2
    torch.set_num_threads(max(1, args.workers))

    instrument_cfg = load_conf("instrument/quickstart")
    prior_spec = survey_prior()
    simulator = Simulator.from_config({"instrument": instrument_cfg, "prior": prior_spec, "dtype": "float64"})
    images_t, params = simulator.sample(args.lenses, torch.Generator().manual_seed(args.seed), split="test")
    images = images_t[:, 0].numpy()
    lenses = [{k: float(v[i]) for k, v in params.items()} for i in range(args.lenses)]
    means, sigmas, network_seconds = network_predictions(
        images, lenses, args.starts_from, np.random.default_rng(args.seed)
    )

    instrument = simulator.instrument
    observation = observation_kwargs(instrument)
    moments = parameter_moments(prior_spec)
    model = fitted_model(lens_model_of(prior_spec), shear=True, lens_light=args.lens_light)
    budget = Budget(
        n_particles=args.particles,
        n_iterations=args.iterations,
        starts=args.starts,
        light_iterations=args.light_iterations,
        final_iterations=args.final_iterations,
    )
    convergence = Convergence()
    tasks = []
    for i, image in enumerate(images):
        setup = lens_model_kwargs(means[i], sigmas[i], observation, moments, model, sky=not args.no_sky)
        setup = seed_source(setup, image, instrument.background_rms, instrument.pixel_scale)
        tasks.append((image, FitSetup.from_kwargs(setup), budget, args.seed + i, convergence))
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        outcomes = list(pool.map(fit_image, *zip(*tasks, strict=True)))
    wall = time.perf_counter() - start

    ok = [k for k, o in enumerate(outcomes) if isinstance(o, FitResult)]
    print(
        f"{args.lenses} survey lenses without neighbours (SIE + shear, Sersic/HUDF sources, bulge + envelope), "
        f"quickstart instrument; network: {args.starts_from}; fit: {args.starts} starts x {args.particles} "
        f"particles x {args.iterations} iterations after {args.light_iterations} of the lens light, "
        f"+ {args.final_iterations} for the kept start, "
        f"lens_light={args.lens_light}, sky={not args.no_sky}, "
        f"{args.workers} processes, {wall:.0f} s in all"
    )
    scored = [n for n in SCORED if all(n in m for m in means) or n in ("gamma1", "gamma2")]
    header = f"{'':14s}" + "".join(f"{n + ' RMSE':>15s}" for n in scored)
    header += f"{'converged':>11s}{'median chi2':>13s}{'median s':>10s}"
    print(header)
    truth = {n: [p.get(n, 0.0) for p in lenses] for n in scored}
    net = {n: [m.get(n, 0.0) for m in means] for n in scored}  # no prediction: the shear at 0
    # a failed fit counts as the network's estimate
    fit = {n: [outcomes[k].lens[n] if k in ok else net[n][k] for k in range(args.lenses)] for n in scored}
    line = "".join(f"{rmse(net[n], truth[n]):15.5f}" for n in scored)
    print(f"{'network':14s}{line}{'-':>11s}{'-':>13s}{network_seconds:10.3f}")
    converged = sum(outcomes[k].converged for k in ok) / args.lenses
    chi2 = statistics.median(outcomes[k].reduced_chi2 for k in ok) if ok else math.nan
    seconds = statistics.median(outcomes[k].seconds for k in ok) if ok else math.nan
    line = "".join(f"{rmse(fit[n], truth[n]):15.5f}" for n in scored)
    print(f"{'refine':14s}{line}{converged:11.2f}{chi2:13.3f}{seconds:10.1f}")
    ratio = rmse(fit["theta_E"], truth["theta_E"]) / rmse(net["theta_E"], truth["theta_E"])
    failed = args.lenses - len(ok)
    print(
        f"theta_E RMSE refine / network: {ratio:.3f} (target <= 0.5); converged {converged:.0%} (target >= 90%); "
        f"failed fits: {failed}"
    )
    tolerance = [convergence.tolerance(sigmas[k].get("theta_E")) for k in range(args.lenses)]
    parts = {
        "(a) best starts agree": [outcomes[k].agree for k in ok],
        "(b) theta_E settled": [outcomes[k].theta_change <= tolerance[k] for k in ok],
        "(b) chi^2 settled": [outcomes[k].chi2_change <= convergence.plateau for k in ok],
        "(c) chi^2 not absurd": [outcomes[k].reduced_chi2 <= convergence.max_chi2 for k in ok],
    }
    print("criterion parts met: " + "; ".join(f"{name} {sum(v)}/{len(v)}" for name, v in parts.items()))
    print(
        "\nper lens: truth theta_E, network, refine, |refine - truth|, |network - truth| / network sigma, "
        "reduced chi^2, starts agreeing, theta_E change, chi^2 change, converged"
    )
    for k in range(args.lenses):
        o = outcomes[k]
        pull = abs(net["theta_E"][k] - truth["theta_E"][k]) / sigmas[k].get("theta_E", math.nan)
        if not isinstance(o, FitResult):
            print(f"{k:3d} {truth['theta_E'][k]:.3f} {net['theta_E'][k]:.3f} {o}")
            continue
        error = abs(o.lens["theta_E"] - truth["theta_E"][k])
        print(
            f"{k:3d} {truth['theta_E'][k]:.3f} {net['theta_E'][k]:.3f} {o.lens['theta_E']:.3f} {error:.4f} "
            f"{pull:5.2f} {o.reduced_chi2:7.3f} {o.starts_agreeing} {o.theta_change:.4f} "
            f"{o.chi2_change:.4f} {o.converged}"
        )


if __name__ == "__main__":
    main()
