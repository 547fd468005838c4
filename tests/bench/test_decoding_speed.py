"""`bench/decoding_speed.py --quick` runs and writes sane timings."""

import pytest

from tests.bench.quick import load, run_quick


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_quick(tmp_path_factory, "decoding_speed")


def test_decoding_speed_quick(results):
    figures = load(results, "decoding_speed")
    assert figures["params_ours"] == figures["params_keras_hub"]
    for row in [*figures["by_output_length"].values(),
                *figures["ctranslate2"]["by_batch_size"].values()]:
        assert all(seconds > 0 for seconds in row["seconds"].values())
