"""Population recovery: lenscnn-population's hierarchical inference against averaging the per-lens answers.

For each of ``--populations`` independent simulated surveys, ``--lenses`` lenses are drawn from a population
that differs from the network's training prior (by default theta_E ~ N(1.2", 0.15") and, for a network that
predicts the EPL slope, gamma ~ N(2.08, 0.05)), rendered by lenscnn's simulator with the model's own instrument
and observation (the shipped survey ensemble: the survey nuisances), predicted by the model (one checkpoint or
an ensemble), and the population's hyperparameters inferred (:mod:`lenscnn.population.hierarchy`, the model's
training prior divided out). Printed per hyperparameter: how often the true value lies inside the 68% interval
(calibrated: ~0.68), the mean and RMS error of the posterior median, and those of the naive average (the mean
and standard deviation of the per-lens answers), with their ratio; and the time of one inference.

    python benchmarks/population_recovery.py --ckpt outputs/epl_pop/run               # theta_E and gamma
    python benchmarks/population_recovery.py                                           # the shipped survey model
    python benchmarks/population_recovery.py --tiny                                    # seconds (tests): 2 x 30
                                                                                       # lenses, 10^5 prior draws
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from lenscnn.models.ensemble import Ensemble
from lenscnn.population.hierarchy import Hierarchy, TargetPopulation, sample_hyperparameters
from lenscnn.population.lenses import interim_priors
from lenscnn.sim.lens_streams import draw_lenses
from lenscnn.sim.simulator import Simulator

#: The true populations (normal, truncated to the training prior's range) and the hyperpriors inferred with.
TRUTH = {"theta_E": (1.2, 0.15), "gamma": (2.08, 0.05)}
HYPERPRIORS = {
    "theta_E": {"dist": "normal", "mean": [0.6, 1.9], "scatter": [0.01, 0.6]},
    "gamma": {"dist": "truncated_normal", "mean": [1.75, 2.25], "scatter": [0.005, 0.2], "low": 1.7, "high": 2.3},
}


def load_model(ckpt: str | None) -> Ensemble:
    """The checkpoint (file or run directory) or, without one, the shipped pretrained ensemble."""
    from lenscnn import pretrained
    from lenscnn.models.checkpoint import resolve_checkpoint

    if ckpt is None:
        return Ensemble.from_checkpoints(pretrained.checkpoints(), pretrained.calibration_file())
    return Ensemble.from_checkpoints([resolve_checkpoint(ckpt)])


def population_prior(prior: dict, targets: list[str]) -> dict:
    """The model's prior with each target drawn from its true population, within the training range."""
    out = copy.deepcopy(prior)
    for target in targets:
        spec = out["lens"][target]
        mean, std = TRUTH[target]
        out["lens"][target] = {"dist": "normal", "mean": mean, "std": std, "low": spec["low"], "high": spec["high"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=None, help="checkpoint or run directory (default: the shipped ensemble)")
    parser.add_argument("--populations", type=int, default=50)
    parser.add_argument("--lenses", type=int, default=200)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--tiny", action="store_true", help="2 populations of 30 lenses, a short chain (tests)")
    args = parser.parse_args()
    if args.tiny:
        args.populations, args.lenses, args.steps = 2, 30, 60
    torch.set_num_threads(2)
    ensemble = load_model(args.ckpt)
    targets = [t for t in TRUTH if t in ensemble.target_names]
    config = {**ensemble.simulator_config, "compile": False}
    config["prior"] = population_prior(config["prior"], targets)
    simulator = Simulator.from_config(config)
    interim = interim_priors({"simulator": ensemble.simulator_config}, targets, 100_000 if args.tiny else None)
    populations = [TargetPopulation.from_config(t, HYPERPRIORS[t]) for t in targets]
    names = [n for p in populations for n in p.hyperparameters]
    truth = np.array([v for t in targets for v in TRUTH[t]])
    inside, median_error, naive_error, seconds = [], [], [], []
    index = [ensemble.target_names.index(t) for t in targets]
    for p in range(args.populations):
        params, seeds = draw_lenses(
            simulator.prior, (1000 + p,), 0, args.lenses, "test", observation=simulator.observation
        )
        with torch.no_grad():
            images = simulator.render(params, noise_seeds=seeds)
            prediction = ensemble.predict(images, symmetries=ensemble.symmetries())
        mean, sigma = prediction.mean.numpy()[:, index], prediction.sigma.numpy()[:, index]
        begin = time.perf_counter()
        hierarchy = Hierarchy.build(
            populations,
            {t: mean[:, k] for k, t in enumerate(targets)},
            {t: sigma[:, k] for k, t in enumerate(targets)},
            interim,
            128,
            seed=p,
        )
        chain = sample_hyperparameters(hierarchy, 32, args.steps, args.steps // 3, seed=p)
        seconds.append(time.perf_counter() - begin)
        low, mid, high = np.percentile(chain, [16, 50, 84], axis=0)
        inside.append((low <= truth) & (truth <= high))
        median_error.append(mid - truth)
        naive = np.array([v for k in range(len(targets)) for v in (mean[:, k].mean(), mean[:, k].std(ddof=1))])
        naive_error.append(naive - truth)
    inside, median_error, naive_error = np.array(inside), np.array(median_error), np.array(naive_error)
    print(
        f"{args.populations} populations of {args.lenses} lenses; model {ensemble.fingerprint()[:12]} "
        f"(targets {ensemble.target_names}); observation: {sorted(config.get('observation') or {}) or 'none'}"
    )
    header = ["hyperparameter", "truth", "in 68%", "bias", "rmse", "naive bias", "naive rmse", "rmse ratio"]
    print(" ".join(f"{h:>15s}" for h in header))
    for j, name in enumerate(names):
        rmse, naive_rmse = np.sqrt((median_error[:, j] ** 2).mean()), np.sqrt((naive_error[:, j] ** 2).mean())
        cells = [truth[j], inside[:, j].mean(), median_error[:, j].mean(), rmse]
        cells += [naive_error[:, j].mean(), naive_rmse, naive_rmse / rmse]
        print(f"{name:>15s} " + " ".join(f"{c:15.4f}" for c in cells))
    print(f"inference: median {np.median(seconds):.1f} s per population of {args.lenses} lenses ({args.steps} steps)")


if __name__ == "__main__":
    main()
