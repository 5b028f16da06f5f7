"""lenscnn-population: the importance-weighted likelihood equals the analytic marginal likelihood of Gaussian
measurements; the hierarchical posterior recovers a population that averaging the per-lens answers gets wrong
(the training prior pulls each answer); the app writes its samples, summary, per-lens table and plots from
predict's predictions.csv and model.json, and refuses what it cannot do in one line."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from scipy.stats import norm

from lenscnn.errors import UserError
from lenscnn.io.predictions import write_table
from lenscnn.population import lenses as lenses_module
from lenscnn.population.hierarchy import Hierarchy, InterimPrior, TargetPopulation, sample_hyperparameters
from tests.helpers import compose_run, load_conf, run_cli

THETA_E = {"dist": "normal", "mean": [0.6, 1.9], "scatter": [0.01, 0.6]}


def test_the_importance_weighted_likelihood_is_the_analytic_marginal_likelihood():
    """Gaussian measurements (sigma_i) of theta ~ N(m, s) under a flat training prior on [0.5, 2]: the posterior
    of each lens is N(x_i, sigma_i), and p(x_i | m, s) = N(x_i; m, sqrt(s^2 + sigma_i^2)) / Z(m, s), the
    population normalised over the support (Z: its mass in [0.5, 2])."""
    rng = np.random.default_rng(4)
    n = 200
    sigma = rng.uniform(0.05, 0.15, n)
    observed = rng.normal(1.2, 0.15, n) + sigma * rng.standard_normal(n)
    interim = InterimPrior.from_draws(rng.uniform(0.5, 2.0, 1_000_000))
    population = TargetPopulation.from_config("theta_E", THETA_E)
    hierarchy = Hierarchy.build([population], {"theta_E": observed}, {"theta_E": sigma}, {"theta_E": interim}, 4096)
    omega = np.array([[1.2, 0.15], [1.1, 0.25], [1.3, 0.1]])
    mass = [norm.cdf(2.0, m, s) - norm.cdf(0.5, m, s) for m, s in omega]
    analytic = [
        norm.logpdf(observed, m, np.hypot(s, sigma)).sum() + n * np.log(1.5) - n * np.log(z)
        for (m, s), z in zip(omega, mass, strict=True)
    ]
    assert hierarchy.log_likelihood(omega) == pytest.approx(analytic, abs=1.0)
    assert np.argmax(hierarchy.log_likelihood(omega)) == 0


def test_the_hierarchy_recovers_a_population_that_averaging_gets_wrong():
    """An informative training prior N(1.25, 0.15) and weak data (sigma 0.2): each posterior is pulled toward
    1.25 and narrowed, so the per-lens answers centre near the prior and scatter far less than the population's
    0.15. The hierarchical posterior finds mean 1.1 and scatter 0.15 within 3 sigma; the average's are off by
    more than 3 sigma."""
    rng = np.random.default_rng(7)
    n, noise, prior_mean, prior_std = 800, 0.2, 1.25, 0.15
    truth = rng.normal(1.1, 0.15, n)
    observed = truth + noise * rng.standard_normal(n)
    precision = 1 / noise**2 + 1 / prior_std**2
    means, sigmas = (observed / noise**2 + prior_mean / prior_std**2) / precision, np.full(n, precision**-0.5)
    draws = rng.normal(prior_mean, prior_std, 2_000_000)
    interim = InterimPrior.from_draws(draws[np.abs(draws - prior_mean) < 4 * prior_std])
    population = TargetPopulation.from_config("theta_E", {"dist": "normal", "mean": [0.7, 1.8], "scatter": [0.01, 0.5]})
    hierarchy = Hierarchy.build([population], {"theta_E": means}, {"theta_E": sigmas}, {"theta_E": interim}, 128)
    chain = sample_hyperparameters(hierarchy, walkers=16, steps=600, burn=200, seed=1)
    (mean, scatter), (mean_err, scatter_err) = chain.mean(axis=0), chain.std(axis=0)
    assert abs(mean - 1.1) < 3 * mean_err + 0.01 and abs(scatter - 0.15) < 3 * scatter_err + 0.01
    assert abs(means.std() - 0.15) > 3 * scatter_err and abs(means.mean() - 1.1) > 3 * mean_err  # averaging
    shrunk = hierarchy.shrunk(np.median(chain, axis=0))["theta_E"]
    assert np.abs(shrunk - truth).mean() < np.abs(means - truth).mean()  # the population sharpens each lens


def write_predictions(directory, prior, n=150, fingerprint="abc", seed=0, targets=("theta_E",)):
    """A predict run directory: predictions.csv of ``n`` lenses (theta_E ~ N(1.2, 0.15) measured with sigma
    0.1) and the model.json of a model trained on ``prior``."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    truth = rng.normal(1.2, 0.15, n)
    columns = ["image", "status", *(c for t in targets for c in (t, f"{t}_sigma")), "flags"]
    rows = [
        [f"lens_{k}.fits", "ok", *(v for _ in targets for v in (truth[k] + rng.normal(0, 0.1), 0.1)), ""]
        for k in range(n)
    ]
    rows.append(["bad.fits", "failed: unreadable", *([""] * 2 * len(targets)), ""])
    write_table(directory / "predictions.csv", columns, rows)
    record = {
        "members": ["m.ckpt"],
        "fingerprint": fingerprint,
        "targets": list(targets),
        "simulator": {"prior": prior},
    }
    (directory / "model.json").write_text(json.dumps(record))
    return directory


