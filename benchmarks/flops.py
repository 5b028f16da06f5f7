"""FLOPs per image of every ``model=`` config, the simulator's arithmetic per image, and the GPU
projections of ``benchmarks/scaling.md`` computed from them.

* First a table of forward FLOPs per image of every ``model=`` config's backbone on 64 x 64 and
  192 x 192 images (counted on the meta device: no arithmetic, a few seconds), with, for the
  ResNets, their FLOPs with the small-input stem every ResNet had before the stem followed the
  image size (``model.net.stem=small``). Alone with ``--table-only`` (or without ``--sim-per-core``).
* Network FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and
  matrix products, 2 FLOPs per multiply-add) for one forward pass, and for a forward plus
  backward pass of the training loss, at each network's intended image size: 64 x 64
  (``instrument=quickstart``) for ``fast``, 192 x 192 (``instrument=hst_ensai``) for Ensai's
  four networks and the ResNets. Layers that FlopCounterMode does not count (batch norm,
  activations, pooling) are memory-bound and left to the utilisation factor.
* The simulator has no matrix products: its cost is elementwise. It is counted as "element
  operations" (output elements of every ATen operation, including integer hashing and
  transcendentals as one each) of eager rendering of ``hst_ensai`` lenses with noise.
* Projections (constants below, argued in scaling.md): a training step on a GPU takes the
  longer of its device time, ``batch x (training FLOPs / (peak x utilisation) + 1 / simulator
  rate)``, and its host time, Lightning's loop (measured here around a one-parameter model)
  plus one dispatch (measured here) and one kernel launch per ATen operation of the step.

    python benchmarks/flops.py --sim-per-core <simulator images/s on one core> [--batch 2]
    python benchmarks/flops.py --table-only            # the FLOPs table at 64 and 192 px alone
    python benchmarks/flops.py --tiny                  # seconds: every part for the fast CNN and ResNet-18 only,
                                                       # short timing loops, --sim-per-core 1000 (tests)
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import Counter
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

import lenscnn
from lenscnn.cli.train import build_model
from lenscnn.models import build_backbone
from lenscnn.models.losses import num_outputs

#: Image size each network is meant for: the quickstart CNN on 64 x 64, the rest on Ensai's 192 x 192.
SETTING = {"fast": ["instrument=quickstart", "prior=quickstart"]}
DEFAULT_SETTING = ["instrument=hst_ensai", "prior=ensai"]
ENSEMBLE = ("overfeat", "alexnet", "ensai", "inception_v4")  # Ensai's four networks
SEED_ENSEMBLE = ("ensai",) * 4  # experiment=hst_ensai_ensemble: four seeds of Ensai's own network

#: What ``--tiny`` changes: the networks counted (None: every ``model=`` config), the ensembles projected, the
#: loops timed (Lightning steps after warm-up steps, dispatched operations) and the lenses rendered.
SETTINGS: dict = {
    "models": None,
    "ensembles": {"Ensai's four networks": ENSEMBLE, "experiment=hst_ensai_ensemble": SEED_ENSEMBLE},
    "lightning_steps": (2000, 100),
    "dispatch_calls": 20000,
    "sim_batch": 32,
}
TINY = {
    "models": ["fast", "resnet18"],
    "ensembles": {"a fast CNN and a ResNet-18 (--tiny)": ("fast", "resnet18")},
    "lightning_steps": (5, 2),
    "dispatch_calls": 1000,
    "sim_batch": 2,
}

#: Image sizes of the FLOPs table: the quickstart and hst_ensai geometries.
TABLE_SIZES = (64, 192)
#: The stem every ResNet had before it followed the image size (``before`` column of the table).
BEFORE = {"stem": "small"}

#: Dense bf16 tensor-core peak FLOP/s (NVIDIA data sheets, without sparsity).
PEAK_BF16 = {"A100 SXM": 312e12, "H100 SXM": 989e12}
#: Plain fp32 lane operations per second: fp32 cores x boost clock (A100: 6912 x 1.41 GHz, H100 SXM: 16896 x 1.98 GHz).
FP32_LANE_OPS = {"A100 SXM": 6912 * 1.41e9, "H100 SXM": 16896 * 1.98e9}
#: fp32 lane operations per cycle of one core of this machine (AMD EPYC Zen 4: two 256-bit FMA and two
#: 256-bit FADD pipes, 8 lanes each) and its clock; the simulator's measured efficiency is relative to them.
CPU_LANE_OPS_PER_CYCLE, CPU_CLOCK = 32, 2.6e9
#: Reference for the utilisation of a CNN training step: ResNet-50 (224 x 224, AMP, channels-last) trains at
#: about 2,600 images/s on one A100 (timm's benchmark, pytorch-image-models issue #1491).
REFERENCE_IMAGES_PER_S_A100 = 2600
#: Share of the bf16 peak assumed for our networks on an A100: low, central, high (scaling.md).
UTILISATION = (0.10, 0.15, 0.20)
#: H100 SXM sustains about twice an A100 on CNNs: its tensor peak is 3.2x, its memory bandwidth 1.6x
#: (3.35 vs 2.04 TB/s), and batch norm, activations and pooling are bandwidth-bound.
H100_OVER_A100 = 2.0
#: Host time to launch one CUDA kernel (cudaLaunchKernel), added to the dispatch cost measured here.
CUDA_LAUNCH_SECONDS = 5e-6
#: Lenses per training step and GPU in the projections (experiment=hst_ensai_ensemble uses 256).
BATCH = 256
#: Scaling efficiency of DDP from one to eight GPUs of one node (NVLink all-reduce).
DDP_EFFICIENCY_8 = 0.9
#: Ensai's training budget per network: 1,000,000 lenses x 50 epochs.
IMAGES_PER_NET = 1_000_000 * 50


def model_names() -> list[str]:
    if SETTINGS["models"] is not None:
        return list(SETTINGS["models"])
    names = sorted(p.stem for p in (Path(lenscnn.__file__).parent / "conf" / "model").glob("*.yaml"))
    try:
        import timm  # noqa: F401
    except ImportError:
        names.remove("timm")
    return names


def compose_model(name: str):
    overrides = [f"model={name}", *SETTING.get(name, DEFAULT_SETTING), "data.simulator.compile=false"]
    with initialize_config_module("lenscnn.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    datamodule = instantiate(cfg.data, _convert_="all")
    return datamodule, build_model(cfg.model, datamodule)


def backbone_flops(name: str, sizes: tuple[int, ...] = TABLE_SIZES, **net_changes) -> dict[int, float]:
    """Forward FLOPs per image of the backbone of ``model=name`` on square images of each size in ``sizes``
    (its config's ``net``, changed by ``net_changes``), counted on the meta device."""
    with initialize_config_module("lenscnn.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}"])
    net = {**OmegaConf.to_container(cfg.model.net, resolve=True), **net_changes}
    outputs = num_outputs(cfg.model.loss, len(cfg.data.targets))
    flops = {}
    for size in sizes:
        with torch.device("meta"):
            backbone = build_backbone(net, outputs, (size, size)).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            backbone(torch.empty(1, 1, size, size, device="meta"))
        flops[size] = counter.get_total_flops()
    return flops


