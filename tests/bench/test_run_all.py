"""Every benchmark `bench/run_all.py` runs has a quick-mode test file in tests/bench."""

import importlib.util
from pathlib import Path

from tests.bench.quick import REPO_ROOT


def test_every_benchmark_of_run_all_has_a_test_file():
    spec = importlib.util.spec_from_file_location("run_all", REPO_ROOT / "bench" / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    tested = {path.stem for path in Path(__file__).parent.glob("test_*.py")}
    untested = [name for name in run_all.BENCHMARKS
                if not any(stem.startswith(f"test_{name}") for stem in tested)]
    assert not untested, f"benchmarks without a quick-mode test in tests/bench: {untested}"
