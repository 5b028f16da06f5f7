"""The simulator on a GPU: the CPU's images in float64, chunking invisible, whole batches by default, compiled.

Run with ``pytest -m gpu tests/gpu`` (skipped without CUDA; about a minute on one GPU, most of it compiling).
"""

from __future__ import annotations

import logging

import pytest
import torch

from lenscnn.sim import Simulator
from lenscnn.sim.simulator import CHUNK_PIXELS
from tests.gpu.device import DEVICE, GPU
from tests.helpers import composed_conf, load_conf, make_simulator
from tests.sim.test_chunking import counting_chunks

pytestmark = GPU

DTYPES = {"f32": torch.float32, "f64": torch.float64}


def simulator(
    dtype: torch.dtype, size: int = 64, prior: str = "realistic", observation: str = "cosmic_rays", **kwargs
) -> Simulator:
    """A simulator of the quickstart instrument on ``size`` x ``size`` pixels with a shipped prior and observation
    (composed by Hydra), on the CPU: move it with ``.to``."""
    return make_simulator(
        {**load_conf("instrument", "quickstart"), "image_size": size},
        composed_conf("prior", prior),
        observation=composed_conf("observation", observation),
        dtype={torch.float32: "float32", torch.float64: "float64"}[dtype],
        **kwargs,
    )


@pytest.mark.parametrize(
    ("prior", "observation"),
    [("realistic", "none"), ("realistic", "cosmic_rays"), ("survey", "survey")],
    ids=["realistic", "cosmic_rays", "survey"],
)
def test_the_gpu_renders_the_cpu_images_in_float64(prior, observation):
    """The same lenses of a stream (parameters drawn on the CPU, noise and artefacts from per-image seeds) on the
    CPU and on the GPU: equal to 1e-6 of the brightest pixel in float64 (the survey: per-image PSFs by FFT)."""
    cpu = simulator(torch.float64, prior=prior, observation=observation)
    gpu = simulator(torch.float64, prior=prior, observation=observation).to(DEVICE)
    images, params = cpu.sample(96, cpu.make_generator(7))
    gpu_images, gpu_params = gpu.sample(96, gpu.make_generator(7))
    assert gpu_images.device.type == DEVICE.type and gpu_images.dtype == torch.float64
    for name in params:
        assert torch.equal(gpu_params[name].cpu(), params[name]), name
    scale = images.abs().max().item()
    torch.testing.assert_close(gpu_images.cpu(), images, rtol=1e-6, atol=1e-6 * scale)


def test_a_simulator_moved_to_the_gpu_renders_whole_batches():
    """The chunk is chosen when rendering, from the device the simulator is on: built on the CPU (where 192 x 192
    images go in chunks of 28) and moved to the GPU, it renders a batch of 256 in one chunk."""
    sim = simulator(torch.float32, size=192, observation="none")
    cpu_chunk = CHUNK_PIXELS // 192**2
    assert sim.chunk_for(256) == cpu_chunk == 28
    sim = sim.to(DEVICE)
    sizes = counting_chunks(sim)
    images, _ = sim.sample(256, sim.make_generator(1))
    assert images.shape == (256, 1, 192, 192) and torch.isfinite(images).all()
    assert sizes == ([256] if DEVICE.type == "cuda" else [cpu_chunk] * 9 + [256 - 9 * cpu_chunk])


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize(
    ("chunking", "chunks"),
    [({"chunk_size": 32}, [32, 32, 6]), ({"chunk_size": 5}, [5] * 14), ({"budget_images": 40}, [32, 32, 6])],
    ids=["32", "5", "budget"],
)
def test_chunking_on_the_gpu_equals_one_batch_bit_for_bit(dtype, chunking, chunks):
    """70 lenses (noise and cosmic rays from their seeds) in chunks and as one batch: every element of a GPU
    kernel runs the same code, so any chunking gives the same bits (on a CPU: chunks of whole SIMD blocks)."""
    if DEVICE.type != "cuda" and chunking.get("chunk_size") == 5:
        pytest.skip("on a CPU only chunks of whole SIMD blocks are bit for bit")
    whole = simulator(dtype, size=48).to(DEVICE)
    if "budget_images" in chunking:
        chunking = {"chunk_memory": chunking["budget_images"] * whole.bytes_per_image}
    chunked = simulator(dtype, size=48, **chunking).to(DEVICE)
    sizes = counting_chunks(chunked)
    images, params = whole.sample(70, whole.make_generator(3))
    chunked_images, _ = chunked.sample(70, chunked.make_generator(3))
    assert sizes == chunks
    assert torch.isfinite(images).all()
    assert torch.equal(chunked_images, images)


def test_the_compiled_simulator_on_the_gpu_equals_eager(caplog):
    """torch.compile's kernels (Triton on a GPU) against eager rendering, noiseless and noisy, float32; then a
    second batch size (one more compilation)."""
    compiled = simulator(torch.float32, compile=True).to(DEVICE)
    eager = simulator(torch.float32).to(DEVICE)
    params, seeds = compiled.make_generator(5).draw(compiled.prior, 64, observation=compiled.observation)
    params = {k: v.to(DEVICE) for k, v in params.items()}
    with caplog.at_level(logging.WARNING, logger="lenscnn"):
        fast = compiled.render(params, noise=False)
        fast_noisy = compiled.render(params, noise_seeds=seeds)
        smaller = compiled.render({k: v[:40] for k, v in params.items()}, noise_seeds=seeds[:40])
    assert not [r for r in caplog.records if "compile" in r.getMessage()], "fell back to eager: nothing compiled"
    reference = eager.render(params, noise=False)
    noisy = eager.render(params, noise_seeds=seeds)
    scale = reference.abs().max()
    assert fast.device.type == DEVICE.type and fast.shape == (64, 1, 64, 64)
    assert (fast - reference).abs().max() <= 2e-5 * scale  # float32 re-association only
    assert (fast_noisy - noisy).abs().max() <= 2e-5 * scale
    assert (smaller - noisy[:40]).abs().max() <= 2e-5 * scale
