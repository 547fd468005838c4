"""`bench/constrained.py --quick` times constrained beam search against plain beam search in
the graph loop and writes consistent ratios."""

import pytest

from tests.bench.quick import load, run_quick


def test_constrained_quick(tmp_path_factory):
    figures = load(run_quick(tmp_path_factory, "constrained"), "constrained")
    assert set(figures) == {"load_average_before", "graph", "load_average_after"}
    row = figures["graph"]["batch_1"]
    for count in (1, 3):
        name = f"beam_4_{count}_constraints"
        assert row[f"{name}_ms"] > 0
        assert row[f"{name}_over_beam_4"] == pytest.approx(
            row[f"{name}_ms"] / row["beam_4_ms"], rel=0.05, abs=0.01)
