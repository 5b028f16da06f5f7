"""What ``lenscnn-population`` writes into its run directory: the hyperparameter samples, their summary
beside the naive average of the per-lens answers, each lens's estimate before and after the population
is learned, a corner plot and a shrinkage plot."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from lenscnn.io.atomic import write_text
from lenscnn.io.predictions import write_table
from lenscnn.metrics.tables import markdown_table
from lenscnn.population.hierarchy import Hierarchy
from lenscnn.population.lenses import Lenses

#: Lenses drawn in the shrinkage plot (evenly spaced in their network estimate when there are more).
SHRINKAGE_LENSES = 120


@dataclass(frozen=True)
class PopulationResult:
    """The hyperparameter posterior ``samples`` (S, D) of ``hierarchy``'s hyperparameters for ``lenses``;
    ``shrunk``: each lens's posterior mean given the median hyperparameters; ``effective``: per lens the
    importance sampling's effective sample size there (each computed once)."""

    lenses: Lenses
    hierarchy: Hierarchy
    samples: np.ndarray
    seconds: float

    @cached_property
    def median(self) -> np.ndarray:
        return np.median(self.samples, axis=0)

    @cached_property
    def shrunk(self) -> dict[str, np.ndarray]:
        return self.hierarchy.shrunk(self.median)

    @cached_property
    def effective(self) -> np.ndarray:
        return self.hierarchy.effective_samples(self.median)

    def naive(self, name: str) -> float:
        """The hyperparameter ``name`` (``<target>.mean`` or ``.scatter``) estimated by averaging the per-lens
        answers: the mean of the network means, or their standard deviation."""
        target, kind = name.rsplit(".", 1)
        means = self.lenses.means[target][self.hierarchy.kept]
        return float(means.mean() if kind == "mean" else means.std(ddof=1))

    def summary_rows(self) -> list[list[Any]]:
        """Per hyperparameter: the posterior median, its 16th and 84th percentiles, and the naive average."""
        low, mid, high = np.percentile(self.samples, [16, 50, 84], axis=0)
        return [
            [name, float(mid[j]), float(low[j]), float(high[j]), self.naive(name)]
            for j, name in enumerate(self.hierarchy.names)
        ]


SUMMARY_COLUMNS = ["hyperparameter", "median", "p16", "p84", "naive_average"]


def write_outputs(run_dir: Path, result: PopulationResult, plots: bool) -> list[Path]:
    """``samples.csv``, ``summary.csv``, ``lenses.csv``, ``report.md`` (and ``corner.png``, ``shrinkage.png``
    with ``plots``) in ``run_dir``, each written atomically; returns their paths."""
    run_dir.mkdir(parents=True, exist_ok=True)
    names = result.hierarchy.names
    out = [run_dir / "samples.csv", run_dir / "summary.csv", run_dir / "lenses.csv", run_dir / "report.md"]
    write_table(out[0], names, result.samples.tolist())
    write_table(out[1], SUMMARY_COLUMNS, result.summary_rows())
    targets = [p.target for p in result.hierarchy.populations]
    shrunk, effective = result.shrunk, result.effective
    lens_columns = ["image", *(f"{t}{s}" for t in targets for s in ("", "_sigma", "_population")), "effective_samples"]
    means, sigmas, kept = result.lenses.means, result.lenses.sigmas, result.hierarchy.kept
    position = np.cumsum(kept) - 1  # a kept lens's row in the hierarchy's arrays
    rows = []
    for i, label in enumerate(result.lenses.labels):
        k = position[i] if kept[i] else None  # a lens left out (no sample where the population lives): blank
        given = [None if k is None else shrunk[t][k] for t in targets]
        cells = [v for j, t in enumerate(targets) for v in (means[t][i], sigmas[t][i], given[j])]
        rows.append([label, *cells, None if k is None else effective[k]])
    write_table(out[2], lens_columns, rows)
    write_text(out[3], report(result))
    if plots:
        out += [corner_figure(run_dir / "corner.png", result), shrinkage_figure(run_dir / "shrinkage.png", result)]
    return out


