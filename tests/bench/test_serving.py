"""`bench/serving.py --quick` runs and writes its REST figures."""

import pytest

from tests.bench.quick import load, run_quick


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_quick(tmp_path_factory, "serving")


def test_serving_quick(results):
    figures = load(results, "serving")
    assert figures["rest"]


def test_serving_quick_overload(results):
    overload = load(results, "serving")["overload"]["after"]
    burst = overload["heavy_burst_4"]
    assert sum(burst["statuses"].values()) == 4 and burst["statuses"].get("200", 0) >= 1
    assert overload["saturated_by_medium"]["small_statuses"] == {
        "200": overload["saturated_by_medium"]["small_requests"]
    }
