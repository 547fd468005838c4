"""`bench/serving.py --quick` runs and writes its REST figures."""

import pytest

from tests.bench.quick import load, run_quick


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_quick(tmp_path_factory, "serving")


def test_serving_quick(results):
    figures = load(results, "serving")
    assert figures["rest"]
