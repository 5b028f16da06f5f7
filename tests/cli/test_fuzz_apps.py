"""Broken inputs end to end: ``lenscnn-predict``, ``lenscnn-eval dataset=`` and ``lenscnn-train
data=file`` stop with one line ``error: ...`` naming the file, exit code 2, no traceback and no
output file. One representative of each fuzzed family (``tests/*/test_fuzz_*.py`` cover the
families through the loader functions); the apps run in this process, one through the real CLI.
"""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from astropy.io import fits

from lenscnn.cli.common import report_user_errors
from lenscnn.io.fits import write_lens_dataset_fits
from lenscnn.io.hdf5 import create_lens_dataset, write_batch
from tests.fuzzing import IMAGE_SIZE, PIXEL_SCALE, TARGETS, one_torch_thread, set_cards, tiny_checkpoint
from tests.helpers import celestial_header, compose_run, run_cli

#: A tiny training on a file (these runs stop at the data).
TINY_FILE = ["data.batch_size=4", "model.net.width=0.25", "trainer.max_epochs=1", "callbacks.rich_progress_bar=null"]


def fits_image() -> bytes:
    buffer = io.BytesIO()
    image = np.random.default_rng(0).normal(0, 0.01, (40, 40)).astype(np.float32)
    fits.PrimaryHDU(image, header=celestial_header(PIXEL_SCALE, 40)).writeto(buffer)
    return buffer.getvalue()


def write_h5(path: Path, n: int = 24) -> Path:
    rng = np.random.default_rng(1)
    with create_lens_dataset(path, n, (1, *IMAGE_SIZE), list(TARGETS), PIXEL_SCALE, "instrument: {}\n") as f:
        images = rng.normal(0, 0.01, (n, 1, *IMAGE_SIZE)).astype(np.float32)
        write_batch(f, 0, images, {name: rng.normal(size=n) for name in TARGETS})
    return path


def edit_h5(path: Path, edit) -> Path:
    write_h5(path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def images_as_group(f: h5py.File) -> None:
    del f["images"]
    f.create_group("images")


def nan_truth(f: h5py.File) -> None:
    f["params/theta_E"][3] = np.nan


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good and broken inputs, one per fuzzed family, by name."""
    root = tmp_path_factory.mktemp("fuzz_apps")
    paths = {name: root / name for name in ("good.ckpt", "good.fits", "good.h5", "garbage.ckpt", "nonsense.ckpt")}
    torch.save(tiny_checkpoint(), paths["good.ckpt"])
    paths["good.fits"].write_bytes(fits_image())
    write_h5(paths["good.h5"])
    paths["garbage.ckpt"].write_bytes(paths["good.ckpt"].read_bytes()[:5000])
    nonsense = tiny_checkpoint()
    nonsense["hyper_parameters"]["image_size"] = "abc"
    torch.save(nonsense, paths["nonsense.ckpt"])
    paths["wcs.fits"] = root / "wcs.fits"  # a celestial axis without its partner
    paths["wcs.fits"].write_bytes(set_cards(fits_image(), [("CTYPE2", "'FREQ'")]))
    paths["truncated.fits"] = root / "truncated.fits"
    paths["truncated.fits"].write_bytes(fits_image()[:4000])
    paths["groups.h5"] = edit_h5(root / "groups.h5", images_as_group)
    paths["nan.h5"] = edit_h5(root / "nan.h5", nan_truth)
    paths["truncated.h5"] = root / "truncated.h5"
    paths["truncated.h5"].write_bytes(paths["good.h5"].read_bytes()[:3000])
    paths["noparams.fits"] = root / "noparams.fits"
    write_lens_dataset_fits(paths["noparams.fits"], np.zeros((4, 1, *IMAGE_SIZE)), {}, PIXEL_SCALE, "")
    with fits.open(paths["noparams.fits"], mode="update") as hdul:
        del hdul["PARAMS"]
    return paths


def app(name: str):
    """The library function of an app (as its Hydra task calls it), with the apps' one-line errors."""
    if name == "predict":
        from lenscnn.cli.predict import predict as function
    elif name == "eval":
        from lenscnn.cli.eval import run as function
    else:
        from lenscnn.cli.train import train as function
    return report_user_errors(function)


CASES = [
    ("predict", "wcs.fits", ["ckpt_path=good.ckpt", "input=wcs.fits"]),
    ("predict", "truncated.fits", ["ckpt_path=good.ckpt", "input=truncated.fits"]),
    ("predict", "groups.h5", ["ckpt_path=good.ckpt", "input=groups.h5"]),
    ("predict", "garbage.ckpt", ["ckpt_path=garbage.ckpt", "input=good.fits"]),
    ("eval", "truncated.h5", ["ckpt_path=good.ckpt", "dataset=truncated.h5"]),
    ("eval", "noparams.fits", ["ckpt_path=good.ckpt", "dataset=noparams.fits"]),
    ("eval", "nonsense.ckpt", ["ckpt_path=nonsense.ckpt", "dataset=good.h5"]),
    ("train", "nan.h5", ["data=file", "data.path=nan.h5", *TINY_FILE]),
    ("train", "groups.h5", ["data=file", "data.path=groups.h5", *TINY_FILE]),
]


@pytest.mark.parametrize(("name", "culprit", "args"), CASES, ids=[f"{a}-{c}" for a, c, _ in CASES])
def test_a_broken_input_stops_the_app_with_one_line_and_no_output(files, tmp_path, capsys, name, culprit, args):
    overrides = [f"{key}={files.get(value, value)}" for key, value in (arg.split("=", 1) for arg in args)]
    out = tmp_path / "run"
    cfg = compose_run(name, out, overrides if name == "train" else [*overrides, "device=cpu"])
    with pytest.raises(SystemExit) as exit_info:
        app(name)(cfg)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], err
    written = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not written, written


def test_the_cli_prints_one_line_without_a_traceback(files, tmp_path):
    out = tmp_path / "run"
    args = [f"ckpt_path={files['good.ckpt']}", f"input={files['wcs.fits']}", f"hydra.run.dir={out}"]
    result = run_cli("predict", args)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "wcs.fits" in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (out / "predictions.csv").exists() and not (out / "plots").exists()
