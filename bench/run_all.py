"""Run every benchmark, each in its own process, and list the JSON files they wrote.

`--quick` passes `--quick` on (a few minutes on 2 CPU cores; CI runs each script's quick
mode through its own test file in tests/bench/, so the benchmarks spread over the xdist
workers); without it the benchmarks run their full sizes and repeats, which takes tens of
minutes. `bench/quality.py` is not among them: its budgets are the figure.

Usage: python bench/run_all.py [--quick] [--results-dir DIR]
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BENCHMARKS = ("decoding_speed", "decode_profile", "training_speed", "attention_cost", "serving",
              "claims")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    parser.add_argument("--results-dir", default=None,
                        help="write JSON and plots here instead of docs/results")
    args = parser.parse_args()
    environment = dict(os.environ)
    if args.results_dir:
        environment["KERAS_S2S_BENCH_RESULTS"] = os.path.abspath(args.results_dir)
    failed = []
    started = time.perf_counter()
    for name in BENCHMARKS:
        command = [sys.executable, str(BENCH_DIR / f"{name}.py"), *(["--quick"] * args.quick)]
        print(f"$ {' '.join(command)}", flush=True)
        benchmark_started = time.perf_counter()
        if subprocess.run(command, env=environment).returncode:
            failed.append(name)
        print(f"# {name}: {time.perf_counter() - benchmark_started:.0f} s", flush=True)
    print(f"# all: {time.perf_counter() - started:.0f} s; results in "
          f"{args.results_dir or 'docs/results'}/")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