def print_size_table() -> None:
    """Forward GFLOP per image of every ``model=`` config at :data:`TABLE_SIZES`, and of the ResNets before."""
    sizes = " | ".join(f"{s} px" for s in TABLE_SIZES)
    befores = " | ".join(f"{s} px before" for s in TABLE_SIZES)
    print(f"\nforward GFLOP per image of each backbone ({', '.join(map(str, TABLE_SIZES))} px; before: small stem)")
    print(f"| model | {sizes} | {befores} | {TABLE_SIZES[-1]} px: before / now |")
    print("|---" * (2 + 2 * len(TABLE_SIZES)) + "|")
    for name in model_names():
        now = backbone_flops(name)
        cells = [f"{now[s] / 1e9:.3f}" for s in TABLE_SIZES]
        with initialize_config_module("lenscnn.conf", version_base="1.3"):
            resnet = compose("train", overrides=[f"model={name}"]).model.net.name == "resnet"
        if resnet:  # the fast CNNs have a stem too ([kernel, stride]), but no "before"
            before = backbone_flops(name, **BEFORE)
            cells += [f"{before[s] / 1e9:.3f}" for s in TABLE_SIZES]
            cells.append(f"{before[TABLE_SIZES[-1]] / now[TABLE_SIZES[-1]]:.1f}x")
        else:
            cells += ["-"] * len(TABLE_SIZES) + ["-"]
        print(f"| {name} | " + " | ".join(cells) + " |")


def count_flops(model: torch.nn.Module, images: torch.Tensor, loss) -> tuple[float, float]:
    """``(forward, forward + backward)`` FLOPs per image of ``model`` on ``images`` with training ``loss``."""
    batch = images.shape[0]
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as forward:
        model(images)
    model.train()
    with FlopCounterMode(display=False) as training:
        loss(model, images).backward()
    return forward.get_total_flops() / batch, training.get_total_flops() / batch


