"""What the network buys a lenstronomy fit: accuracy and wall time of the network alone, of the fit
started from the network, and of the same fit started from the prior mean.

Lenses are rendered by lenstronomy itself (``ImageModel``: SIE, elliptical Sersic source, the
quickstart instrument's pixel grid, PSF kernel and noise), with parameters from the quickstart
prior, so neither the network nor the fit sees lenscnn's own renderer. In the same run:

* (a) the shipped pretrained ensemble alone (mean and sigma per lens);
* (b) ``lenscnn.modelling.fitting`` started at the network's means, the swarm spread by its sigmas, the
  source started where the network's lens model maps the arcs (``lenscnn.modelling.kwargs.seed_source``);
* (c) the same fit, same budget, started at the prior mean with the prior's standard deviations
  as step sizes (what a modeller without the network would do).

A fit has converged when its reduced chi^2 is within 10% of the truth's (the true parameters'
reduced chi^2 on the same noisy image). Its time to converge is the wall time up to the first PSO
iteration that met that bound. Printed: theta_E RMSE (and the other lens parameters), the share
of converged fits, the median time to converge and the ratios the issue asks for.

    python benchmarks/refine.py [--lenses 24] [--budgets 30x50,40x60,60x100] [--workers 2]
    python benchmarks/refine.py --tiny   # seconds: 2 lenses, one 4 x 3 swarm, 1 process, 1 thread (tests)
"""

from __future__ import annotations

import argparse
import math
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import yaml

from lenscnn import pretrained
from lenscnn.modelling.fit_setup import FitSetup
from lenscnn.modelling.fitting import fit_lens_model
from lenscnn.modelling.kwargs import (
    lens_model_kwargs,
    observation_kwargs,
    parameter_moments,
    psf_kernel,
    seed_source,
)
from lenscnn.modelling.lenstronomy_adapter import lenstronomy_image, reduced_chi2
from lenscnn.modelling.settings import Budget
from lenscnn.params import LENS
from lenscnn.sim import Instrument, Prior

CONF = Path(pretrained.__file__).parents[1] / "conf"
SOURCE_KEYS = ("amp", "R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y")
TOLERANCE = 1.10  # converged: reduced chi^2 <= 1.1 x the truth's


def load_conf(name: str) -> dict:
    with open(CONF / f"{name}.yaml") as f:
        return yaml.safe_load(f)


def render_with_lenstronomy(params: dict[str, float], instrument: Instrument, rng: np.random.Generator) -> np.ndarray:
    """A noisy image of one lens from lenstronomy's ``ImageModel`` (Gaussian background + shot noise)."""
    model = {"lens_model_list": ["SIE"], "source_light_model_list": ["SERSIC_ELLIPSE"]}
    source = {k: params[f"source_{k}"] for k in SOURCE_KEYS}
    kwargs = {"kwargs_lens": [{k: params[k] for k in LENS}], "kwargs_source": [source]}
    image = lenstronomy_image({**observation_kwargs(instrument), "kwargs_model": model}, kwargs)
    sigma = np.sqrt(instrument.background_rms**2 + np.abs(image) / instrument.exposure_time)
    return image + rng.normal(size=image.shape) * sigma


def fit_one(args: tuple) -> dict:
    image, setup, budget, truth_kwargs, seed = args
    truth_chi2, _, _ = reduced_chi2(setup.kwargs, image, None, truth_kwargs)
    start = time.perf_counter()
    try:
        result = fit_lens_model(image, setup, budget, seed=seed)
    except Exception as exc:  # a failed fit counts as not converged
        return {
            "failed": f"{type(exc).__name__}: {exc}",
            "truth_chi2": truth_chi2,
            "seconds": time.perf_counter() - start,
        }
    bound = TOLERANCE * truth_chi2
    first = next((i for i, chi2 in enumerate(result.pso_chi2) if chi2 <= bound), None)
    converged = result.reduced_chi2 <= bound
    return {
        "lens": result.lens,
        "chi2": result.reduced_chi2,
        "truth_chi2": truth_chi2,
        "converged": converged,
        "seconds": result.seconds,
        "seconds_to_converge": None
        if first is None or not converged
        else result.seconds * (first + 1) / max(1, len(result.pso_chi2)),
    }


def rmse(estimates: list[float], truths: list[float]) -> float:
    return math.sqrt(float(np.mean((np.asarray(estimates) - np.asarray(truths)) ** 2)))


def parse_budgets(text: str) -> list[Budget]:
    """``"30x50,60x100"``: PSO particles x iterations per budget (one start, no final stage: a single swarm)."""
    return [
        Budget(n_particles=int(p), n_iterations=int(i), starts=1, final_iterations=0)
        for p, i in (b.split("x") for b in text.split(","))
    ]


