"""`bench/decoding_speed.py --quick` runs and writes sane timings."""

import subprocess
import sys

import pytest

from tests.bench.quick import REPO_ROOT, load, run_quick


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_quick(tmp_path_factory, "decoding_speed")


def test_decoding_speed_quick(results):
    figures = load(results, "decoding_speed")
    assert figures["params_ours"] == figures["params_keras_hub"]
    for row in [*figures["by_output_length"].values(),
                *figures["ctranslate2"]["by_batch_size"].values()]:
        assert all(seconds > 0 for seconds in row["seconds"].values())


def test_deployed_paths_beside_ours(results):
    """REST (batching off and on, one request and 32 clients) and TFLite (greedy, and beam 4 at
    batch 1) stand in the rows of the side by side, and the float32 ones give our graph loop's
    tokens exactly."""
    side_by_side = load(results, "decoding_speed")["ctranslate2"]
    assert side_by_side["rest"]["searches"] == ["greedy"]
    assert side_by_side["tflite"]["quantizations"] == ["none"]
    rest = ["rest", "rest_batching"]
    clients = ["rest_32_clients", "rest_32_clients_batching"]
    assert sorted(side_by_side["tflite"]["bytes"]) == ["beam4_float32", "greedy_float32"]
    expected = {"batch1_greedy": [*rest, "tflite_float32"], "batch1_beam4": ["tflite_float32"],
                "batch32_greedy": [*rest, *clients, "tflite_float32"], "batch32_beam4": []}
    for name, row in side_by_side["by_batch_size"].items():
        deployed = expected.pop(name)
        assert sorted(row["share_of_tokens_equal_to_ours_graph"]) == sorted(deployed)
        for contender in deployed:
            assert row["target_tokens_per_second"][contender] > 0
            assert row["sentences_per_second"][contender] > 0
            assert row["share_of_tokens_equal_to_ours_graph"][contender] == 1.0
    assert not expected


def test_a_row_without_rest_rows_is_refused_on_one_line():
    """`--row` picks a row of `--rest-rows`; given alone it would be ignored silently."""
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "decoding_speed.py"), "--row",
         "batch32_beam4"], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines()[-1] == (
        "--row batch32_beam4 picks a row of --rest-rows; give both")
