"""`bench/decode_profile.py --quick` runs and writes a consistent profile of a decoding step."""

import pytest

from tests.bench.quick import load, run_quick


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_quick(tmp_path_factory, "decode_profile")


def test_decode_profile_quick(results):
    figures = load(results, "decode_profile")
    one, many = figures["by_batch_size"]["1"], figures["by_batch_size"]["32"]
    assert many["flops_per_step"] == 32 * one["flops_per_step"]
    for row in (one, many):
        assert 0 < row["matmul_ops"] < row["ops_per_step"] <= row["graph_ops_all"]
        assert row["step_ms"] > 0 and row["overhead_us_per_op"] >= 0
        assert row["matmul_gflops_at_step_shape"] > 0
    assert figures["large_matmul_gflops"] > 0