def report(name: str, rows: list[dict], truth: dict[str, list[float]], prior_mean: dict[str, float]) -> dict:
    """Print one row of the table; return its summary (a failed fit counts as the prior mean, not converged)."""
    est = {n: [r["lens"][n] if "lens" in r else prior_mean[n] for r in rows] for n in LENS}
    converged = [r for r in rows if r.get("converged")]
    to_converge = [r["seconds_to_converge"] for r in converged if r["seconds_to_converge"] is not None]
    summary = {
        "theta_E": rmse(est["theta_E"], truth["theta_E"]),
        "converged": len(converged) / len(rows),
        "seconds": float(np.median([r["seconds"] for r in rows])),
        "to_converge": float(np.median(to_converge)) if to_converge else math.inf,
        "failed": sum("lens" not in r for r in rows),
    }
    s = summary
    print(
        f"{name:22s}"
        + "".join(f"{rmse(est[n], truth[n]):16.5f}" for n in LENS)
        + f"{s['converged']:11.2f}{s['seconds']:10.2f}{s['to_converge']:11.2f}"
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lenses", type=int, default=24)
    parser.add_argument("--budgets", default="30x50,40x60,60x100", help="PSO particles x iterations, comma-separated")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="the same code path in seconds: 2 lenses, one 4 x 3 swarm, 1 process, 1 thread",
    )
    args = parser.parse_args()
    if args.tiny:
        args.lenses, args.budgets, args.workers = 2, "4x3", 1
    torch.set_num_threads(1 if args.tiny else 2)

    instrument = Instrument.from_config(load_conf("instrument/quickstart"))
    prior_spec = load_conf("prior/quickstart")
    prior = Prior(prior_spec)
    drawn = prior.sample(args.lenses, torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    lenses = [{k: float(v[i]) for k, v in drawn.items()} for i in range(args.lenses)]
    rng = np.random.default_rng(args.seed)
    images = [render_with_lenstronomy(p, instrument, rng) for p in lenses]

    # (a) the network alone
    ensemble = pretrained.load()
    start = time.perf_counter()
    prediction = ensemble.predict(torch.tensor(np.stack(images)[:, None], dtype=torch.float32))
    network_seconds = (time.perf_counter() - start) / args.lenses
    names = list(ensemble.target_names)
    mean, sigma = prediction.mean.double().numpy(), prediction.sigma.double().numpy()
    truth = {n: [p[n] for p in lenses] for n in LENS}
    network_theta = rmse(list(mean[:, names.index("theta_E")]), truth["theta_E"])

    observation = observation_kwargs(instrument, psf_kernel(instrument))
    light = parameter_moments(prior_spec)
    moments = prior.sample(20_000, torch.Generator().manual_seed(0), dtype=torch.float64)
    prior_mean = {n: float(moments[n].mean()) for n in LENS}
    prior_std = {n: float(moments[n].std()) for n in LENS}
    starts = {"network-seeded fit": [], "prior-started fit": []}
    truths = []
    for i, p in enumerate(lenses):
        source = {k: p[f"source_{k}"] for k in SOURCE_KEYS}
        truths.append({"kwargs_lens": [{n: p[n] for n in LENS}], "kwargs_source": [source]})
        values = dict(zip(names, mean[i].tolist(), strict=True))
        sigmas = dict(zip(names, sigma[i].tolist(), strict=True))
        seeded = lens_model_kwargs(values, sigmas, observation, light, prior.lens_model)
        seeded = seed_source(seeded, images[i], instrument.background_rms, instrument.pixel_scale)
        starts["network-seeded fit"].append(FitSetup.from_kwargs(seeded))
        cold = lens_model_kwargs(prior_mean, prior_std, observation, light, prior.lens_model)
        starts["prior-started fit"].append(FitSetup.from_kwargs(cold))

    print(f"{args.lenses} lenses rendered by lenstronomy (quickstart instrument and prior), {args.workers} processes")
    header = "".join(f"{n + ' RMSE':>16s}" for n in LENS) + f"{'converged':>11s}{'median s':>10s}{'s to conv.':>11s}"
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        for budget in parse_budgets(args.budgets):
            print(f"\nPSO {budget.n_particles} particles x {budget.n_iterations} iterations per fit")
            print(f"{'':22s}{header}")
            line = "".join(f"{rmse(list(mean[:, names.index(n)]), truth[n]):16.5f}" for n in LENS)
            print(f"{'network alone':22s}{line}{'-':>11s}{network_seconds:10.4f}{'-':>11s}")
            summary = {}
            for name, setups in starts.items():
                work = [(images[i], setups[i], budget, truths[i], args.seed + i) for i in range(args.lenses)]
                summary[name] = report(name, list(pool.map(fit_one, work)), truth, prior_mean)
            seeded, cold = summary["network-seeded fit"], summary["prior-started fit"]
            often = seeded["converged"] / cold["converged"] if cold["converged"] else math.inf
            faster = cold["to_converge"] / seeded["to_converge"] if math.isfinite(seeded["to_converge"]) else 0.0
            print(
                f"theta_E RMSE seeded fit / network: {seeded['theta_E'] / network_theta:.3f} (target <= 0.5); "
                f"converged {often:.2f}x as often; converged {faster:.2f}x faster (target: 3x either); "
                f"failed fits {seeded['failed']} / {cold['failed']}"
            )


if __name__ == "__main__":
    main()
