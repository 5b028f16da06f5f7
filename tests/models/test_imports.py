"""Importing the models (to load a checkpoint, say) does not import the data modules, the simulator,
its galaxy libraries or h5py: the package faces of ``lenscnn.data`` and ``lenscnn.sim`` are lazy."""

from __future__ import annotations

import json
import subprocess
import sys

#: Modules that only training on simulated or file data (or simulating) needs.
HEAVY = (
    "lenscnn.data.datamodule",
    "lenscnn.data.file",
    "lenscnn.data.streams",
    "lenscnn.sim.simulator",
    "lenscnn.sim.observation",
    "lenscnn.sim.prior",
    "lenscnn.sim.galaxies",
    "lenscnn.sim.galaxies.library",
    "lenscnn.io.hdf5",
    "lenscnn.io.fits",
    "h5py",
    "astropy",
    "omegaconf",
)


#: What loading a checkpoint or an ensemble imports, step by step.
MODEL_IMPORTS = (
    ("lenscnn.models", "lenscnn.models.checkpoint"),
    ("lenscnn.models.regressor",),
    ("lenscnn.models.ensemble",),
)


def modules_after_each(steps: tuple[tuple[str, ...], ...]) -> list[set[str]]:
    """``sys.modules`` of one fresh interpreter after each step of imports (cumulative)."""
    code = (
        "import importlib, json, sys\n"
        f"for step in {[list(s) for s in steps]!r}:\n"
        "    for m in step: importlib.import_module(m)\n"
        "    print(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return [set(json.loads(line)) for line in result.stdout.splitlines()[-len(steps) :]]


def test_models_import_no_data_or_simulator():
    """One interpreter imports the steps in turn: what is loaded after a step is a superset of what the
    step alone loads, so no heavy module after the last step means none for any step alone."""
    for step, loaded in zip(MODEL_IMPORTS, modules_after_each(MODEL_IMPORTS), strict=True):
        assert set(step) <= loaded
        assert sorted(loaded.intersection(HEAVY)) == [], f"after importing {step}"


def test_package_faces_still_give_their_names():
    code = """
import sys
from lenscnn.data import FileLensDataModule, InputNormalizer, LensDataModule, TargetScaler
from lenscnn.sim import Distribution, Instrument, Prior, Simulator, func
import lenscnn.data, lenscnn.sim
assert LensDataModule.__module__ == "lenscnn.data.datamodule"
assert lenscnn.sim.Simulator is Simulator and lenscnn.sim.func.__name__ == "lenscnn.sim.func"
assert set(lenscnn.data.__all__) <= set(dir(lenscnn.data)) and set(lenscnn.sim.__all__) <= set(dir(lenscnn.sim))
try:
    lenscnn.sim.Nope
except AttributeError as exc:
    assert "Nope" in str(exc)
else:
    raise AssertionError("lenscnn.sim.Nope")
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
