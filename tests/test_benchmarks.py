"""Every benchmark runs at its tiny size (``--tiny``: the same code path in seconds) and prints its table, so
none breaks unseen: the scripts are found by glob, and one without an entry in :data:`RUNS` is still run
with ``--tiny`` and must print a ratio.

Each script runs as ``python benchmarks/<script> --tiny`` would, in a process of its own: a fork of one
process that imported torch, Lightning and lenscnn once (``tests/benchmark_zygote.py``), which saves each
script the ~7 s of imports of a new interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
#: A number as the benchmarks print them (``1,245``, ``0.48``, ``1.2e-15``, ``nan``, ``inf``).
NUMBER = r"[-+]?(?:nan|inf|\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?)"
#: What a script without an entry must print: a ratio (``0.48x``) or a ``ratio`` column.
ANY_RATIO = rf"(?P<ratio>{NUMBER})x\b|\bratio\b"


@dataclass(frozen=True)
class Run:
    """One tiny run of a benchmark: its arguments, what its output must match (every pattern; the numbers
    of each ``(?P<value>...)`` group, every match of it, must be finite), the modules it needs and why it
    cannot run here (``skip``)."""

    args: tuple[str, ...] = ("--tiny",)
    expect: tuple[str, ...] = (ANY_RATIO,)
    needs: tuple[str, ...] = ()
    skip: str | None = None
    id: str = ""


def ratio_line(text: str) -> str:
    """A line ``text ... <number>x`` (the number captured)."""
    return rf"{text}.*?(?P<value>{NUMBER})x"


#: The tiny runs of each benchmark and what they print.
RUNS: dict[str, list[Run]] = {
    "cli_latency.py": [
        Run(
            expect=(
                rf"reference: importing the train app .*: (?P<value>{NUMBER}) s",
                *(rf"{c}.*?(?P<value>{NUMBER}) x reference" for c in ("modle=", "--help", "=nope", "inptu=")),
            )
        )
    ],
    "colour_worth.py": [
        Run(
            expect=(
                r"32 test lenses of euclid; multi: VIS, Y, J, H; single: VIS",
                *(rf"  {t}\s+(?P<value>{NUMBER})\s+{NUMBER}\s+{NUMBER}" for t in ("theta_E", "e1", "center_y")),
                r"lens light > 100x source \(\d+ lenses\)",
            )
        )
    ],
    "domain_flags.py": [
        Run(
            expect=(
                r"kind\s+flagged\s+refused\s+either\s+target",
                *(
                    rf"{kind}\s+(?P<value>{NUMBER})%\s+{NUMBER}%\s+{NUMBER}%"
                    for kind in ("clean", "blank", "noise only", "star")
                ),
                rf"pixel scale x2\s+{NUMBER}%",
            )
        )
    ],
    "flops.py": [
        Run(
            expect=(
                rf"\| resnet18 \| (?P<value>{NUMBER}) \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER}x \|",
                rf"\| fast \| 64x64 \| {NUMBER} M \| {NUMBER} \| {NUMBER} \| (?P<value>{NUMBER}) \|",
                rf"host time of Lightning's loop per step .*: (?P<value>{NUMBER}) ms",
                rf"\| resnet18 \(192px\) \| \d+ \| (?P<value>{NUMBER}) \|",
                rf"\| H100 SXM \| 15% \| {NUMBER} \| (?P<value>{NUMBER}) h \|",
            )
        )
    ],
    "heldout_sources.py": [
        Run(
            expect=(
                rf"renders differ by at most (?P<value>{NUMBER}) of the brightest pixel",
                ratio_line("clean: lenstronomy / lenscnn RMSE: theta_E"),
                ratio_line("survey: held-out / trained sources RMSE: theta_E"),
            ),
            needs=("lenstronomy",),
        )
    ],
    "population_recovery.py": [
        Run(
            expect=(
                r"hyperparameter\s+truth\s+in 68%\s+bias\s+rmse\s+naive bias\s+naive rmse\s+rmse ratio",
                rf"theta_E\.mean(?:\s+{NUMBER}){{6}}\s+(?P<value>{NUMBER})",
                rf"theta_E\.scatter(?:\s+{NUMBER}){{6}}\s+(?P<value>{NUMBER})",
            )
        )
    ],
    "predict_stream.py": [
        Run(
            expect=(
                ratio_line(r"peak RSS growth over the run \[MB\]"),
                ratio_line(r"FITS directory, 8 files \[images/s\]") + " of in memory",
            )
        )
    ],
    "predict_throughput.py": [
        Run(
            expect=(
                r"setting\s+lenses/s\s+target\s+ratio to target\s+vs per-image loop",
                ratio_line("in memory, batches of 256, symmetries=1 "),
                ratio_line(r"FITS directory, single exposures \(4 files\)"),
                ratio_line(r"FITS directory \(combined exposures\) / the networks in memory"),
            )
        )
    ],
    "real_inputs.py": [
        Run(
            expect=(
                rf"all: \+0\.1, rays, NaN border\s+{NUMBER}\s+(?P<value>{NUMBER})\s+{NUMBER}\s+(?P<value2>{NUMBER})",
                rf"blank\s+(?P<value>{NUMBER})\s+{NUMBER}",
                r"a directory of 20 cutouts with 3 bad files: exit 1, 17 predictions, 3 failed rows",
                r"a single bad input: exit 2 after",
            ),
        )
    ],
    "refine.py": [
        Run(
            expect=(
                r"network-seeded fit\s+(?P<value>" + NUMBER + ")",
                rf"theta_E RMSE seeded fit / network: (?P<value>{NUMBER}) \(target <= 0\.5\)",
            ),
            needs=("lenstronomy",),
        )
    ],
    "refine_ellipticals.py": [
        Run(
            expect=(
                rf"refine\s+(?P<value>{NUMBER})",
                rf"theta_E RMSE refine / network: (?P<value>{NUMBER}) \(target <= 0\.5\); converged",
                r"criterion parts met: \(a\) best starts agree \d+/2",
            ),
            needs=("lenstronomy",),
        )
    ],
    "refine_slacs_like.py": [
        Run(
            expect=(
                rf"refine\s+(?P<value>{NUMBER})",
                rf"theta_E refine / network: RMSE (?P<value>{NUMBER})x, median \|error\| (?P<ratio>{NUMBER})x",
                r"converged: \d+/2",
                rf"median arc_snr: (?P<snr>{NUMBER})",
            ),
            needs=("lenstronomy",),
        )
    ],
    "sim_throughput.py": [
        Run(
            expect=(
                rf"survey prior\+observation\s+{NUMBER}\s+(?P<value>{NUMBER})",
                rf"lens-model spec, EPL\s+{NUMBER}\s+{NUMBER}\s+(?P<value>{NUMBER})",
                rf"\n\s+2\s+{NUMBER}\s+{NUMBER}\s+(?P<value>{NUMBER})\s+{NUMBER}",  # supersampling 2: ratio
                rf"50/50 mixture\s+{NUMBER}\s+(?P<value>{NUMBER})",
            ),
            needs=("lenstronomy",),
        ),
        Run(
            args=("--tiny", "--only-chunks"),
            expect=(rf"2 images\s+{NUMBER}\s+(?P<value>{NUMBER})",),
            id="only-chunks",
        ),
    ],
    "train_throughput.py": [
        Run(
            expect=(
                r"setting\s+images/s\s+batch\s+render\s+forward\s+backward\s+optimizer\s+other",
                rf"quickstart, before\s+(?P<value>{NUMBER})\s+4\s",
                rf"quickstart \(fast CNN, 64x64\) / before: (?P<value>{NUMBER})x lenses/s",
            )
        )
    ],
    "gpu.sh": [
        Run(
            skip="needs a CUDA device and minutes (its parts are the GPU runs of the benchmarks above); "
            "DEVICE=cpu SMALL=1 benchmarks/gpu.sh is its dry run on a CPU"
        )
    ],
}


def cases() -> list:
    scripts = sorted(p.name for p in [*BENCHMARKS.glob("*.py"), *BENCHMARKS.glob("*.sh")])
    params = []
    for name in scripts:
        for run in RUNS.get(name, [Run(skip=None if name.endswith(".py") else "not a Python script")]):
            if run.skip is None and name.endswith(".sh"):
                raise AssertionError(f"benchmarks/{name}: only Python scripts run here; give it a skip reason")
            params.append(pytest.param(name, run, id=f"{name} {run.id}".strip()))
    return params


def test_every_benchmark_has_an_entry() -> None:
    """A new benchmark is run with ``--tiny`` anyway; this asks for what its tiny run must print."""
    scripts = {p.name for p in [*BENCHMARKS.glob("*.py"), *BENCHMARKS.glob("*.sh")]}
    assert scripts - set(RUNS) == set(), "add them to RUNS in tests/test_benchmarks.py with what they print"
    assert set(RUNS) - scripts == set(), "RUNS names benchmarks that are gone"


def test_every_benchmark_documents_tiny() -> None:
    for script in BENCHMARKS.glob("*.py"):
        usage = script.read_text().split('"""')[1]
        assert re.search(rf"python benchmarks/{re.escape(script.name)} --tiny", usage), script.name


