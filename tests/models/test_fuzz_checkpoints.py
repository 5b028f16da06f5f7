"""Fuzzed checkpoints and calibration files, loaded the way ``lenscnn-predict``/``lenscnn-eval``
load models (``Ensemble.from_checkpoints``, ``load_regressor``) and then used for a prediction.

A good weights-only checkpoint of a tiny model is mutated: truncated or overwritten bytes, random
pickles (also ones that would run code if unpickled unsafely), wrong top-level keys, nonsense
hyperparameters, state dicts that do not fit (missing, extra, reshaped, retyped, NaN tensors),
another model's weights, broken calibration records. Each case must load and predict, or be
refused with a one-line :class:`UserError` naming the file (see :mod:`tests.fuzzing`).
"""

from __future__ import annotations

import copy
import functools
import io
import json
import math
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lenscnn.models.checkpoint import file_digest, load_regressor
from lenscnn.models.ensemble import Ensemble
from lenscnn.models.regressor import LensRegressor
from tests.fuzzing import (
    TARGETS,
    check,
    damaged,
    fresh_path,
    fuzz_settings,
    tiny_checkpoint,
    tiny_hparams,
)

#: Module fixtures of tests/fuzzing.py (registered in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread_per_module")

#: A plausible text that is not the format.
IMPOSTOR = b"hyper_parameters: {}\nstate_dict: {}\n"

#: hypothesis examples per test (some tests run more).
EXAMPLES = 20
PRETRAINED = Path(__file__).parents[2] / "src" / "lenscnn" / "pretrained" / "survey" / "member_1.pt"


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@functools.cache
def good_bytes() -> bytes:
    return saved(tiny_checkpoint())


def good() -> dict:
    return copy.deepcopy(tiny_checkpoint())


def write(workdir: Path, content: bytes, name: str = "model.ckpt") -> Path:
    path = fresh_path(workdir, name)
    path.write_bytes(content)
    return path


def use(ensemble: Ensemble) -> None:
    """Predict two images of the model's size (skipped for absurd sizes, which no input has)."""
    h, w = ensemble.image_size
    if 0 < h * w <= 256 * 256:
        ensemble.predict(torch.zeros(2, 1, h, w))


def load_and_predict(path: Path, calibration: Path | None = None, members: tuple[Path, ...] = ()) -> None:
    use(Ensemble.from_checkpoints([*members, path], calibration))
    if not members:
        load_regressor(path)


def check_checkpoint(path: Path, **kwargs) -> None:
    check(lambda: load_and_predict(path, **kwargs), path)


# -- damaged files and arbitrary pickles ------------------------------------------------------


@fuzz_settings(EXAMPLES)
@given(data=st.data())
def test_truncated_and_corrupted_files(workdir, data):
    check_checkpoint(write(workdir, data.draw(damaged(good_bytes(), IMPOSTOR))))


class RunsCode:
    """Unpickling this calls ``print``: a weights-only load must refuse it, never call it."""

    def __reduce__(self):
        return (print, ("UNSAFE UNPICKLING",))


plain = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.binary(max_size=8)),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["hyper_parameters", "state_dict", "a"]), children, max_size=3),
    ),
    max_leaves=8,
)
unusual = st.sampled_from(
    [RunsCode(), {1, 2}, 1 + 2j, OrderedDict(a=1), range(3), print, Path("x"), torch.zeros(2), b"\x00"]
)


@fuzz_settings(EXAMPLES)
@given(obj=st.one_of(plain, unusual), how=st.sampled_from(["pickle", "torch.save", "legacy torch.save"]))
def test_arbitrary_pickles(workdir, capfd, obj, how):
    if how == "pickle":
        content = pickle.dumps(obj)
    else:
        buffer = io.BytesIO()
        torch.save(obj, buffer, _use_new_zipfile_serialization=how == "torch.save")
        content = buffer.getvalue()
    check_checkpoint(write(workdir, content))
    assert "UNSAFE UNPICKLING" not in capfd.readouterr().out


# -- the dictionary: top-level keys, hyperparameters, state dict ------------------------------

