"""One benchmark's quick mode in a subprocess, for the tests of tests/bench.

Each benchmark has its own test file and module fixture, so that pytest-xdist (`--dist
loadfile`) spreads the benchmarks over the workers instead of queueing them all on one. The
figures of a quick run are not checked against goals (a fraction of an epoch of training on a
shared machine says nothing); their presence, structure and sanity are.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def run_quick(tmp_path_factory, script, *arguments):
    """Run `bench/<script>.py --quick ARGUMENTS` as `bench/run_all.py --quick` does, writing
    into a fresh results directory (never docs/results), and return that directory."""
    results_dir = tmp_path_factory.mktemp(f"bench_{script}")
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / f"{script}.py"), "--quick", *arguments],
        capture_output=True, text=True, timeout=1200,
        env={**os.environ, "KERAS_S2S_BENCH_RESULTS": str(results_dir)})
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return results_dir


def load(results_dir, name):
    """The figures of `results_dir/<name>.json`, after checking it is a quick run's."""
    result = json.loads((results_dir / f"{name}.json").read_text())
    assert result["mode"] == "quick"
    assert result["environment"]["tensorflow"]
    return result["figures"]
