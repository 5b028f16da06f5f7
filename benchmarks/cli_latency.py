"""How fast the command line answers a typo and ``--help`` (issue 13: within 2 s on a quiet 2-core
machine), against the reference of importing the app module itself (torch, Lightning: what
every command paid before the command line was checked first).

    python benchmarks/cli_latency.py [--repeats 3]
    python benchmarks/cli_latency.py --tiny   # one run of each (tests/test_benchmarks.py)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "lenscnn-train modle=fast": "from lenscnn.cli.entry import train as app",
    "lenscnn-train --help": "from lenscnn.cli.entry import train as app",
    "lenscnn-eval ensemble=nope": "from lenscnn.cli.entry import evaluate as app",
    "lenscnn-predict inptu=x.fits": "from lenscnn.cli.entry import predict as app",
}


def seconds(code: str, repeats: int) -> float:
    """Median wall time of ``python -c code`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="the same code path, quicker: one run of each")
    args = parser.parse_args()
    if args.tiny:
        args.repeats = 1
    reference = seconds("import lenscnn.cli.train", args.repeats)
    print(f"reference: importing the train app (torch, Lightning): {reference:.2f} s")
    for command, entry in CASES.items():
        argv = command.split()
        code = f"import sys; sys.argv = {argv!r}; {entry}\ntry:\n    app()\nexcept SystemExit:\n    pass"
        took = seconds(code, args.repeats)
        print(f"{command:32s} {took:5.2f} s   {took / reference:4.2f} x reference")


if __name__ == "__main__":
    main()