@pytest.fixture
def few_draws(monkeypatch):
    monkeypatch.setattr(lenses_module, "INTERIM_DRAWS", 200_000)


FAST = ["sampler.walkers=8", "sampler.steps=150", "sampler.burn=50", "samples_per_lens=64"]


def test_population_writes_samples_summary_lenses_and_plots(tmp_path, few_draws):
    from lenscnn.cli.population import run

    predicted = write_predictions(tmp_path / "predicted", load_conf("prior", "quickstart"))
    out = tmp_path / "run"
    result = run(compose_run("population", out, [f"predictions={predicted}", *FAST]))
    with open(out / "samples.csv", newline="") as f:
        samples = list(csv.DictReader(f))
    assert list(samples[0]) == ["theta_E.mean", "theta_E.scatter"] and len(samples) == 8 * 100
    with open(out / "summary.csv", newline="") as f:
        summary = {row["hyperparameter"]: row for row in csv.DictReader(f)}
    assert 1.1 < float(summary["theta_E.mean"]["median"]) < 1.3
    mean = {k: float(v) for k, v in summary["theta_E.mean"].items() if k != "hyperparameter"}
    assert mean["p16"] < mean["median"] < mean["p84"] and abs(mean["naive_average"] - mean["median"]) < 0.05
    with open(out / "lenses.csv", newline="") as f:
        lenses = list(csv.DictReader(f))
    assert len(lenses) == 150  # the failed row left out
    assert {"theta_E", "theta_E_sigma", "theta_E_population", "effective_samples"} <= set(lenses[0])
    for plot in ("corner.png", "shrinkage.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / plot).stat().st_size > 10_000
    assert "theta_E.mean" in (out / "report.md").read_text() and result.samples.shape == (800, 2)


def test_refusals_are_one_line_and_name_the_fix(tmp_path, few_draws):
    from lenscnn.cli.population import run

    prior = load_conf("prior", "quickstart")
    one = write_predictions(tmp_path / "one", prior)
    other = write_predictions(tmp_path / "other", prior, fingerprint="xyz")
    cases = [
        ([f"predictions=[{one},{other}]"], "were predicted by different models or training priors"),
        ([f"predictions={one}", "population=epl"], "no column 'gamma'"),
        ([f"predictions={one}", "population.theta_E.mean=[0.2,1.5]"], "reaches outside the training prior's support"),
        ([f"predictions={one}", "population.theta_E.dist=lognormal"], "choose one of ['normal', 'truncated_normal']"),
        ([f"predictions={one}", "sampler.burn=500"], "sampler.burn=500: give an integer in [0, sampler.steps)"),
        ([], "no predictions: give predictions="),
    ]
    for args, message in cases:
        with pytest.raises(UserError, match=re.escape(message)):
            run(compose_run("population", tmp_path / "refused", [*FAST, *args]))
    (one / "model.json").unlink()
    result = run_cli("population", [f"predictions={one}", *FAST, f"hydra.run.dir={tmp_path / 'cli'}"], timeout=120)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: {one / 'predictions.csv'}: no model.json beside it, so the training prior its posteriors carry is "
        "unknown; predict again with lenscnn-predict, which writes it"
    ]


def test_a_lens_outside_the_training_support_is_left_out_not_fatal():
    """A posterior wholly outside the training support (theta_E 3.0 +- 0.01 under a prior on [0.5, 2]) has no
    sample the population can weigh: it is left out, and the likelihood of the others stays finite."""
    interim = InterimPrior.from_draws(np.random.default_rng(0).uniform(0.5, 2.0, 200_000))
    population = TargetPopulation.from_config("theta_E", THETA_E)
    means, sigmas = np.array([1.1, 1.3, 3.0]), np.array([0.1, 0.1, 0.01])
    hierarchy = Hierarchy.build([population], {"theta_E": means}, {"theta_E": sigmas}, {"theta_E": interim}, 64)
    assert hierarchy.kept.tolist() == [True, True, False]
    assert np.isfinite(hierarchy.log_likelihood(np.array([[1.2, 0.15]]))).all()
