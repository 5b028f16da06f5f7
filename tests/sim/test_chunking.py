"""Chunking of the Simulator: chunks chosen per device and memory budget at render time, and chunked images
equal to unchunked ones bit for bit (lens ``i`` of a stream is the same whatever the chunking)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from lenscnn.errors import UserError
from lenscnn.sim import Simulator
from lenscnn.sim.byte_sizes import parse_bytes
from lenscnn.sim.simulator import CHUNK_MULTIPLE, CHUNK_PIXELS, WORKING_IMAGES
from tests.fuzzing import one_torch_thread
from tests.helpers import load_conf, make_simulator

DTYPES = {"f32": torch.float32, "f64": torch.float64}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Bit-for-bit equality holds on one thread: ATen splits an operation between threads where the
    size of its tensor says, which moves elements between its vectorised and scalar code."""
    with one_torch_thread():
        yield


def instrument(size: int) -> dict:
    """The quickstart instrument on ``size`` x ``size`` pixels (Gaussian PSF, Gaussian background and shot noise)."""
    return {**load_conf("instrument", "quickstart"), "image_size": size}


def simulator(size: int, dtype: torch.dtype, **kwargs) -> Simulator:
    """The realistic prior (SIE, shear, Sersic source and lens light) with 20 cosmic rays per image, eager."""
    dtype_name = {torch.float32: "float32", torch.float64: "float64"}[dtype]
    return make_simulator(
        instrument(size),
        "realistic",
        observation=load_conf("observation", "cosmic_rays"),
        dtype=dtype_name,
        compile=False,
        **kwargs,
    )


def counting_chunks(sim: Simulator) -> list[int]:
    """The sizes of the chunks ``sim`` renders from now on (recorded as it renders)."""
    sizes: list[int] = []
    render_chunk = sim._render_chunk

    def counted(chunk, seeds):
        sizes.append(next(iter(chunk.values())).shape[0])
        return render_chunk(chunk, seeds)

    sim._render_chunk = counted
    return sizes


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize(
    ("size", "n", "chunking", "chunks"),
    [
        (33, 70, {"chunk_size": 32}, [32, 32, 6]),  # a fixed chunk; 33 x 33 pixels: rows are not whole SIMD vectors
        (33, 70, {"budget_images": 40}, [32, 32, 6]),  # a memory budget of 40 images, rounded to whole blocks
        (150, 70, {}, [32, 32, 6]),  # the automatic CPU chunk of 150 x 150 images: 46 (CHUNK_PIXELS), rounded to 32
    ],
    ids=["fixed", "budget", "auto"],
)
def test_chunked_images_equal_unchunked_bit_for_bit(dtype, size, n, chunking, chunks):
    """The same lenses of a stream (noise and cosmic rays from their seeds) rendered in chunks and as one batch:
    bit for bit the same, float32 and float64 alike."""
    whole = simulator(size, dtype, chunk_size=n)
    if "budget_images" in chunking:
        chunking = {"chunk_memory": chunking["budget_images"] * whole.bytes_per_image}
    chunked = simulator(size, dtype, **chunking)
    sizes = counting_chunks(chunked)
    images, params = whole.sample(n, whole.make_generator(11))
    chunked_images, chunked_params = chunked.sample(n, chunked.make_generator(11))
    assert sizes == chunks
    for name in params:
        assert torch.equal(chunked_params[name], params[name]), name
    assert images.dtype == dtype and torch.isfinite(images).all()
    assert (images != chunked.render(params, noise=False)).float().mean() > 0.99  # both are noisy
    assert torch.equal(chunked_images, images)


def test_the_automatic_chunk_follows_the_device_at_render_time(monkeypatch):
    """CPU: cache-sized chunks (of whole SIMD blocks where they hold one; compiled: at least one block); any
    accelerator: the whole batch. Decided when rendering, from the device the simulator is on then (one moved
    with ``.to("cuda")`` after construction renders as a GPU one)."""
    sim = make_simulator(instrument(192), "quickstart")
    assert sim.chunk_size is None and sim.chunk_memory is None
    cache_sized = CHUNK_PIXELS // 192**2  # 28: the chunk of every device before chunks were chosen per device
    assert cache_sized < CHUNK_MULTIPLE
    assert sim.chunk_for(256) == sim.chunk_for(256, "cpu") == cache_sized  # eager: unchanged
    compiled = make_simulator(instrument(192), "quickstart", compile=True)  # (compiles when it first renders)
    assert compiled.chunk_for(256) == CHUNK_MULTIPLE
    assert make_simulator({**instrument(192), "supersampling": 2}, "quickstart").chunk_for(256) == 7
    assert sim.chunk_for(20) == 20  # a smaller batch: one chunk
    assert sim.chunk_for(256, "cuda") == 256
    assert sim.chunk_for(4096, torch.device("cuda", 1)) == 4096
    assert sim.chunk_for(0) == 1  # an empty batch renders nothing (and does not divide by zero)
    assert make_simulator(instrument(64), "quickstart").chunk_for(1000) == 256  # 2^20 pixels of 64 x 64
    assert make_simulator(instrument(48), "quickstart").chunk_for(1000) == 448  # 455, rounded to whole blocks
    monkeypatch.setattr(Simulator, "device", property(lambda self: torch.device("cuda")))  # as after .to("cuda")
    assert sim.chunk_for(256) == 256


