"""`bench/attention_cost.py --quick` runs, and longer inputs take longer."""

import pytest

from tests.bench.quick import load, run_quick


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_quick(tmp_path_factory, "attention_cost")


def test_attention_cost_quick(results):
    figures = load(results, "attention_cost")
    times = [row["forward_ms"] for row in figures["by_length"].values()]
    assert times[-1] > times[0]  # 8x longer inputs take longer
    assert (results / "attention_cost.png").stat().st_size > 0
