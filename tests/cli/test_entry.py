"""Console entry points answer a typo, a bad config value and ``--help`` before importing torch or
Lightning (seconds of imports): the command line is checked first."""

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
    assert result.stdout.startswith("lenscnn-train is powered by Hydra.")
    assert "== Configuration groups ==" in result.stdout and "model:" in result.stdout
    assert result.stdout.strip().endswith("exit 0 heavy []"), result.stdout[-300:]