def network_flops(name: str, batch: int) -> dict[str, float]:
    """Forward and forward+backward FLOPs per image, parameters and image size of ``model=name``."""
    datamodule, model = compose_model(name)
    sample = next(iter(datamodule.train_dataloader()))
    sample = {
        "params": {k: v[:batch] for k, v in sample["params"].items()},
        "noise_seeds": sample["noise_seeds"][:batch],
    }
    rendered = datamodule.on_after_batch_transfer(sample, 0)
    forward, train = count_flops(model, rendered["image"], lambda m, _: m._step(rendered)[0])
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), foreach=True)  # foreach: the default on GPUs
    for counting in (False, True):  # the first step creates the optimizer state
        with _OpCalls() if counting else contextlib.nullcontext() as calls:
            optimizer.zero_grad()
            model._step(rendered)[0].backward()
            optimizer.step()
    return {"image": datamodule.image_size[0], "params": params, "forward": forward, "train": train, "ops": calls.n}


class _OpCalls(TorchDispatchMode):
    """Counts ATen operations (each one kernel launch on a GPU, roughly)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


class _TinyModule(pl.LightningModule):
    """One parameter, the logging of our training step: what remains is Lightning's own per-step cost."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        loss = (self.w - batch).square().mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), foreach=True)


class _Clock(pl.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):  # noqa: D102
        self.end = time.perf_counter()


def lightning_step_seconds(steps: int = 2000, warmup: int = 100) -> float:
    """Host time of one Lightning training step around a one-parameter model (loop, hooks, logging, optimizer)."""
    loader = torch.utils.data.DataLoader(torch.zeros(steps + warmup, 1), batch_size=1)
    clock = _Clock(warmup)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps + warmup,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(_TinyModule(), loader)
    return (clock.end - clock.start) / steps


def dispatch_seconds(calls: int = 20000) -> float:
    """Host time of one tiny eager ATen operation on this machine (PyTorch's dispatch overhead)."""
    x = torch.zeros(1)
    for _ in range(1000):
        x.add_(1.0)
    start = time.perf_counter()
    for _ in range(calls):
        x.add_(1.0)
    return (time.perf_counter() - start) / calls


def reference_resnet50_flops(batch: int) -> tuple[float, float]:
    """FLOPs of an ImageNet ResNet-50 (3 x 224 x 224, 7x7 stem, 1000 outputs) built from our ResNet."""
    from lenscnn.models.resnet import ResNet

    net = ResNet(1000, 224, in_channels=3, depth=50, small_input_stem=False, coord_channels=False)
    return count_flops(net, torch.randn(batch, 3, 224, 224), lambda m, x: m(x).square().mean())


class _ElementOps(TorchDispatchMode):
    """Counts output elements of every ATen operation (and FLOPs are not counted here)."""

    def __init__(self):
        super().__init__()
        self.elements = 0
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.elements += t.numel()
                self.ops[func.__name__.split(".")[0]] += t.numel()
        return out


