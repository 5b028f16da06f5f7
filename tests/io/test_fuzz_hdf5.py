"""Fuzzed HDF5 lens files (the ``lenses.h5`` of ``lenscnn-simulate``) fed to the three readers:
``lenscnn-predict input=<file>``, ``lenscnn-eval dataset=<file>`` and training with ``data=file``.

A good file (24 lenses of 1 x 32 x 32 px, five parameters, ``pixel_scale`` and ``config``
attributes) is mutated: datasets missing, renamed, replaced by groups or links, of other shapes,
types and values (NaN, inf, empty), attributes missing or nonsense, bytes truncated or overwritten.
Each case must work or be refused with a one-line :class:`UserError` naming the file, and
write nothing (see :mod:`tests.fuzzing`).
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lenscnn.data.file import FileLensDataModule
from lenscnn.data.normalization import InputNormalizer, TargetScaler
from lenscnn.io.hdf5 import create_lens_dataset, write_batch
from lenscnn.models.regressor import LensRegressor
from tests.fuzzing import (
    IMAGE_SIZE,
    PIXEL_SCALE,
    TARGETS,
    check,
    check_evaluate,
    check_predict,
    damaged,
    fresh_path,
    fuzz_settings,
    tiny_hparams,
    works_or_user_error,
)

#: Module fixtures of tests/fuzzing.py (registered in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread_per_module")

#: A plausible text that is not the format.
IMPOSTOR = b"images,params\n1,2\n"

#: hypothesis examples per test (some tests run more).
EXAMPLES = 20
N = 24
PARAMS = (*TARGETS, "gamma1", "gamma2")


@functools.cache
def good_bytes() -> bytes:
    """24 lenses written as ``lenscnn-simulate`` writes them."""
    rng = np.random.default_rng(2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lenses.h5"
        with create_lens_dataset(path, N, (1, *IMAGE_SIZE), list(PARAMS), PIXEL_SCALE, "instrument: {}\n") as f:
            params = {name: rng.normal(size=N) for name in PARAMS}
            write_batch(f, 0, rng.normal(0, 0.01, (N, 1, *IMAGE_SIZE)).astype(np.float32), params)
        return path.read_bytes()


def train_file(path: Path) -> float | None:
    """What training with ``data=file data.path=<file>`` does with it: the data module, the model
    the data fixes (targets and their moments, input normalisation, image size, pixel scale and
    simulator config, as ``lenscnn.cli.train.build_model`` passes them), a training and a validation step."""
    datamodule = works_or_user_error(lambda: FileLensDataModule(str(path), TARGETS, batch_size=4), path.name)
    if isinstance(datamodule, Exception):
        return None
    moments = works_or_user_error(lambda: (datamodule.target_scaler(), datamodule.input_normalizer()), path.name)
    if isinstance(moments, Exception):
        return None
    model = works_or_user_error(lambda: model_for(datamodule, *moments))  # the backbone's own limits (32 px)
    if isinstance(model, Exception):
        return None
    loss, _, _ = model._step(next(iter(datamodule.train_dataloader())))
    model._step(next(iter(datamodule.val_dataloader())))
    return float(loss.detach())


def model_for(datamodule: FileLensDataModule, scaler: TargetScaler, normalizer: InputNormalizer) -> LensRegressor:
    return LensRegressor(
        net=tiny_hparams()["net"],
        targets=scaler.to_dict(),
        input_normalization=normalizer.to_dict(),
        image_size=list(datamodule.image_size),
        pixel_scale=datamodule.pixel_scale,
        simulator=datamodule.simulator_config,
    )


def check_all_readers(path: Path) -> None:
    check_predict(path, pixel_scale=None)
    check_predict(path, pixel_scale=PIXEL_SCALE, fill_nan=0.0, resample=True)
    check_evaluate(path)
    check(lambda: train_file(path), path)


# -- mutations: ("op", target, argument), applied to a copy of the good file ---------------


def apply(f: h5py.File, edit: tuple) -> None:
    op, name, arg = edit
    if op == "delete":
        if name in f:
            del f[name]
    elif op == "move":
        if name in f and arg not in f:
            f.move(name, arg)
    elif op == "replace":
        if name in f:
            del f[name]
        if arg is None:
            f.create_group(name)
        else:
            f.create_dataset(name, data=arg)
    elif op == "link":
        if name in f:
            del f[name]
        f[name] = h5py.ExternalLink("missing.h5", "/images") if arg == "external" else h5py.SoftLink(arg)
    elif op == "attr":
        f.attrs[name] = arg
    elif op == "delattr" and name in f.attrs:
        del f.attrs[name]


def mutated(workdir: Path, edits: list[tuple]) -> Path:
    path = fresh_path(workdir, "lenses.h5")
    path.write_bytes(good_bytes())
    with h5py.File(path, "r+") as f:
        for edit in edits:
            with contextlib.suppress(ValueError, TypeError, KeyError, OSError, RuntimeError):  # h5py refuses it
                apply(f, edit)
    return path


names = st.sampled_from(["images", "params", *(f"params/{p}" for p in PARAMS[:3])])


def noise(shape: tuple[int, ...], dtype, specials: list[float]) -> np.ndarray:
    data = np.random.default_rng(len(shape)).normal(0, 0.01, shape)
    flat = data.reshape(-1)
    for k, value in enumerate(specials[: flat.size]):
        flat[(k * 7919) % flat.size] = value
    if np.dtype(dtype).kind in "iub":
        data = np.nan_to_num(data * 100, posinf=100, neginf=-100)
    with np.errstate(over="ignore", invalid="ignore"):
        return data.astype(dtype)


IMAGE_SHAPES = [
    (N, 1, 32, 32),
    (N, 32, 32),
    (32, 32),
    (N,),
    (),
    (N, 2, 32, 32),
    (N, 1, 32, 32, 1),
    (0, 1, 32, 32),
    (N, 1, 4, 4),
    (N, 1, 32, 48),
    (12, 1, 32, 32),
    (1, 1, 32, 32),
    (N, 1, 0, 32),
]
PARAM_SHAPES = [(N,), (), (N, 2), (12,), (0,), (N + 1,), (1,)]
NUMERIC = ["float32", "float64", "float16", "int16", "int64", "uint8", "bool", "complex64"]
SPECIALS = [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e38, 0.0]


@st.composite
def arrays(draw, shapes: list[tuple[int, ...]]) -> np.ndarray:
    shape = draw(st.sampled_from(shapes))
    kind = draw(st.sampled_from([*NUMERIC, "bytes", "str", "compound"]))
    if kind == "bytes":
        return np.full(shape, b"abc", dtype="S3")
    if kind == "str":
        return np.full(shape, "abc", dtype=h5py.string_dtype())
    if kind == "compound":
        return np.zeros(shape, dtype=[("a", "f4"), ("b", "i4")])
    return noise(shape, kind, draw(st.lists(st.sampled_from(SPECIALS), max_size=3)))


@fuzz_settings(EXAMPLES)
@given(
    edits=st.lists(
        st.one_of(
            st.tuples(st.just("delete"), names, st.none()),
            st.tuples(st.just("move"), names, st.sampled_from(["image", "parameters", "params/theta_e", "x/y"])),
            st.tuples(st.just("replace"), names, st.none()),  # a group where a dataset belongs
            st.tuples(st.just("replace"), st.just("params"), st.just(np.zeros(N))),  # a dataset, not a group
            st.tuples(st.just("link"), names, st.sampled_from(["external", "/nowhere", "/params", "/images"])),
            st.tuples(st.just("replace"), st.sampled_from(["extra", "params/extra"]), st.just(np.zeros(3))),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_missing_renamed_and_misplaced_datasets(workdir, edits):
    check_all_readers(mutated(workdir, edits))


@fuzz_settings(2 * EXAMPLES)
@given(images=arrays(IMAGE_SHAPES))
def test_images_of_other_shapes_types_and_values(workdir, images):
    check_all_readers(mutated(workdir, [("replace", "images", images)]))


@fuzz_settings(2 * EXAMPLES)
@given(
    edits=st.lists(
        st.tuples(st.just("replace"), st.sampled_from([f"params/{p}" for p in PARAMS]), arrays(PARAM_SHAPES)),
        min_size=1,
        max_size=3,
    )
)
def test_parameters_of_other_shapes_types_and_values(workdir, edits):
    check_all_readers(mutated(workdir, edits))


ATTRIBUTE_VALUES = st.sampled_from(
    [0.08, 0.16, 0.0, -0.08, np.nan, np.inf, 1e300, "0.08", "abc", b"0.08", True, np.array([0.08, 0.08]), 0.8, 80]
    + ["", "instrument: {}", "[1, 2", "- a\n- b", "{a: !!python/object:os.system x}", "x: [", b"instrument: {}"]
)


@fuzz_settings(EXAMPLES)
@given(
    edits=st.lists(
        st.one_of(
            st.tuples(st.just("attr"), st.sampled_from(["pixel_scale", "config"]), ATTRIBUTE_VALUES),
            st.tuples(st.just("delattr"), st.sampled_from(["pixel_scale", "config"]), st.none()),
        ),
        min_size=1,
        max_size=2,
    )
)
def test_attributes_missing_or_nonsense(workdir, edits):
    check_all_readers(mutated(workdir, edits))


@fuzz_settings(EXAMPLES)
@given(data=st.data())
def test_truncated_and_corrupted_files(workdir, data):
    path = fresh_path(workdir, "lenses.h5")
    path.write_bytes(data.draw(damaged(good_bytes(), IMPOSTOR)))
    check_all_readers(path)


def test_the_good_file_works(workdir):
    path = fresh_path(workdir, "lenses.h5")
    path.write_bytes(good_bytes())
    assert check_predict(path).mean.shape == (N, len(TARGETS))
    assert check_evaluate(path).summary.n == N
    assert np.isfinite(train_file(path))
