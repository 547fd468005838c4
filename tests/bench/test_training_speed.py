"""`bench/training_speed.py --quick` runs, writes a sane CPU efficiency and its plot."""

import pytest

from tests.bench.quick import load, run_quick


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_quick(tmp_path_factory, "training_speed")


def test_training_speed_quick(results):
    figures = load(results, "training_speed")
    assert 0 < figures["cpu_efficiency"]["efficiency"] < 1.5
    assert (results / "tokens_per_second_vs_length.png").stat().st_size > 0
    assert figures["precision"]["speedup_bfloat16_vs_float32"] > 0