def simulator_element_ops(batch: int = 32) -> tuple[float, int]:
    """``(element operations per image, pixels per image)`` of rendering ``hst_ensai`` lenses with noise."""
    datamodule, _ = compose_model("alexnet")
    sample = next(iter(datamodule.train_dataloader()))
    sample = {
        "params": {k: v[:batch] for k, v in sample["params"].items()},
        "noise_seeds": sample["noise_seeds"][:batch],
    }
    datamodule.on_after_batch_transfer(sample, 0)  # warm up (moves nothing on CPU, builds caches)
    with _ElementOps() as counter:
        datamodule.on_after_batch_transfer(sample, 0)
    height, width = datamodule.image_size
    return counter.elements / batch, height * width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument(
        "--sim-per-core",
        type=float,
        default=None,
        help="measured simulator images/s on one CPU core (hst_ensai); without it, only the FLOPs table",
    )
    parser.add_argument("--table-only", action="store_true", help="only the FLOPs table at 64 and 192 px")
    parser.add_argument(
        "--tiny", action="store_true", help="every part in seconds: two networks, short loops, --sim-per-core 1000"
    )
    args = parser.parse_args()
    if args.tiny:
        SETTINGS.update(TINY)
        args.batch, args.sim_per_core = 1, args.sim_per_core or 1000.0
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print_size_table()
    if args.table_only or args.sim_per_core is None:
        return
    rows = {name: network_flops(name, args.batch) for name in model_names()}
    ref_forward, ref_train = reference_resnet50_flops(args.batch)
    sim_ops, pixels = simulator_element_ops(SETTINGS["sim_batch"])

    print("\n| model | image | parameters | forward GFLOP/image | training (fwd+bwd) GFLOP/image | ratio |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['image']}x{r['image']} | {r['params'] / 1e6:.2f} M | {r['forward'] / 1e9:.3f} "
            f"| {r['train'] / 1e9:.3f} | {r['train'] / r['forward']:.2f} |"
        )
    print(f"| reference ResNet-50, ImageNet | 224x224 | - | {ref_forward / 1e9:.3f} | {ref_train / 1e9:.3f} | - |")
    anchor = REFERENCE_IMAGES_PER_S_A100 * ref_train / PEAK_BF16["A100 SXM"]
    print(f"\nResNet-50 at {REFERENCE_IMAGES_PER_S_A100} img/s on an A100 sustains {anchor:.1%} of the bf16 peak")

    per_pixel = sim_ops / pixels
    cpu_lane_ops = CPU_LANE_OPS_PER_CYCLE * CPU_CLOCK
    efficiency = args.sim_per_core * sim_ops / cpu_lane_ops
    print(f"simulator (hst_ensai, noise): {sim_ops / 1e6:.2f} M element operations/image ({per_pixel:.0f}/pixel)")
    rate = f"{args.sim_per_core:.0f} img/s per core"
    print(f"  {rate} = {efficiency:.1%} of the core's {cpu_lane_ops / 1e9:.0f} G lane-ops/s")
    sim_rate = {gpu: ops * efficiency / sim_ops for gpu, ops in FP32_LANE_OPS.items()}
    for gpu, rate in sim_rate.items():
        print(f"  {gpu}: {rate:,.0f} images/s at the same efficiency")

    sustained = {u: {"A100 SXM": u * PEAK_BF16["A100 SXM"]} for u in UTILISATION}
    for u in UTILISATION:
        sustained[u]["H100 SXM"] = H100_OVER_A100 * sustained[u]["A100 SXM"]
    dispatch = dispatch_seconds(SETTINGS["dispatch_calls"])
    launch = dispatch + CUDA_LAUNCH_SECONDS
    loop = lightning_step_seconds(*SETTINGS["lightning_steps"])
    print(f"host time per launched operation: {launch * 1e6:.1f} us ({dispatch * 1e6:.1f} us measured dispatch)")
    print(f"host time of Lightning's loop per step (one-parameter model): {loop * 1e3:.2f} ms")

    def images_per_second(r: dict, gpu: str, u: float) -> tuple[float, str]:
        device = BATCH * (r["train"] / sustained[u][gpu] + 1 / sim_rate[gpu])
        host = loop + r["ops"] * launch
        return BATCH / max(device, host), "host" if host > device else "GPU"

    central = UTILISATION[1]
    print(
        f"\nprojected training images/s, batch {BATCH} per GPU (utilisation {central:.0%} of the A100 peak; "
        f"H100 = {H100_OVER_A100}x A100; 8 GPUs: DDP at {DDP_EFFICIENCY_8:.0%})"
    )
    print("| model | ops/step | A100, 1 GPU | A100, 8 GPUs | H100, 1 GPU | H100, 8 GPUs | bound |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        cells, bound = [], ""
        for gpu in PEAK_BF16:
            one, bound = images_per_second(r, gpu, central)
            cells += [f"{one:,.0f}", f"{8 * DDP_EFFICIENCY_8 * one:,.0f}"]
        print(f"| {name} ({r['image']}px) | {r['ops']} | " + " | ".join(cells) + f" | {bound} |")

    for title, members in SETTINGS["ensembles"].items():
        train_flops = sum(rows[n]["train"] for n in members) * IMAGES_PER_NET
        print(f"\n{title} ({', '.join(members)}), {IMAGES_PER_NET:.0e} training images each: {train_flops:.3e} FLOP")
        print("| GPU | utilisation | simulator, h | total, 1 GPU | total, 8 GPUs |")
        print("|---|---|---|---|---|")
        for gpu in PEAK_BF16:
            for u in UTILISATION:
                seconds = sum(IMAGES_PER_NET / images_per_second(rows[n], gpu, u)[0] for n in members)
                sim_seconds = len(members) * IMAGES_PER_NET / sim_rate[gpu]
                eight = seconds / (8 * DDP_EFFICIENCY_8)
                print(f"| {gpu} | {u:.0%} | {sim_seconds / 3600:.2f} | {seconds / 3600:.1f} h | {eight / 3600:.2f} h |")


if __name__ == "__main__":
    main()
