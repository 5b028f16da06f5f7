"""Runs Python scripts as ``python SCRIPT ARGS...`` would, each in a forked child of this process, which has
imported what they import first (torch, Lightning, Hydra, astropy, lenstronomy, lenscnn): a fresh interpreter
pays ~7 s of imports on a 2-core machine, the child none. ``tests/test_benchmarks.py`` runs every benchmark
at ``--tiny`` size through one of these.

    python -m tests.benchmark_zygote

Protocol: one JSON request per line on stdin, ``{"argv": [script, arg, ...], "stdout": path, "stderr": path,
"timeout": seconds}``; one JSON reply per line on stdout, ``{"returncode": int, "seconds": float}`` (the
return code of a killed child is minus the signal; a child past its timeout is killed with its process
group: ``"timed_out": true``).

Each child is the script's own process: forked before this process has started a thread or an OpenMP pool
(it has only imported), the script run as ``__main__`` (``runpy``; ``multiprocessing``'s spawned workers
find it as they find a script's), its directory first on ``sys.path``, stdin ``/dev/null``, stdout and
stderr the request's files, in a process group of its own; it exits as the interpreter would (exit
handlers run, ``SystemExit`` codes kept, an uncaught exception printed with exit status 1).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import runpy
import signal
import sys
import time
import traceback
from pathlib import Path

#: Imported once, before any child is forked (what the benchmarks import; any that fails is left to the child,
#: which then reports it as the script would).
PRELOAD = (
    "numpy",
    "scipy.ndimage",
    "torch",
    "torch.utils.flop_counter",
    "pytorch_lightning",
    "hydra",
    "hydra.utils",
    "omegaconf",
    "yaml",
    "astropy.io.fits",
    "astropy.wcs",
    "astroscrappy",
    "photutils.segmentation",
    "lenstronomy.ImSim.image_model",
    "lenstronomy.Workflow.fitting_sequence",
    "lenscnn.sim",
    "lenscnn.models.ensemble",
    "lenscnn.cli.train",
    "lenscnn.cli.predict",
    "lenscnn.evaluation.cutouts",
    "lenscnn.modelling.fitting",
)


def preload() -> None:
    for name in PRELOAD:
        with contextlib.suppress(Exception):  # the child imports it again and reports the error as the script would
            importlib.import_module(name)


def child(argv: list[str], stdout: str, stderr: str) -> None:
    """In the forked child: run the script, then leave as the interpreter would (never returns)."""
    code = 1
    try:
        os.setpgid(0, 0)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for fd, target in ((null, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own stdin, /dev/null)
        sys.argv = list(argv)
        sys.path[0] = str(Path(argv[0]).resolve().parent)
        try:
            runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 (printed as the interpreter prints it)
            traceback.print_exc()
            code = 1
        try:
            atexit._run_exitfuncs()
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def run(request: dict) -> dict:
    """Fork a child for ``request``, wait for it (up to its timeout) and say how it ended."""
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        child(request["argv"], request["stdout"], request["stderr"])
    with contextlib.suppress(OSError):  # also here: the child may not have run yet when a timeout kills its group
        os.setpgid(pid, pid)
    deadline = start + float(request.get("timeout", 600))
    timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            timed_out = True
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.05)
    return {
        "returncode": os.waitstatus_to_exitcode(status),
        "seconds": time.monotonic() - start,
        "timed_out": timed_out,
    }


def main() -> None:
    preload()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(run(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
