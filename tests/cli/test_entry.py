"""Console entry points answer a typo, a bad config value and ``--help`` before importing torch or
Lightning (seconds of imports): the command line is checked first."""

import re
import subprocess
import sys

import pytest

PROBE = """
import sys
sys.argv = ["lenscnn-{app}", *{args!r}]
from lenscnn.cli import entry
try:
    entry.{function}()
except SystemExit as exit:
    code = exit.code
heavy = sorted(m for m in ("torch", "pytorch_lightning", "lightning", "matplotlib.pyplot") if m in sys.modules)
print("exit", code, "heavy", heavy)
"""


def probe(app: str, function: str, args: list[str]) -> subprocess.CompletedProcess:
    code = PROBE.format(app=app, function=function, args=args)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("app", "function", "args", "error"),
    [
        ("train", "train", ["modle=fast"], "error: no config key 'modle'; did you mean 'model'?"),
        ("eval", "evaluate", ["ensemble=nope"], "error: In 'eval': Could not find 'ensemble/nope'"),
        ("predict", "predict", ["inptu=x.fits"], "error: no config key 'inptu'; did you mean 'input'?"),
    ],
)
def test_bad_command_line_answers_before_heavy_imports(app, function, args, error):
    result = probe(app, function, args)
    assert result.stderr.startswith(error), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.strip().endswith("exit 2 heavy []")


def test_help_answers_before_heavy_imports():
    result = probe("train", "train", ["--help"])
    assert result.stdout.startswith("lenscnn-train: train a CNN")
    assert "== Configuration groups ==" in result.stdout and "model:" in result.stdout
    assert result.stdout.strip().endswith("exit 0 heavy []"), result.stdout[-300:]


def help_groups(text: str) -> set[str]:
    """The config groups a ``--help`` lists."""
    listed = text.split("== Configuration groups ==")[1].split("== Keys ==")[0]
    return {line.split(":")[0] for line in listed.splitlines()[2:] if ": " in line}


#: The config groups of each app's own config (conf/<app>.yaml).
APP_GROUPS = {
    "train": {"callbacks", "colours", "data", "debug", "experiment", "hparams_search", "instrument", "logger"}
    | {"model", "observation", "paths", "prior", "trainer"},
    "eval": {"catalog", "ensemble", "instrument", "logger", "observation", "paths", "preparation", "prior"},
    "predict": {"ensemble", "paths", "preparation"},
    "refine": {"instrument", "paths", "preparation", "prior"},
    "simulate": {"colours", "instrument", "observation", "paths", "prior"},
    "export": {"ensemble", "paths"},
    "galaxies": {"paths"},
}


@pytest.mark.parametrize(
    ("app", "function", "what"),
    [
        ("train", "train", "train a CNN"),
        ("eval", "evaluate", "score a checkpoint or an ensemble"),
        ("predict", "predict", "estimate lens parameters"),
        ("refine", "refine", "fit lenstronomy lens models"),
        ("simulate", "simulate", "render simulated lenses"),
        ("export", "export", "write weights-only copies"),
        ("galaxies", "galaxies", "build (or check) a real-galaxy source library"),
    ],
)
def test_help_says_what_the_app_does_and_lists_only_its_config_groups(app, function, what):
    result = probe(app, function, ["--help"])
    assert result.stdout.startswith(f"lenscnn-{app}: {what}"), result.stdout[:300]
    assert help_groups(result.stdout) == APP_GROUPS[app], result.stdout
    assert "== Config ==" in result.stdout and "task_name:" in result.stdout  # the composed config follows
    assert result.stdout.strip().endswith("exit 0 heavy []"), result.stdout[-300:]


def test_help_says_what_each_key_means():
    """The app's keys and those of its top-level groups (predict's preparation) with their comments."""
    text = probe("predict", "predict", ["--help"]).stdout
    keys = text.split("== Keys ==")[1].split("== Config ==")[0]
    assert "# conf/predict.yaml" in keys and "# conf/preparation/default.yaml" in keys
    assert re.search(r"^symmetries: null +# 1 \| 8: average over the image's 8 flips", keys, re.M), keys
    assert re.search(r"^hdu: auto +# FITS HDU of the images: auto \(SCI", keys, re.M), keys
    assert "defaults:" not in keys and "lenscnn-predict ckpt_path=MODEL.ckpt" not in keys  # not the usage lines
    # a group option that is not at the top level is left to the composed config
    assert "# conf/paths/" not in keys


@pytest.mark.parametrize("args", [["prior=ensai", "-h"], ["--help", "prior=ensai", "n=3"]])
def test_help_takes_overrides_before_or_after_the_flag(args):
    result = probe("simulate", "simulate", args)
    assert result.stdout.startswith("lenscnn-simulate: ")
    assert help_groups(result.stdout) == APP_GROUPS["simulate"]
    assert "exit 0" in result.stdout
