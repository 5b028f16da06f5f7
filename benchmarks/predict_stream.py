"""``lenscnn-predict`` under load: a directory of 20,000 FITS files, streamed with bounded memory.

Writes ``--files`` FITS cutouts (64 x 64 px, ``PIXSCALE``) into a temporary directory, runs
``lenscnn-predict``'s ``predict(cfg)`` over it in process with the quickstart ensemble of four
(the shipped pretrained ensemble if present, else four freshly initialised members, as
``predict_throughput.py``), and prints:

* the peak RSS growth [MB] over the run (peak resident set during ``predict`` minus the resident
  set just before it; the kernel's high-water mark ``VmHWM``, reset through
  ``/proc/self/clear_refs``, and a sampler thread every 20 ms), and the growth from the first
  10 % of the run to its end (memory that scales with the number of files shows up there);
* the end-to-end rate [images/s], next to the in-memory batched rate of
  ``predict_throughput.py`` (``Ensemble.predict`` on batches of 256) measured in the same run
  (before and after the streamed run, averaged: the load of a shared machine drifts), and their
  ratio.

Target (issue 13, item 9): RSS growth under 300 MB over the whole run.

    python benchmarks/predict_stream.py [--files 20000] [--threads 2]
    python benchmarks/predict_stream.py --tiny   # seconds: 8 files of 8 lenses (tests/test_benchmarks.py)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits
from hydra import compose, initialize_config_module
from omegaconf import open_dict

sys.path.insert(0, str(Path(__file__).parent))
from lenscnn.cli.predict import predict  # noqa: E402
from lenscnn.models.ensemble import Ensemble  # noqa: E402
from lenscnn.sim import Simulator  # noqa: E402
from predict_throughput import quickstart_members  # noqa: E402

#: Largest accepted RSS growth over the run [MB] (issue 13, item 9).
RSS_TARGET_MB = 300.0
MB = 1024 * 1024


def rss_bytes() -> int:
    """The current resident set size of this process [bytes] (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def high_water_bytes() -> int | None:
    """``VmHWM`` of this process [bytes], or None where ``/proc`` lacks it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_high_water() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler(threading.Thread):
    """Samples the RSS every ``interval`` seconds: ``samples`` is a list of ``(seconds, bytes)``."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()
        self._t0 = time.perf_counter()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.perf_counter() - self._t0, rss_bytes()))
            self._stop_event.wait(self.interval)

    def stop(self) -> list[tuple[float, int]]:
        self._stop_event.set()
        self.join()
        self.samples.append((time.perf_counter() - self._t0, rss_bytes()))
        return self.samples


def write_cutouts(directory: Path, images: torch.Tensor, count: int, pixel_scale: float) -> None:
    """``count`` FITS files ``lens_<k>.fits``, cycling through ``images``."""
    directory.mkdir()
    header = fits.Header({"PIXSCALE": pixel_scale})
    planes = images[:, 0].numpy().astype(np.float32)
    for k in range(count):
        fits.PrimaryHDU(planes[k % len(planes)], header=header).writeto(directory / f"lens_{k:05d}.fits")


def in_memory_rate(ensemble: Ensemble, images: torch.Tensor) -> float:
    """Images/s of ``Ensemble.predict`` on batches of 256 already in memory (as predict_throughput.py)."""
    ensemble.predict(images[:256])  # warm-up
    t0 = time.perf_counter()
    for start in range(0, len(images), 256):
        ensemble.predict(images[start : start + 256])
    return len(images) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--lenses", type=int, default=2048, help="distinct images (files cycle through them)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--tiny", action="store_true", help="the same code path in seconds: 8 files, 8 lenses")
    args = parser.parse_args()
    if args.tiny:
        args.files, args.lenses = 8, 8
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        ensemble = Ensemble.from_checkpoints(quickstart_members(tmp))
        simulator = Simulator.from_config({**ensemble.simulator_config, "compile": False})
        images, _ = simulator.sample(args.lenses, generator=torch.Generator().manual_seed(0))
        memory_rate = in_memory_rate(ensemble, images)

        t0 = time.perf_counter()
        cutouts = tmp / "cutouts"
        write_cutouts(cutouts, images, args.files, ensemble.pixel_scale)
        print(f"wrote {args.files} FITS files in {time.perf_counter() - t0:.0f} s", flush=True)
        sources = [str(p) for p in ensemble.sources]

        with initialize_config_module("lenscnn.conf", version_base="1.3"):
            cfg = compose("predict", overrides=[f"input={cutouts}"])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp / "run")
            cfg.ensemble.checkpoints = sources

        before = rss_bytes()  # the ensemble and images above stay alive: they are not growth
        hwm_reset = reset_high_water()
        sampler = RssSampler()
        sampler.start()
        t0 = time.perf_counter()
        done = predict(cfg)
        out, failed = done.table, done.failed
        seconds = time.perf_counter() - t0
        samples = sampler.stop()
        with open(out) as f:
            rows = sum(1 for _ in f) - 1
        assert rows == args.files and not failed, f"{rows} rows for {args.files} files, {failed} failed"
        # again after the run: on a shared machine the load drifts, the ratio uses the mean of both
        memory_rates = (memory_rate, in_memory_rate(ensemble, images))
        memory_rate = sum(memory_rates) / 2

    peak = max(r for _, r in samples)
    hwm = high_water_bytes()
    if hwm_reset and hwm is not None:
        peak = max(peak, hwm)
    early = [r for t, r in samples if t <= 0.1 * seconds] or [samples[0][1]]
    late_growth = (samples[-1][1] - max(early)) / MB
    stream_rate = args.files / seconds
    print(f"quickstart ensemble of {len(sources)}, {args.threads} CPU threads, torch {torch.__version__}")
    print(f"{'':<44}{'value':>12}{'target':>10}{'ratio':>9}")
    growth = (peak - before) / MB
    ratio = growth / RSS_TARGET_MB
    print(f"{'peak RSS growth over the run [MB]':<44}{growth:>12,.0f}{RSS_TARGET_MB:>10,.0f}{ratio:>8.2f}x")
    print(f"{'RSS growth, first 10% of the run -> end [MB]':<44}{late_growth:>12,.0f}")
    print(f"{'RSS before predict [MB]':<44}{before / MB:>12,.0f}")
    before_after = f"  (before {memory_rates[0]:,.0f}, after {memory_rates[1]:,.0f})"
    print(f"{'in memory, batches of 256 [images/s]':<44}{memory_rate:>12,.0f}{before_after}")
    print(f"{f'FITS directory, {args.files} files [images/s]':<44}{stream_rate:>12,.0f}{'':>10}", end="")
    print(f"{stream_rate / memory_rate:>8.2f}x of in memory")
    print(f"{'wall time of predict [s]':<44}{seconds:>12,.1f}")


if __name__ == "__main__":
    main()