class Zygote:
    """A ``tests.benchmark_zygote`` process: runs one script at a time in a fork of itself."""

    def __init__(self, env: dict[str, str]):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.benchmark_zygote"],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert json.loads(self.process.stdout.readline()) == {"ready": True}

    def run(self, argv: list[str], stdout: Path, stderr: Path, timeout: float) -> dict:
        request = {"argv": argv, "stdout": str(stdout), "stderr": str(stderr), "timeout": timeout}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def zygote(galaxy_cache):
    # one OpenMP thread (as make test runs); the cache of the test run (built galaxy libraries, domain references)
    process = Zygote({**os.environ, "OMP_NUM_THREADS": "1", "LENSCNN_CACHE": str(galaxy_cache)})
    yield process
    process.close()


def finite_values(match: re.Match) -> list[float]:
    return [float(v.replace(",", "")) for v in match.groupdict().values() if v is not None]


@pytest.mark.parametrize(("script", "run"), cases())
def test_benchmark_runs_tiny(script: str, run: Run, zygote: Zygote, tmp_path: Path) -> None:
    if run.skip:
        pytest.skip(run.skip)
    for module in run.needs:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} (pip install -e '.[fit]')")
    if script == "train_throughput.py" and not _has_revision(_before_revision()):
        pytest.skip("needs the git history: its 'before' row runs the code of an earlier revision")
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    done = zygote.run([str(BENCHMARKS / script), *run.args], out, err, timeout=600)
    stdout, stderr = out.read_text(), err.read_text()
    assert not done["timed_out"], f"{script} ran past 600 s:\n{stdout[-3000:]}\n{stderr[-3000:]}"
    assert done["returncode"] == 0, f"{script} {' '.join(run.args)} failed:\n{stdout[-3000:]}\n{stderr[-5000:]}"
    for pattern in run.expect:
        matches = list(re.finditer(pattern, stdout))
        assert matches, f"{script}: no line matches {pattern!r} in its output:\n{stdout}"
        for match in matches:
            for value in finite_values(match):
                assert math.isfinite(value), f"{script}: {match.group(0)!r} is not finite"


