"""`bench/claims.py --quick`, claim 1 on the synthetic copy task (the other parts run in
test_claims_corpus.py and test_claims_attention.py, on the other xdist worker when free)."""

import pytest

from tests.bench.quick import load, run_quick


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_quick(tmp_path_factory, "claims", "--skip", "corpus", "attention")


def test_claims_length_quick(results):
    figures = load(results, "claims")
    length = figures["claim_1_context_vector_vs_length"]
    assert set(length["results"]) == {"seq2seq", "bahdanau", "luong", "transformer"}
    assert (results / "accuracy_vs_length.png").stat().st_size > 0