def report(result: PopulationResult) -> str:
    """``report.md``: the population model, the hyperparameters against the naive averages, the sampler."""
    hierarchy = result.hierarchy
    rows = [[f"`{r[0]}`", f"{r[1]:.4g}", f"{r[2]:.4g} - {r[3]:.4g}", f"{r[4]:.4g}"] for r in result.summary_rows()]
    lines = [
        "# Population inference",
        "",
        f"- lenses: {len(result.lenses)} ({int((~hierarchy.kept).sum())} left out: no posterior sample where the "
        "population lives); model: {result.lenses.model.get('fingerprint', '?')[:12]} "
        f"({', '.join(result.lenses.model.get('members', []))})",
        "- population: "
        + "; ".join(
            f"{p.target} ~ {p.dist} (mean in {list(p.mean_range)}, scatter in {list(p.scatter_range)})"
            for p in hierarchy.populations
        ),
        "- training (interim) prior divided out by importance weighting: "
        f"{hierarchy.samples_per_lens} posterior samples per lens; effective samples per lens at the median: "
        f"median {np.median(result.effective):.0f}, lowest {np.min(result.effective):.1f}",
        f"- posterior samples: {len(result.samples)} (emcee); {result.seconds:.1f} s",
        "",
        markdown_table(["hyperparameter", "median", "68% interval", "average of per-lens answers"], rows),
        "",
        "The average of the per-lens answers is biased wherever the data are weak: each answer carries the "
        "training prior, which pulls it toward the prior's centre and shrinks their scatter.",
    ]
    return "\n".join(lines) + "\n"


def corner_figure(path: Path, result: PopulationResult) -> Path:
    """``corner.png``: the hyperparameters' posterior (:mod:`corner`), the naive averages marked."""
    import corner

    from lenscnn.plots import save_figure

    names = result.hierarchy.names
    figure = corner.corner(
        result.samples,
        labels=names,
        quantiles=[0.16, 0.5, 0.84],
        show_titles=True,
        truths=[result.naive(n) for n in names],
        truth_color="tab:red",
    )
    figure.suptitle("population hyperparameters (red: average of the per-lens answers)", y=1.02)
    return save_figure(figure, path, dpi=90)


def shrinkage_figure(path: Path, result: PopulationResult) -> Path:
    """``shrinkage.png``: per target, each lens's network estimate and its estimate given the population
    (the shrinkage), with the population's median mean and scatter as a band."""
    import matplotlib.pyplot as plt

    from lenscnn.plots import save_figure

    targets = [p.target for p in result.hierarchy.populations]
    shrunk, median = result.shrunk, dict(zip(result.hierarchy.names, result.median, strict=True))
    figure, axes = plt.subplots(len(targets), 1, figsize=(8, 2.8 * len(targets)), squeeze=False)
    for ax, target in zip(axes[:, 0], targets, strict=True):
        before = result.lenses.means[target][result.hierarchy.kept]
        order = np.argsort(before)
        shown = order[np.linspace(0, len(order) - 1, min(SHRINKAGE_LENSES, len(order))).round().astype(int)]
        x = np.arange(len(shown))
        mean, scatter = median[f"{target}.mean"], median[f"{target}.scatter"]
        ax.axhspan(mean - scatter, mean + scatter, color="tab:green", alpha=0.15, label="population: mean +- scatter")
        ax.vlines(x, before[shown], shrunk[target][shown], color="0.6", lw=0.8)
        ax.plot(x, before[shown], "o", ms=3, color="tab:blue", label="network")
        ax.plot(x, shrunk[target][shown], "o", ms=3, color="tab:orange", label="given the population")
        ax.set_ylabel(target)
        ax.set_xlabel("lenses, by network estimate")
        ax.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    return save_figure(figure, path, dpi=90)
