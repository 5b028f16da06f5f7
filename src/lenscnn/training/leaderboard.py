"""Hydra callback: when a multirun ends, rank its runs in ``leaderboard.csv`` and ``leaderboard.md``."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lenscnn.io.atomic import atomic_path, write_text
from lenscnn.io.run_dir import finished_runs
from lenscnn.metrics.tables import markdown_table

log = logging.getLogger(__name__)


def collect_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    """``metrics.json`` of every run under ``sweep_dir``, best first (by the optimized metric)."""
    runs = []
    for run in finished_runs(sweep_dir):
        payload = json.loads(run.metrics.read_text())
        score = payload.get("val", {}).get(payload.get("optimized_metric"))
        payload["score"] = math.inf if score is None else float(score)
        payload["job"] = run.path.name
        runs.append(payload)
    return sorted(runs, key=lambda r: r["score"])


def leaderboard_rows(runs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: rank, job, overrides, validation score, test RMSE per target."""
    targets: list[str] = []
    for run in runs:
        targets += [t for t in run.get("prior_mean_rmse", {}) if t not in targets]
    metric = runs[0].get("optimized_metric", "score") if runs else "score"
    header = ["rank", "job", "overrides", metric, *[f"test rmse {t}" for t in targets]]
    rows = []
    for rank, run in enumerate(runs, start=1):
        test = run.get("test", {})
        rmse = [f"{test[f'test/rmse/{t}']:.4g}" if f"test/rmse/{t}" in test else "" for t in targets]
        score = "" if math.isinf(run["score"]) else f"{run['score']:.4g}"
        rows.append([str(rank), run["job"], " ".join(run.get("overrides", [])), score, *rmse])
    return header, rows


def write_leaderboard(sweep_dir: Path) -> list[dict[str, Any]]:
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