def _before_revision() -> str:
    text = (BENCHMARKS / "train_throughput.py").read_text()
    return re.search(r'^BEFORE = "(\w+)"', text, re.M).group(1)


def _has_revision(revision: str) -> bool:
    done = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{revision}^{{commit}}"], capture_output=True, check=False
    )
    return done.returncode == 0


def test_the_zygote_runs_a_script_as_python_would(zygote: Zygote, tmp_path: Path) -> None:
    """argv, ``__main__``, the script's directory on sys.path, exit codes, uncaught exceptions, exit handlers."""
    (tmp_path / "neighbour.py").write_text("VALUE = 7\n")
    script = tmp_path / "script.py"
    script.write_text(
        "import atexit, sys\n"
        "from neighbour import VALUE\n"
        "atexit.register(lambda: print('exit handler'))\n"
        "print(__name__, sys.argv[1:], VALUE)\n"
        "if sys.argv[1] == 'raise':\n"
        "    raise ValueError('boom')\n"
        "sys.exit(int(sys.argv[1]))\n"
    )
    out, err = tmp_path / "out", tmp_path / "err"
    for arg, code in (("0", 0), ("3", 3), ("raise", 1)):
        done = zygote.run([str(script), arg], out, err, timeout=60)
        assert done["returncode"] == code
        assert out.read_text() == f"__main__ [{arg!r}] 7\nexit handler\n"
    assert "ValueError: boom" in err.read_text()
    script.write_text("import time\ntime.sleep(60)\n")
    done = zygote.run([str(script)], out, err, timeout=1)
    assert done["timed_out"] and done["returncode"] < 0
