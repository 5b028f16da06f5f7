"""The training hot path is GPU-ready: rendering and the training step allocate no host tensors and
never wait for the device (no ``.item()``, ``.cpu()``, ``.tolist()``, ``.numpy()``) except to log.

Checked on this CPU-only machine in two ways:

* the step runs on PyTorch's ``meta`` device (tensors without data) under a dispatch mode that
  records every host (CPU) tensor an operation receives or makes and every device-to-host
  read: on a GPU these would be host allocations, copies or synchronisations;
* a short Lightning ``fit`` with the same detector around ``on_after_batch_transfer`` and
  ``training_step`` (Lightning's own logging excepted), for every loss.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.utilities import move_data_to_device
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lenscnn.cli.train import build_model
from tests.helpers import TINY_FAST, compose_train

aten = torch.ops.aten
#: Device-to-host reads (``.item()``, ``float(t)``, ``bool(t)``) and tensors made from Python data.
HOST_OPS = {aten._local_scalar_dense.default, aten.lift_fresh.default, aten.lift_fresh_copy.default}


class Recorder:
    """Collects host traffic unless paused."""

    def __init__(self):
        self.events: list[str] = []
        self.paused = False

    def add(self, event: str) -> None:
        if not self.paused:
            self.events.append(event)


class HostTraffic(TorchDispatchMode):
    """Records host reads, tensors made from host data and, off the CPU, any CPU tensor in or out of an op."""

    def __init__(self, device: torch.device, recorder: Recorder):
        super().__init__()
        self.device, self.recorder = device, recorder

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in HOST_OPS:
            self.recorder.add(str(func))
        self._check(func, (args, kwargs))
        out = func(*args, **kwargs)
        self._check(func, out)
        return out

    def _check(self, func, tensors) -> None:
        if self.device.type == "cpu":
            return
        for t in tree_leaves(tensors):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                self.recorder.add(f"{func} has a host tensor {tuple(t.shape)}")
                return


@contextmanager
def host_traffic(device: torch.device, recorder: Recorder):
    """Record host traffic (see :class:`HostTraffic`) and calls of the Tensor methods that copy to the host."""
    originals = {name: getattr(torch.Tensor, name) for name in ("cpu", "numpy", "tolist", "item")}

    def recording(name):
        def call(self, *args, **kwargs):
            recorder.add(f"Tensor.{name}()")
            return originals[name](self, *args, **kwargs)

        return call

    try:
        for name in originals:
            setattr(torch.Tensor, name, recording(name))
        with HostTraffic(device, recorder):
            yield recorder
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)


def _setup(tmp_path, overrides=()):
    cfg = compose_train(tmp_path, [*TINY_FAST, *overrides])
    datamodule = instantiate(cfg.data, _convert_="all")
    return datamodule, build_model(cfg.model, datamodule)


def test_detector_sees_what_it_must_forbid():
    meta, cpu = torch.device("meta"), torch.device("cpu")
    x = torch.ones(3, device=meta)
    with host_traffic(meta, Recorder()) as seen, pytest.raises(RuntimeError, match="device"):
        _ = x * torch.tensor([1.0, 2.0, 3.0])  # a host tensor made every step (a GPU would need a copy)
    assert any("lift_fresh" in e for e in seen.events) and any("host tensor" in e for e in seen.events)
    with host_traffic(meta, Recorder()) as seen:
        x.copy_(torch.zeros(3))
    assert any("aten.copy_.default has a host tensor" in e for e in seen.events)
    with host_traffic(cpu, Recorder()) as seen:
        _ = torch.ones(2).sum().item()
    assert seen.events == ["Tensor.item()", "aten._local_scalar_dense.default"]
    with host_traffic(cpu, Recorder()) as seen:
        torch.ones(2).cpu().tolist()
    assert seen.events == ["Tensor.cpu()", "Tensor.tolist()"]


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # no trainer: nothing to log to
@pytest.mark.parametrize("loss", ["mse", "gaussian_nll", "full_gaussian_nll"])
def test_rendering_and_training_step_stay_on_the_device(tmp_path, loss):
    """On the meta device (a stand-in for a GPU): render, forward, loss and backward of a step."""
    datamodule, model = _setup(tmp_path, [f"model.loss={loss}", "model.net.dropout=0.2"])
    meta = torch.device("meta")
    model = model.to(meta).train()
    batches = iter(datamodule.train_dataloader())
    datamodule.on_after_batch_transfer(move_data_to_device(next(batches), meta), 0)  # first step: moves the sim
    batch = move_data_to_device(next(batches), meta)
    with host_traffic(meta, Recorder()) as seen:
        rendered = datamodule.on_after_batch_transfer(batch, 0)
        loss_value = model.training_step(rendered, 1)
        loss_value.backward()
    assert rendered["image"].device == meta and rendered["image"].shape == (8, 1, 32, 32)
    assert all(p.grad is not None and p.grad.device == meta for p in model.parameters() if p.requires_grad)
    assert seen.events == []


class _WatchHotPath(pl.Callback):
    """Records host traffic in rendering and the training step from the second step on
    (the first moves the simulator to the device), except inside ``self.log``."""

    def __init__(self, datamodule, model):
        self.recorder, self.steps = Recorder(), 0
        render, step, log = datamodule.on_after_batch_transfer, model.training_step, model.log

        def watched(fn, *args, **kwargs):
            if not (model.trainer.training and model.trainer.global_step >= 1):
                return fn(*args, **kwargs)
            self.steps += fn is step
            with host_traffic(torch.device("cpu"), self.recorder):
                return fn(*args, **kwargs)

        def unwatched_log(*args, **kwargs):
            paused, self.recorder.paused = self.recorder.paused, True
            try:
                return log(*args, **kwargs)
            finally:
                self.recorder.paused = paused

        datamodule.on_after_batch_transfer = lambda *args, **kwargs: watched(render, *args, **kwargs)
        model.training_step = lambda *args, **kwargs: watched(step, *args, **kwargs)
        model.log = unwatched_log


@pytest.mark.parametrize("loss", ["mse", "gaussian_nll", "full_gaussian_nll"])
def test_a_lightning_fit_reads_nothing_back_in_the_hot_path(tmp_path, loss):
    datamodule, model = _setup(tmp_path, [f"model.loss={loss}"])
    watch = _WatchHotPath(datamodule, model)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=4,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[watch],
    )
    trainer.fit(model, datamodule=datamodule)
    assert watch.steps == 3
    assert watch.recorder.events == []
