"""Checkpoint writes are atomic: a writer killed (SIGKILL) at any moment, mid-write included,
leaves the previous checkpoint or the new one, whole, never a truncated file."""

import multiprocessing
import os
import random
import signal
import time

import torch

from lenscnn.training.checkpoint_io import AtomicCheckpointIO

KILLS = int(os.environ.get("LENSCNN_KILLS", "25"))
SIZE = 1_000_000  # 4 MB of float32: each write takes a while, so most kills land mid-write


def _write_forever(path: str, start: int) -> None:
    torch.set_num_threads(1)  # a forked child must not use the parent's OpenMP pool
    io = AtomicCheckpointIO()
    version = start
    while True:
        version += 1
        io.save_checkpoint({"version": version, "weights": torch.full((SIZE,), float(version))}, path)


def test_a_writer_killed_at_random_moments_always_leaves_a_whole_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"version": 0, "weights": torch.zeros(SIZE)}, path)
    context, rng, mid_write, last = multiprocessing.get_context("fork"), random.Random(0), 0, 0
    for _ in range(KILLS):
        writer = context.Process(target=_write_forever, args=(str(path), last))
        writer.start()
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        mid_write += (tmp_path / ".last.ckpt.partial").exists()
        checkpoint = AtomicCheckpointIO().load_checkpoint(path)
        assert checkpoint["version"] >= last
        assert torch.equal(checkpoint["weights"], torch.full((SIZE,), float(checkpoint["version"])))
        last = checkpoint["version"]
    assert mid_write >= KILLS // 3, f"only {mid_write} of {KILLS} kills landed during a write"
    assert last > 0
