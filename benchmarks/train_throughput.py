"""Training throughput including on-the-fly rendering, and the share of time spent rendering.

Rows: the quickstart model (``experiment=quickstart``: fast CNN, 64 x 64) and Ensai's
AlexNet on ``hst_ensai`` images (192 x 192); with ``--only resnet18``, ResNet-18 on ``hst_ensai``
images (its stem follows the image size). Each is trained with Lightning for a number of steps
(after warm-up steps that absorb compilation). Per step, in the same run: the rendering (inside
``LensDataModule.on_after_batch_transfer``) and the training step proper (forward, backward and
optimizer, from ``on_train_batch_start`` to ``on_train_batch_end``).

Timing: on a CPU with ``time.perf_counter`` (every operation has finished when it returns); on a
GPU (``--device cuda``, ``trainer=gpu``: bf16-mixed, channels-last, cuDNN autotuning) the device is
synchronised before the clock starts and stops, and rendering and training step are timed on the
GPU's stream with CUDA events (kernels run after the host has queued them: host clocks around
them would measure the queueing).

Columns: images/s (wall clock over the timed steps), render share (rendering time over wall
time), and milliseconds per step of rendering and of forward + backward + optimizer.

    python benchmarks/train_throughput.py [--steps 60] [--threads 2] [--device cpu|cuda] [--batch N]
    python benchmarks/train_throughput.py --only resnet18 --override model.net.stem=small   # the stem before
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from lenscnn.cli.train import build_model

ROWS = {
    "quickstart (fast CNN, 64x64)": ["experiment=quickstart"],
    "Ensai AlexNet, hst_ensai 192x192": ["model=alexnet", "instrument=hst_ensai", "prior=ensai", "data.batch_size=32"],
}
#: Rows run only when asked for with ``--only``.
EXTRA_ROWS = {
    "ResNet-18, hst_ensai 192x192": ["model=resnet18", "instrument=hst_ensai", "prior=ensai", "data.batch_size=32"],
}
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


class _StepTimer(pl.Callback):
    """Wall time of the training steps after ``warmup`` steps (from the end of the last warm-up step, so the
    rendering and data loading of the timed steps are inside), and the device time of their training steps
    (forward, backward, optimizer: ``on_train_batch_start`` to ``on_train_batch_end``)."""

    def __init__(self, warmup: int, device: torch.device):
        self.warmup, self.device = warmup, device
        self.start: float | None = None
        self.end: float | None = None
        self.batch_size = 0
        self.train = _Interval(device)

    def _start_clock(self) -> None:
        synchronize(self.device)
        self.start = time.perf_counter()

    def on_train_start(self, trainer, pl_module):  # noqa: D102
        if self.warmup == 0:
            self._start_clock()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        self.batch_size = batch["image"].shape[0]
        self.train.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: D102
        self.train.stop(counted=self.start is not None)
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
    render_seconds, train_seconds = render.total(), timer.train.total()
    return {
        "images_per_s": steps * timer.batch_size / elapsed,
        "render_share": render_seconds / elapsed,
        "render_ms": 1e3 * render_seconds / max(render.count, 1),
        "train_ms": 1e3 * train_seconds / max(timer.train.count, 1),
        "batch": timer.batch_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=sorted(ONLY), default=None)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:index]")
    parser.add_argument("--batch", type=int, default=None, help="lenses per step (default: each row's)")
    parser.add_argument("--override", action="append", default=[], help="a Hydra override for every row (repeatable)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"error: --device {args.device}: cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but this torch has no CUDA device")
    torch.set_num_threads(args.threads)
    batch = [f"data.batch_size={args.batch}"] if args.batch else []
    rows = {**ROWS, **EXTRA_ROWS} if args.only else ROWS
    results = []
    for name, overrides in rows.items():
        if args.only and ONLY[args.only] not in name.lower():
            continue
        label = " ".join([name, *args.override])
        results.append((label, measure([*overrides, *batch, *args.override], args.steps, args.warmup, device)))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} threads"
    print(f"\ntraining throughput, {where}, {args.steps} steps after {args.warmup} warm-up steps")
    width = max([36, *(len(name) for name, _ in results)])
    header = f"{'images/s':>9} {'render share':>13} {'batch':>6} {'render ms':>10} {'fwd+bwd+opt ms':>15}"
    print(f"{'setting':<{width}} {header}")
    for name, r in results:
        print(
            f"{name:<{width}} {r['images_per_s']:>9.0f} {r['render_share']:>12.1%} {r['batch']:>6} "
            f"{r['render_ms']:>10.2f} {r['train_ms']:>15.2f}"
        )


if __name__ == "__main__":
    main()
