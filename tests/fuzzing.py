"""Shared pieces of the fuzz suites (``tests/*/test_fuzz_*.py``): hypothesis settings, the
"works or one-line UserError" property, a tiny model and its checkpoint, raw FITS card editing.

Every fuzz test feeds mutated files to the functions the apps call and accepts exactly two
outcomes: it works, or it stops with a :class:`UserError` whose message is one line naming the
file. Anything else (an astropy/h5py/torch exception, a ValueError, KeyError, ...) fails the test.
Run with ``--hypothesis-show-statistics`` to see how many cases each test ran.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import itertools
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from lenscnn.errors import UserError
from lenscnn.evaluation.datasets import file_set
from lenscnn.evaluation.pipeline import evaluate
from lenscnn.models.checkpoint import model_from_checkpoint
from lenscnn.models.ensemble import Ensemble
from lenscnn.models.regressor import LensRegressor
from lenscnn.preparation.pipeline import Preparation, prepare, read_file

T = TypeVar("T")

#: The model geometry every fuzzed input is shaped for.
IMAGE_SIZE = (32, 32)
PIXEL_SCALE = 0.08
TARGETS = ("theta_E", "e1", "e2", "center_x", "center_y")


def fuzz_settings(max_examples: int) -> settings:
    """Reproducible (derandomized, no example database) and free of timing checks: the suites
    run the same cases on every machine and in CI."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread: the tiny models run 10x faster than with threads fighting over shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def works_or_user_error(action: Callable[[], T], *names: str) -> T | UserError:
    """Run ``action``: its result, or the :class:`UserError` it raised after checking that the
    message is one line naming one of ``names`` (the file at fault). Any other exception propagates."""
    try:
        return action()
    except UserError as exc:
        message = str(exc)
        assert "\n" not in message and message.strip(), f"not a one-line message: {message!r}"
        if names:
            assert any(name in message for name in names), f"the message names none of {names}: {message!r}"
        return exc


_counter = itertools.count()


def fresh_path(directory: Path, name: str) -> Path:
    """A new file name in ``directory`` per hypothesis example (``<k>_<name>``, suffix kept)."""
    return directory / f"{next(_counter)}_{name}"


def files_in(directory: Path) -> set[Path]:
    return set(directory.rglob("*"))


# -- a tiny model -------------------------------------------------------------------------


def tiny_hparams(**changes: Any) -> dict[str, Any]:
    """Hyperparameters of a small ``fast`` model reading 32 x 32 px at 0.08"/px (the fuzz geometry)."""
    hparams = {
        "net": {"name": "fast", "widths": [4, 8, 8, 8], "blocks": [0, 0, 0, 0], "hidden": 16, "dropout": 0.1},
        "targets": {"names": list(TARGETS), "mean": [1.0, 0.0, 0.0, 0.0, 0.0], "std": [0.3, 0.1, 0.1, 0.1, 0.1]},
        "input_normalization": {"softening": 0.01, "offset": 1.0, "scale": 2.0},
        "loss": "gaussian_nll",
        "image_size": list(IMAGE_SIZE),
        "pixel_scale": PIXEL_SCALE,
        "simulator": {},
    }
    return {**hparams, **changes}


def tiny_checkpoint(seed: int = 0, **changes: Any) -> dict[str, Any]:
    """A weights-only checkpoint dictionary of the tiny model (random weights)."""
    torch.manual_seed(seed)
    hparams = tiny_hparams(**changes)
    model = LensRegressor(**hparams)
    return {"hyper_parameters": hparams, "state_dict": model.state_dict()}


@functools.cache
def tiny_ensemble() -> Ensemble:
    """The tiny model as a one-member ensemble (as ``lenscnn-predict``/``lenscnn-eval`` load it)."""
    return Ensemble([model_from_checkpoint(tiny_checkpoint())], sources=["tiny"])


# -- what the apps do with an input file ----------------------------------------------------


def predict_file(path: Path, hdu: int | str = 0, resample=False, fill_nan=0.0, pixel_scale=None):
    """What ``lenscnn-predict`` does with one input file: read, prepare, predict, map the centre to the sky."""
    ensemble = tiny_ensemble()
    settings = Preparation(hdu=hdu, resample=resample, fill_nan=fill_nan, pixel_scale=pixel_scale)
    items = []
    for cutout, variance, flagged in read_file(path, settings):
        prepared = prepare(cutout, settings, ensemble.image_size, ensemble.pixel_scale, variance, flagged)
        items.append((cutout, prepared))
    if not items:
        return None
    prediction = ensemble.predict(torch.stack([p.image for _, p in items]))
    for k, (cutout, prepared) in enumerate(items):
        centre = prediction.mean[k, 3:5].numpy() / ensemble.pixel_scale + (np.array(IMAGE_SIZE) - 1) / 2
        col, row = prepared.to_input_pixels(centre[0], centre[1])
        if cutout.wcs is not None:
            cutout.wcs.pixel_to_world_values(col, row)
    return prediction