NASTY = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([-1, 0, 1, 2, 3, 7, 64, 10**12]),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.5, 0.5, 1e300]),
    st.text(max_size=6),
    st.lists(st.sampled_from([-1, 0, 1, 4, 8, 10**12, 0.5, "a"]), max_size=5),
    st.dictionaries(st.sampled_from(["name", "names", "mean", "a"]), st.sampled_from([1, "fast", [1.0]]), max_size=2),
    st.just(torch.zeros(2)),
)


@fuzz_settings(EXAMPLES)
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(["hyper_parameters", "state_dict", "calibration", "epoch"]), st.none() | NASTY),
        min_size=1,
        max_size=2,
    ),
    rename=st.booleans(),
)
def test_wrong_top_level_keys(workdir, edits, rename):
    checkpoint = good()
    for key, value in edits:
        if value is None:
            checkpoint.pop(key, None)
        else:
            checkpoint[key] = value
    if rename and "state_dict" in checkpoint:
        checkpoint["model_state"] = checkpoint.pop("state_dict")
    check_checkpoint(write(workdir, saved(checkpoint)))


HPARAM_PATHS = [
    ("net",),
    ("net", "name"),
    ("net", "widths"),
    ("net", "blocks"),
    ("net", "hidden"),
    ("net", "dropout"),
    ("net", "width"),
    ("net", "head_grid"),
    ("net", "bogus"),
    ("targets",),
    ("targets", "names"),
    ("targets", "mean"),
    ("targets", "std"),
    ("input_normalization",),
    ("input_normalization", "softening"),
    ("input_normalization", "scale"),
    ("loss",),
    ("nll_beta",),
    ("image_size",),
    ("pixel_scale",),
    ("simulator",),
    ("optimizer",),
    ("scheduler",),
    ("compile",),
    ("channels_last",),
    ("bogus",),
]


def set_path(tree: dict, path: tuple[str, ...], value) -> None:
    """Set (``value``) or delete (``None``) ``tree[path[0]][path[1]]...``, if its parents are dicts."""
    for key in path[:-1]:
        tree = tree.get(key) if isinstance(tree, dict) else None
    if not isinstance(tree, dict):
        return
    if value is None:
        tree.pop(path[-1], None)
    else:
        tree[path[-1]] = value


@fuzz_settings(3 * EXAMPLES)
@given(edits=st.lists(st.tuples(st.sampled_from(HPARAM_PATHS), st.none() | NASTY), min_size=1, max_size=3))
def test_nonsense_hyperparameters(workdir, edits):
    checkpoint = good()
    for path, value in edits:
        set_path(checkpoint["hyper_parameters"], path, value)
    check_checkpoint(write(workdir, saved(checkpoint)))


STATE_KEYS = sorted(tiny_checkpoint()["state_dict"])


@st.composite
def state_edits(draw) -> tuple:
    key = draw(st.sampled_from([*STATE_KEYS, "extra.weight"]))
    op = draw(st.sampled_from(["drop", "reshape", "retype", "value", "nan", "rekey"]))
    if op == "reshape":
        return op, key, draw(st.sampled_from([(0,), (1,), (3, 3), (2, 2, 2, 2), ()]))
    if op == "retype":
        return op, key, draw(st.sampled_from([torch.int64, torch.float16, torch.bool, torch.complex64, torch.uint8]))
    if op == "value":
        return op, key, draw(NASTY)
    if op == "rekey":
        return op, key, draw(st.sampled_from([0, "", "model." + key, key.replace("net.", "net._orig_mod."), None]))
    return op, key, None


def edit_state(state: dict, edit: tuple) -> None:
    op, key, arg = edit
    if key not in state and op != "value":
        return
    if op == "drop":
        del state[key]
    elif op == "reshape":
        state[key] = torch.zeros(arg)
    elif op == "retype":
        state[key] = state[key].to(arg)
    elif op == "value":
        state[key] = arg
    elif op == "nan":
        if state[key].is_floating_point() and state[key].numel():
            state[key].view(-1)[0] = math.nan
    elif op == "rekey":
        state[arg] = state.pop(key)


@fuzz_settings(2 * EXAMPLES)
@given(edits=st.lists(state_edits(), min_size=1, max_size=3))
def test_state_dicts_that_do_not_fit(workdir, edits):
    checkpoint = good()
    for edit in edits:
        edit_state(checkpoint["state_dict"], edit)
    check_checkpoint(write(workdir, saved(checkpoint)))


