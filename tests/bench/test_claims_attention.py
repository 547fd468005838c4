"""`bench/claims.py --quick`, claim 2: attention heat maps of a dates model."""

import pytest

from tests.bench.quick import load, run_quick


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_quick(tmp_path_factory, "claims", "--skip", "length", "corpus")


def test_claims_attention_quick(results):
    figures = load(results, "claims")
    assert figures["claim_2_attention_heat_maps"]["dates"]["heat_maps"]
