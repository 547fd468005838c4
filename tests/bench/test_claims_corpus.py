"""`bench/claims.py --quick`, claim 1 on the kor-eng corpus: BLEU-by-length plots, or a
skip with its reason when the corpus is absent."""

from pathlib import Path

import pytest

from tests.bench.quick import SHARED_DATA, load, run_quick


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_quick(tmp_path_factory, "claims", "--skip", "length", "attention")


def test_claims_corpus_quick(results):
    corpus = load(results, "claims")["claim_1_bleu_vs_length_kor_eng"]
    if not (SHARED_DATA / "kor-eng" / "train.tsv").exists():
        assert "skipped" in corpus
    else:
        for path in corpus["figures"]:
            assert Path(path).stat().st_size > 0