def test_a_memory_budget_caps_the_chunk_on_every_device():
    """``chunk_memory`` bytes hold ``chunk_memory // bytes_per_image`` images (WORKING_IMAGES supersampled
    images each), rounded down to whole SIMD blocks when at least one fits."""
    f32 = make_simulator({**instrument(192), "supersampling": 2}, "quickstart", chunk_memory="1GB")
    assert f32.bytes_per_image == WORKING_IMAGES * 384**2 * 4 == 18_874_368  # float32, 384 x 384 sub-pixels
    assert 10**9 // f32.bytes_per_image == 52  # images the budget holds
    assert f32.chunk_for(4096, "cuda") == 32  # rounded down to whole blocks
    assert f32.chunk_for(52, "cuda") == 52  # the whole batch fits
    assert f32.chunk_for(53, "cuda") == 32
    assert f32.chunk_for(4096, "cpu") == 7  # the budget holds more than the cache-sized CPU chunk
    f64 = make_simulator(instrument(192), "quickstart", dtype="float64", chunk_memory="10GB")
    assert f64.bytes_per_image == WORKING_IMAGES * 192**2 * 8 == 9_437_184
    assert f64.chunk_for(4096, "cuda") == 1056  # 1059 images, rounded down to a multiple of 32
    assert f64.chunk_for(1059, "cuda") == 1059  # the whole batch fits
    assert f64.chunk_for(1060, "cuda") == 1056
    assert f64.chunk_for(4096, "cpu") == 28  # on a CPU the cache-sized chunk is smaller than the budget
    small = make_simulator(instrument(192), "quickstart", chunk_memory=10.5 * WORKING_IMAGES * 192**2 * 4)
    assert small.chunk_for(256, "cuda") == small.chunk_for(256, "cpu") == 10  # less than a block: as allowed
    tiny = make_simulator(instrument(192), "quickstart", chunk_memory=1)
    assert tiny.chunk_for(256, "cuda") == 1  # never less than one image


def test_a_fixed_chunk_size_is_used_on_every_device():
    sim = make_simulator(instrument(192), "quickstart", chunk_size=28, chunk_memory="1KB")
    assert sim.chunk_for(256) == sim.chunk_for(256, "cuda") == 28
    assert sim.chunk_for(10, "cuda") == 10


def test_chunk_settings_from_config():
    cfg = {"instrument": instrument(64), "prior": load_conf("prior", "quickstart")}
    auto = Simulator.from_config({**cfg, "chunk_size": "auto", "chunk_memory": "8GB"})
    assert auto.chunk_size is None and auto.chunk_memory == 8 * 10**9
    assert Simulator.from_config({**cfg, "chunk_size": None, "chunk_memory": "512 MiB"}).chunk_memory == 2**29
    assert Simulator.from_config({**cfg, "chunk_size": 28}).chunk_size == 28
    assert Simulator.from_config({**cfg, "chunk_memory": 4096}).chunk_memory == 4096


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("chunk_size", 0, "simulator.chunk_size must be a positive integer, auto or null, got 0"),
        ("chunk_size", "whole", "simulator.chunk_size must be a positive integer, auto or null, got 'whole'"),
        ("chunk_size", 2.5, "simulator.chunk_size must be a positive integer, auto or null, got 2.5"),
        ("chunk_size", True, "simulator.chunk_size must be a positive integer, auto or null, got True"),
        ("chunk_memory", "8 parsecs", "simulator.chunk_memory must be a number of bytes or a size such as 8GB"),
        ("chunk_memory", 0, "simulator.chunk_memory must be a number of bytes or a size such as 8GB"),
        ("chunk_memory", "-1GB", "simulator.chunk_memory must be a number of bytes or a size such as 8GB"),
        ("chunk_memory", [8], "simulator.chunk_memory must be a number of bytes or a size such as 8GB"),
    ],
)
def test_bad_chunk_settings_are_one_line_user_errors(key, value, message):
    cfg = {"instrument": instrument(64), "prior": load_conf("prior", "quickstart"), key: value}
    with pytest.raises(UserError, match=message) as error:
        Simulator.from_config(cfg)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8GB", 8 * 10**9), ("8gb", 8 * 10**9), ("1.5 GiB", 3 * 2**29), ("2e9", 2 * 10**9), ("100", 100), (1e6, 10**6)],
)
def test_memory_sizes(text, expected):
    assert parse_bytes(text) == expected