@functools.cache
def other_models() -> dict[str, dict]:
    """Checkpoints of other models: the shipped pretrained member, a ResNet, an ``mse`` model."""
    pretrained = torch.load(PRETRAINED, map_location="cpu", weights_only=True)
    resnet_hparams = tiny_hparams(net={"name": "resnet", "depth": 18, "width": 4})
    mse_hparams = tiny_hparams(loss="mse")
    return {
        "pretrained": pretrained,
        "resnet": {"hyper_parameters": resnet_hparams, "state_dict": LensRegressor(**resnet_hparams).state_dict()},
        "mse": {"hyper_parameters": mse_hparams, "state_dict": LensRegressor(**mse_hparams).state_dict()},
    }


@fuzz_settings(EXAMPLES)
@given(
    other=st.sampled_from(["pretrained", "resnet", "mse"]),
    take=st.sampled_from(["state_dict", "hyper_parameters", "both", "merged state"]),
)
def test_another_models_weights(workdir, other, take):
    checkpoint, theirs = good(), copy.deepcopy(other_models()[other])
    if take in ("state_dict", "both"):
        checkpoint["state_dict"] = theirs["state_dict"]
    if take in ("hyper_parameters", "both"):
        checkpoint["hyper_parameters"] = theirs["hyper_parameters"]
    if take == "merged state":
        checkpoint["state_dict"] = {**checkpoint["state_dict"], **theirs["state_dict"]}
    check_checkpoint(write(workdir, saved(checkpoint)))


# -- calibration records --------------------------------------------------------------------

SCALES = st.one_of(
    NASTY,
    st.fixed_dictionaries({name: NASTY for name in TARGETS}),
    st.dictionaries(st.sampled_from([*TARGETS, "gamma1"]), st.floats(0.5, 2.0), max_size=6),
)


@fuzz_settings(EXAMPLES)
@given(
    record=st.one_of(
        NASTY,
        st.fixed_dictionaries({"sigma_scale": SCALES}),
        st.fixed_dictionaries({"sigma_scale": st.just(dict.fromkeys(TARGETS, 1.2)), "mc_samples": NASTY}),
    )
)
def test_calibration_in_a_checkpoint(workdir, record):
    checkpoint = good()
    checkpoint["calibration"] = record
    check_checkpoint(write(workdir, saved(checkpoint)))


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


@fuzz_settings(EXAMPLES)
@given(
    content=st.one_of(
        st.text(max_size=30),
        json_values.map(json.dumps),
        st.fixed_dictionaries({"members": NASTY | st.just("digests"), "sigma_scale": SCALES}).map(
            lambda r: json.dumps(r, default=str)
        ),
    )
)
def test_calibration_file_of_an_ensemble(workdir, content):
    """A two-member ensemble reads ``calibration.json``: any text, any JSON, or a record for these
    members (``"digests"``: the members' real digests) with nonsense scales."""
    first, second = write(workdir, good_bytes()), write(workdir, saved(tiny_checkpoint(seed=1)))
    digests = json.dumps([file_digest(first), file_digest(second)])
    calibration = write(workdir, content.replace('"digests"', digests).encode(), "calibration.json")
    check(lambda: load_and_predict(second, calibration, members=(first,)), calibration)


@fuzz_settings(EXAMPLES // 2)
@given(
    metrics=st.one_of(
        st.text(max_size=20),
        json_values.map(json.dumps),
        st.sampled_from(["missing.ckpt", "", "\u0000", "checkpoints", "checkpoints/last.ckpt"]).map(
            lambda best: json.dumps({"best_checkpoint": best})
        ),
    )
)
def test_run_directory_with_a_broken_metrics_file(workdir, metrics):
    """``ckpt_path=<run dir>`` reads ``metrics.json`` for the best checkpoint, else ``checkpoints/last.ckpt``."""
    run = fresh_path(workdir, "run")
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(good_bytes())
    (run / "metrics.json").write_text(metrics.replace("checkpoints", str(run / "checkpoints")))
    check(lambda: load_and_predict(run), run / "metrics.json")


def test_the_good_checkpoint_works(workdir):
    path = write(workdir, good_bytes())
    load_and_predict(path)
    assert Ensemble.from_checkpoints([path]).target_names == TARGETS
