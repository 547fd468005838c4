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


def test_the_time_split_covers_the_steps_ops(results):
    """Each op type's share of the traced step sums to 1 and the matmuls are among them."""
    for row in load(results, "decode_profile")["by_batch_size"].values():
        split = row["op_time_split"]
        assert sum(split["by_type_share"].values()) == pytest.approx(1.0)
        assert sum(split["by_type_us"].values()) == pytest.approx(split["op_us_summed"])
        assert {"MatMul", "Einsum", "BatchMatMulV2"} <= set(split["by_type_us"])
        assert 0 < split["op_us_summed"]


def test_a_decoding_step_runs_few_ops(results):
    """One step builds its masks once, writes each layer's keys and values with one position
    mask, looks the positions up in a table, and reads keys and values laid out heads before
    positions (no slice or transpose copies them): 210 ops at batch 1 and at batch 32."""
    for row in load(results, "decode_profile")["by_batch_size"].values():
        assert row["ops_per_step"] <= 212
