import json

import pytest
import sacrebleu

from keras_s2s.inference.evaluation import (bleu_by_length, corpus_scores, evaluation_report,
                                  write_json)

CASES = {
    "english": (["the cat sat on the mat", "a dog barks loudly", "hello there"],
                ["the cat sat on a mat", "the dog barks loudly", "hello there"]),
    "korean": (["나는 학교 에 간다 .", "그는 밥을 먹었다", "오늘 날씨가 좋다 ."],
               ["나는 학교에 간다 .", "그는 밥을 먹었다 .",
                "오늘은 날씨가 좋다 ."]),
    "perfect": (["I go to school .", "she reads a book ."],
                ["I go to school .", "she reads a book ."]),
    "zero": (["aaa bbb", "ccc"], ["xxx yyy zzz", "www"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bleu_and_chrf_equal_sacrebleu(case):
    hypotheses, references = CASES[case]
    scores = corpus_scores(hypotheses, references)
    assert scores["bleu"] == sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert scores["chrf"] == sacrebleu.corpus_chrf(hypotheses, [references]).score
    assert scores["count"] == len(hypotheses)


def test_perfect_and_zero_bleu():
    assert corpus_scores(*CASES["perfect"])["bleu"] == pytest.approx(100.0)
    assert corpus_scores(*CASES["zero"])["bleu"] == 0.0


def test_exact_match_ignores_surrounding_whitespace():
    scores = corpus_scores(["a b ", "x", " y"], [" a b", "z", "y"])
    assert scores["exact_match"] == pytest.approx(2 / 3)


def test_signatures_record_default_tokenisation():
    signatures = corpus_scores(*CASES["english"])["signatures"]
    assert "tok:13a" in signatures["bleu"]
    assert signatures["chrf"].startswith("nrefs:1")


def test_buckets_by_width_omit_empty_and_match_sacrebleu_per_bucket():
    sources = ["w", "w w", "w w w w w", "w w"]  # lengths 1, 2, 5, 2
    hypotheses = ["a b c d", "e f g", "h i j k", "l m n o"]
    references = ["a b c d", "e f x", "h i j k", "l y n o"]
    rows = bleu_by_length(sources, hypotheses, references, buckets=2)
    assert [row["range"] for row in rows] == [[0, 2], [5, 6]]  # [3, 4] is empty
    assert [row["count"] for row in rows] == [3, 1]
    first = [0, 1, 3]
    assert rows[0]["bleu"] == sacrebleu.corpus_bleu(
        [hypotheses[i] for i in first], [[references[i] for i in first]]).score
    assert rows[1]["bleu"] == pytest.approx(100.0)


def test_bucket_bounds_add_an_overflow_bucket_up_to_the_longest_source():
    sources = ["w", "w w w w", "w w w w w w"]
    rows = bleu_by_length(sources, ["a"] * 3, ["a"] * 3, buckets=(3,))
    assert [(row["range"], row["count"]) for row in rows] == [([0, 3], 1), ([4, 6], 2)]
    assert sum(row["count"] for row in rows) == len(sources)


def test_custom_tokenize_counts_other_units():
    rows = bleu_by_length(["학교에", "나"], ["a", "b"], ["a", "b"], buckets=2, tokenize=list)
    assert [(row["range"], row["count"]) for row in rows] == [([0, 2], 1), ([3, 4], 1)]


def test_report_is_json_ready_and_rounded(tmp_path):
    hypotheses, references = CASES["korean"]
    report = evaluation_report(["a b", "c", "d e f"], hypotheses, references, buckets=2)
    assert report["count"] == 3
    assert report["bleu"] == round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 4)
    assert sum(row["count"] for row in report["by_source_length"]) == 3
    path = write_json({**report, "example": "나는"}, tmp_path / "new" / "report.json")
    text = path.read_text(encoding="utf-8")
    assert "나는" in text
    assert json.loads(text)["by_source_length"] == report["by_source_length"]


def test_length_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match="hypotheses has 2, references has 3"):
        corpus_scores(["a", "b"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="sources has 1"):
        bleu_by_length(["a"], ["a", "b"], ["a", "b"])


def test_empty_inputs_and_bare_strings_are_rejected():
    with pytest.raises(ValueError, match="at least one example"):
        corpus_scores([], [])
    with pytest.raises(TypeError, match="single string"):
        corpus_scores("a b", "a b")


@pytest.mark.parametrize("buckets", [0, (), (10, 5), (-1, 3)])
def test_invalid_buckets_are_rejected(buckets):
    with pytest.raises(ValueError, match="[Bb]ucket"):
        bleu_by_length(["a"], ["a"], ["a"], buckets=buckets)
