"""Training throughput including on-the-fly rendering, and where a step's time goes.

Rows: the quickstart model (``experiment=quickstart``: fast CNN, 64 x 64, in the precision ``trainer=cpu``
picks: bf16 mixed on CPUs with AMX, else float32), the same in float32, and, in the same run, the same
experiment on the code of ``--before REV`` (a git revision, default :data:`BEFORE`: the code path before the
CPU-throughput work, with its 5x5 stride-2 stem and 16-channel 32 x 32 stage, coordinate channels
concatenated to every image, unfused AdamW), then Ensai's AlexNet on ``hst_ensai`` images (192 x 192);
with ``--only resnet18``, ResNet-18 on ``hst_ensai`` images (its stem follows the image size). The
revision's ``src/`` is extracted with ``git archive`` into a temporary directory and imported in place of
this checkout's. Each row is trained with Lightning in a fresh process for a number of steps (after
warm-up steps that absorb compilation). Rows are measured in turn ``--repeats`` times (interleaved, so a
busy spell of the machine hits every row alike) and the median of each row's images/s is reported, with
the ratios of the quickstart rows to the "before" row.

Per step, in the same run: the rendering (inside ``LensDataModule.on_after_batch_transfer``), the forward
pass with the loss (``on_train_batch_start`` to ``on_before_backward``), the backward pass (to
``on_after_backward``) and the optimizer (to ``on_train_batch_end``: zeroing, the update, the schedule);
"other" is the rest of the wall time (drawing the batch's parameters, Lightning's loop, logging).

Timing: on a CPU with ``time.perf_counter`` (every operation has finished when it returns); on a
GPU (``--device cuda``, ``trainer=gpu``: bf16-mixed, channels-last, cuDNN autotuning) the device is
synchronised before the clock starts and stops, and every phase is timed on the GPU's stream with
CUDA events (kernels run after the host has queued them: host clocks around them would measure the
queueing).

Columns: images/s (wall clock over the timed steps), the share of the wall time of each phase, and
milliseconds per step of rendering and of forward + backward + optimizer.

    python benchmarks/train_throughput.py [--steps 60] [--repeats 3] [--threads 2] [--device cpu|cuda] [--batch N]
    python benchmarks/train_throughput.py --only quickstart --repeats 5 --before <rev>
    python benchmarks/train_throughput.py --only resnet18 --override model.net.stem=small   # the stem before
    python benchmarks/train_throughput.py --tiny   # seconds: the quickstart row and the "before" row, one step of
                                                   # 4 lenses each, 1 thread, eager rendering (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from lenscnn.cli.common import register_resolvers
from lenscnn.cli.train import build_model

#: The code path before the CPU-throughput work (the quickstart "before" row runs on it).
BEFORE = "dd21374"
#: The rows compared with the "before" row (the first is the code path of ``make train``).
NOW = ("quickstart (fast CNN, 64x64)", "quickstart, float32")
#: Rows run on the ``--before`` revision's code.
ON_BEFORE = ("quickstart, before",)
ROWS = {
    NOW[0]: ["experiment=quickstart"],
    NOW[1]: ["experiment=quickstart", "trainer.precision=32-true"],
    ON_BEFORE[0]: ["experiment=quickstart"],
    "Ensai AlexNet, hst_ensai 192x192": ["model=alexnet", "instrument=hst_ensai", "prior=ensai", "data.batch_size=32"],
}
#: Rows run only when asked for with ``--only``.
EXTRA_ROWS = {
    "ResNet-18, hst_ensai 192x192": ["model=resnet18", "instrument=hst_ensai", "prior=ensai", "data.batch_size=32"],
}
#: The rows of ``--tiny`` (with the steps, batch and overrides below): a row on this code and one on ``--before``'s.
TINY_ROWS = (NOW[0], ON_BEFORE[0])
#: Overrides of every ``--tiny`` row: no compilation of the rendering kernel.
TINY_OVERRIDES = ["data.simulator.compile=false"]
#: ``--only`` choices: a word of the row's name.
ONLY = {"quickstart": "quickstart", "alexnet": "alexnet", "resnet18": "resnet-18"}


class _Interval:
    """Time spent between :meth:`start` and :meth:`stop` calls [s], summed over the counted intervals: host
    clock on a CPU, CUDA events on the current stream of a GPU (read by :meth:`total` after synchronising)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.seconds, self.count = 0.0, 0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._started: float | torch.cuda.Event | None = None

    def start(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._started = event
        else:
            self._started = time.perf_counter()

    def stop(self, counted: bool = True) -> None:
        started, self._started = self._started, None
        if started is None or not counted:
            return
        self.count += 1
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._events.append((started, event))
        else:
            self.seconds += time.perf_counter() - started

    def total(self) -> float:
        """Seconds of every counted interval (synchronises a GPU)."""
        if self.cuda:
            torch.cuda.synchronize()
            self.seconds += sum(start.elapsed_time(end) for start, end in self._events) / 1e3
            self._events = []
        return self.seconds


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


PHASES = ("forward", "backward", "optimizer")


class _StepTimer(pl.Callback):
    """Wall time of the training steps after ``warmup`` steps (from the end of the last warm-up step, so the
    rendering and data loading of the timed steps are inside), and the device time of their phases: forward
    with the loss (``on_train_batch_start`` to ``on_before_backward``), backward (to ``on_after_backward``),
    optimizer (to ``on_train_batch_end``)."""

    def __init__(self, warmup: int, device: torch.device):
        self.warmup, self.device = warmup, device
        self.start: float | None = None
        self.end: float | None = None
        self.batch_size = 0
        self.phases = {phase: _Interval(device) for phase in PHASES}

    def _start_clock(self) -> None:
        synchronize(self.device)
        self.start = time.perf_counter()

    def on_train_start(self, trainer, pl_module):  # noqa: D102
        if self.warmup == 0:
            self._start_clock()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        self.batch_size = batch["image"].shape[0]
        self.phases["forward"].start()

    def on_before_backward(self, trainer, pl_module, loss):  # noqa: D102
        self.phases["forward"].stop(counted=self.start is not None)
        self.phases["backward"].start()

    def on_after_backward(self, trainer, pl_module):  # noqa: D102
        self.phases["backward"].stop(counted=self.start is not None)
        self.phases["optimizer"].start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: D102
        self.phases["optimizer"].stop(counted=self.start is not None)
        if self.start is None and trainer.global_step == self.warmup:  # the optimizer step counted the last one
            self._start_clock()

    def on_train_end(self, trainer, pl_module):  # noqa: D102
        synchronize(self.device)
        self.end = time.perf_counter()


def timed_rendering(render: Callable, interval: _Interval, counting: Callable[[], bool]) -> Callable:
    """``render`` (the datamodule's ``on_after_batch_transfer``) timed into ``interval`` while ``counting()``."""

    def timed(batch, dataloader_idx):
        interval.start()
        out = render(batch, dataloader_idx)
        interval.stop(counted=counting())
        return out

    return timed


def measure(overrides: list[str], steps: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Images/s, render share and per-step times [s] of ``steps`` training steps of the composed config."""
    gpu = ["trainer=gpu"] if device.type == "cuda" else []
    register_resolvers()  # of the code measured (trainer=cpu's precision)
    with initialize_config_module("lenscnn.conf", version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, *gpu, "logger=[]", "callbacks=none"], return_hydra_config=False)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))
    datamodule = instantiate(cfg.data, _convert_="all")
    model = build_model(cfg.model, datamodule)
    timer = _StepTimer(warmup, device)
    render = _Interval(device)

    def counting() -> bool:
        return model.trainer is not None and model.trainer.global_step >= warmup

    datamodule.on_after_batch_transfer = timed_rendering(datamodule.on_after_batch_transfer, render, counting)
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        precision=cfg.trainer.precision,
        benchmark=cfg.trainer.get("benchmark"),
        max_steps=warmup + steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=datamodule)
    elapsed = timer.end - timer.start
    render_seconds = render.total()
    phase_seconds = {phase: interval.total() for phase, interval in timer.phases.items()}
    shares = {phase: seconds / elapsed for phase, seconds in {"render": render_seconds, **phase_seconds}.items()}
    return {
        "images_per_s": steps * timer.batch_size / elapsed,
        **{f"{phase}_share": share for phase, share in shares.items()},
        "other_share": 1.0 - sum(shares.values()),
        "render_ms": 1e3 * render_seconds / max(render.count, 1),
        "train_ms": 1e3 * sum(phase_seconds.values()) / max(timer.phases["forward"].count, 1),
        "batch": timer.batch_size,
    }


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run of median images/s among ``runs`` (its phase shares with it)."""
    return sorted(runs, key=lambda r: r["images_per_s"])[len(runs) // 2]


def extract_src(revision: str, into: Path) -> Path:
    """The ``src/`` directory of git ``revision`` of this repository, extracted under ``into``."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", revision, "src"], capture_output=True, check=False)
    if archive.returncode:
        raise SystemExit(f"error: --before {revision}: {archive.stderr.decode().strip()} (a full clone has it)")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def measure_in_process(overrides: list[str], args: argparse.Namespace, src: Path | None) -> dict[str, float]:
    """:func:`measure` of one row in a fresh Python process (importing ``lenscnn`` from ``src`` if given)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, __file__, "--measure", json.dumps(overrides), "--steps", str(args.steps)]
    command += ["--warmup", str(args.warmup), "--threads", str(args.threads), "--device", args.device]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"error: row {overrides} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each row, interleaved (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=sorted(ONLY), default=None)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:index]")
    parser.add_argument("--batch", type=int, default=None, help="lenses per step (default: each row's)")
    parser.add_argument("--override", action="append", default=[], help="a Hydra override for every row (repeatable)")
    parser.add_argument("--before", default=BEFORE, help=f"git revision of the 'before' row's code (default {BEFORE})")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one row, in this process, JSON out
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="the same code path in seconds: the quickstart and 'before' rows, 1 step of 4 lenses, 1 thread, eager "
        "rendering",
    )
    args = parser.parse_args()
    if args.tiny:
        args.steps, args.warmup, args.repeats, args.batch, args.threads = 1, 1, 1, args.batch or 4, 1
    if args.measure:
        torch.set_num_threads(args.threads)
        result = measure(json.loads(args.measure), args.steps, args.warmup, torch.device(args.device))
        print("RESULT " + json.dumps(result))
        return
    device = torch.device(args.device)
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"error: --device {args.device}: cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but this torch has no CUDA device")
    torch.set_num_threads(args.threads)
    batch = [f"data.batch_size={args.batch}"] if args.batch else []
    rows = {**ROWS, **EXTRA_ROWS} if args.only else ROWS
    if args.tiny:
        rows = {name: [*ROWS[name], *TINY_OVERRIDES] for name in TINY_ROWS}
    names = {  # label: the row's name
        " ".join([name, *args.override]): name for name in rows if not args.only or ONLY[args.only] in name.lower()
    }
    chosen = {label: [*rows[name], *batch, *args.override] for label, name in names.items()}
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in chosen}
    with tempfile.TemporaryDirectory() as scratch:
        before_src = None
        if any(label.startswith(ON_BEFORE) for label in chosen):
            before_src = extract_src(args.before, Path(scratch))
        for _ in range(max(1, args.repeats)):
            for label, overrides in chosen.items():
                src = before_src if label.startswith(ON_BEFORE) else None
                runs[label].append(measure_in_process(overrides, args, src))
    results = {label: median_run(r) for label, r in runs.items()}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} threads"
    print(
        f"\ntraining throughput, {where}, {args.steps} steps after {args.warmup} warm-up steps, "
        f"median of {max(1, args.repeats)} interleaved runs"
    )
    width = max([36, *(len(name) for name in results)])
    shares = ("render", *PHASES, "other")
    header = f"{'images/s':>9} {'batch':>6} " + " ".join(f"{s:>9}" for s in shares)
    print(f"{'setting':<{width}} {header} {'render ms':>10} {'fwd+bwd+opt ms':>15}")
    for name, r in results.items():
        print(
            f"{name:<{width}} {r['images_per_s']:>9.0f} {r['batch']:>6} "
            + " ".join(f"{r[f'{s}_share']:>9.1%}" for s in shares)
            + f" {r['render_ms']:>10.2f} {r['train_ms']:>15.2f}"
        )
    label_of = {name: label for label, name in names.items()}
    before = label_of.get(ON_BEFORE[0])
    print()
    for now in (label_of[name] for name in NOW if name in label_of and before in results):
        ratios = sorted(a["images_per_s"] / b["images_per_s"] for a, b in zip(runs[now], runs[before], strict=True))
        print(
            f"{now} / before: {results[now]['images_per_s'] / results[before]['images_per_s']:.2f}x lenses/s "
            f"(per interleaved pair: {', '.join(f'{r:.2f}' for r in ratios)})"
        )


if __name__ == "__main__":
    main()
