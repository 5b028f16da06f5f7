"""Hydra callback: when a multirun ends, rank its runs in ``leaderboard.csv`` and ``leaderboard.md``."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lenscnn.io.atomic import atomic_path, write_text
from lenscnn.io.run_dir import finished_runs
from lenscnn.io.summaries import TrainingSummary
from lenscnn.metrics.tables import markdown_table

log = logging.getLogger(__name__)


def collect_runs(sweep_dir: Path) -> list[tuple[str, TrainingSummary]]:
    """``(job, summary)`` of every run under ``sweep_dir``, best first (by the optimized metric; runs
    that never validated last)."""
    runs = [(run.path.name, TrainingSummary.read(run.metrics)) for run in finished_runs(sweep_dir)]
    return sorted(runs, key=lambda r: math.inf if r[1].score is None else r[1].score)


def leaderboard_rows(runs: list[tuple[str, TrainingSummary]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: rank, job, overrides, validation score, test RMSE per target."""
    targets: list[str] = []
    for _, run in runs:
        targets += [t for t in run.prior_mean_rmse if t not in targets]
    metric = runs[0][1].optimized_metric if runs else "score"
    header = ["rank", "job", "overrides", metric, *[f"test rmse {t}" for t in targets]]
    rows = []
    for rank, (job, run) in enumerate(runs, start=1):
        rmse = ["" if value is None else f"{value:.4g}" for value in map(run.test_rmse, targets)]
        score = "" if run.score is None else f"{run.score:.4g}"
        rows.append([str(rank), job, " ".join(run.overrides), score, *rmse])
    return header, rows


def write_leaderboard(sweep_dir: Path) -> list[tuple[str, TrainingSummary]]:
    """Write ``leaderboard.csv`` and ``leaderboard.md`` into ``sweep_dir`` (each atomically);
    return the ranked runs."""
    runs = collect_runs(sweep_dir)
    header, rows = leaderboard_rows(runs)
    with atomic_path(sweep_dir / "leaderboard.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    write_text(sweep_dir / "leaderboard.md", markdown_table(header, rows) + "\n")
    return runs


class LeaderboardCallback(Callback):
    """Registered in ``conf/hydra/default.yaml``; acts only at the end of a multirun."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir() or not finished_runs(sweep_dir):
            return
        runs = write_leaderboard(sweep_dir)
        print((sweep_dir / "leaderboard.md").read_text(), end="", flush=True)
        log.info("leaderboard of %d runs: %s", len(runs), sweep_dir / "leaderboard.md")
        log.info("sweep directory: %s", sweep_dir)


def main(argv: list[str] | None = None) -> None:
    """``python -m lenscnn.training.leaderboard <sweep dir>``: (re)write a sweep's leaderboard, e.g. after
    cluster jobs finished while the submitting ``lenscnn-train -m`` was no longer waiting for them."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    if not finished_runs(args.sweep_dir):
        raise SystemExit(f"error: no run with metrics.json under {args.sweep_dir}")
    runs = write_leaderboard(args.sweep_dir)
    print(f"{len(runs)} runs ranked: {args.sweep_dir / 'leaderboard.md'}")


if __name__ == "__main__":
    main()