def evaluate_file(path: Path):
    """What ``lenscnn-eval dataset=<file>`` does with it: read the set, predict and score it."""
    return evaluate(tiny_ensemble(), file_set(path), batch_size=4)


def check(action: Callable[[], Any], path: Path) -> Any:
    """``action`` on the file ``path`` works or raises a one-line UserError naming it; it writes no file."""
    before = files_in(path.parent)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = works_or_user_error(action, path.name)
    assert files_in(path.parent) == before, f"reading {path.name} wrote a file"
    return result


def check_predict(path: Path, **options: Any) -> Any:
    return check(lambda: predict_file(path, **options), path)


def check_evaluate(path: Path) -> Any:
    return check(lambda: evaluate_file(path), path)


# -- raw FITS headers ---------------------------------------------------------------------

CARD, BLOCK = 80, 2880


def split_fits(raw: bytes) -> tuple[list[str], bytes]:
    """The header cards (without END) of the first HDU of a FITS file, and the bytes after its header."""
    cards = []
    for offset in range(0, len(raw), CARD):
        card = raw[offset : offset + CARD].decode("latin-1")
        if card.startswith("END") and card[3:].strip() == "":
            end = -(-(offset + CARD) // BLOCK) * BLOCK
            return cards, raw[end:]
        cards.append(card)
    raise AssertionError("no END card")


def join_fits(cards: list[str], rest: bytes) -> bytes:
    """Header cards and the bytes that follow back into a FITS file (header padded to blocks)."""
    text = "".join(c.ljust(CARD)[:CARD] for c in [*cards, "END"])
    text += " " * (-len(text) % BLOCK)
    return text.encode("latin-1") + rest


def set_cards(raw: bytes, edits: list[tuple[str, str | None]]) -> bytes:
    """Edit the first header of a FITS file as text: ``(KEY, value)`` writes ``KEY = value``
    verbatim (any text, also nonsense), ``(KEY, None)`` deletes the keyword."""
    cards, rest = split_fits(raw)
    for key, value in edits:
        at = [i for i, c in enumerate(cards) if c[:8].rstrip() == key]
        if value is None:
            cards = [c for i, c in enumerate(cards) if i not in at]
            continue
        card = f"{key:<8}= {value:>20}"
        if at:
            cards[at[0]] = card
        else:
            cards.append(card)
    return join_fits(cards, rest)


def header_value_texts() -> st.SearchStrategy[str]:
    """Values as FITS card text: numbers (also NaN, inf, overflowing), strings, logicals, nothing."""
    numbers = st.one_of(
        st.integers(-3, 70).map(str),
        st.sampled_from(["0", "-1", "1E-30", "1E30", "1E400", "NAN", "nan", "inf", "-INF", "2.2E-5", "-2.2E-5"]),
        st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda v: f"{v:.7E}"),
    )
    strings = st.sampled_from(
        ["'abc'", "''", "'RA---TAN'", "'DEC--TAN'", "'deg'", "'1.0'", "'", "T", "F", "", "(1, 2)"]
    )
    return st.one_of(numbers, strings)


@st.composite
def damaged(draw: Callable, content: bytes, impostor: bytes) -> bytes:
    """``content`` truncated, overwritten in places, appended to, gzipped (and truncated), emptied,
    or replaced by ``impostor`` (a plausible text that is not the format)."""
    how = draw(st.sampled_from(["truncate", "overwrite", "append", "gzip", "gzip-truncate", "empty", "text"]))
    if how == "truncate":
        return content[: draw(st.integers(0, len(content) - 1))]
    if how == "overwrite":
        out = bytearray(content)
        for _ in range(draw(st.integers(1, 8))):
            start = draw(st.integers(0, len(out) - 1))
            out[start : start + 8] = draw(st.binary(min_size=1, max_size=8))
        return bytes(out)
    if how == "append":
        return content + draw(st.binary(min_size=1, max_size=3000))
    if how == "gzip":
        return gzip.compress(content)
    if how == "gzip-truncate":
        packed = gzip.compress(content)
        return packed[: draw(st.integers(0, len(packed) - 1))]
    if how == "empty":
        return b""
    return impostor


@pytest.fixture(scope="module")
def one_thread_per_module() -> Iterator[None]:
    """A fuzz module's tiny models on one torch thread (``pytestmark = usefixtures(...)``)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A directory for the files one fuzz module writes."""
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
