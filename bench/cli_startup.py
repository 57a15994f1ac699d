"""How long the command line takes to answer what needs no model: `--help`, `prune --help`, `--version`
and the refusal of a missing `--model`, each a fresh `python -m hybridprune`. Several source trees
(e.g. two checkouts) are timed alternately, so that drifts in the machine's load hit them alike; the
median of the runs is reported, with the load average seen.

    .venv/bin/python bench/cli_startup.py [--runs 5] SRC [SRC ...]      (SRC: a checkout's src/ directory)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CASES = {
    "--help": ["--help"],
    "prune --help": ["prune", "--help"],
    "--version": ["--version"],
    "missing --model": ["calibrate", "--model", "missing", "--data", "shakespeare", "--out", "out"],
}


def once(src: str, args: list[str], cwd: str) -> float:
    env = {**os.environ, "PYTHONPATH": src}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hybridprune", *args], cwd=cwd, env=env, capture_output=True, check=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    times = {(src, case): [] for src in args.sources for case in CASES}
    loads = []
    with tempfile.TemporaryDirectory() as cwd:
        for src in args.sources:  # warm-up: the files in the page cache, bytecode compiled
            once(src, CASES["--help"], cwd)
        for _ in range(args.runs):
            for case, argv in CASES.items():
                for src in args.sources:
                    loads.append(os.getloadavg()[0])
                    times[(src, case)].append(once(src, argv, cwd))
    result = {
        "runs": args.runs, "cpus": os.cpu_count(),
        "load_average_1min": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
        "median_s": {src: {case: round(statistics.median(times[(src, case)]), 2) for case in CASES}
                     for src in args.sources},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
