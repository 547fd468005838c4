"""The explorer's JSON API over HTTP: the Translator's translations, attention and n-best lists,
one-line errors for bad requests, and texts of any kind answered, never interpreted."""

import json
import re
import urllib.error
import urllib.request

import numpy as np
import pytest

from keras_s2s.cli import main
from keras_s2s.decoding import Beam, Greedy, Sample
from keras_s2s.explore.server import MAX_CHARACTERS, ExplorerServer
from keras_s2s.inference.alignment import pharaoh
from tests.explore.conftest import ARCHS, post

TEXT = "a b c d"
#: The beam search of the tests (the browser test's too, so each run traces one beam search).
BEAM = {"beam_width": 3, "alpha": 0.8, "n_best": 3}
#: A target prefix and phrases (target-side letters of the tiny runs' vocabulary).
PREFIX, CONSTRAINTS = "p", ["k", "i p"]
#: A beam search guided by both (the decoders it traces are shared by the tests using it).
GUIDED = {"text": TEXT, "strategy": "beam", **BEAM, "prefix": PREFIX, "constraints": CONSTRAINTS}
#: The heat map's weights are rounded to this many decimals.
DECIMALS = 4


def translators(explorer):
    return [run["translator"] for run in explorer.runs]


def test_runs_lists_every_run_in_order(explorer_url):
    with urllib.request.urlopen(explorer_url + "api/runs") as response:
        runs = json.loads(response.read())
    assert [(run["name"], run["arch"], run["has_attention"]) for run in runs["runs"]] == [
        ("seq2seq", "seq2seq", False), ("bahdanau", "bahdanau", True),
        ("transformer", "transformer", True)]
    assert runs["max_characters"] == MAX_CHARACTERS


def test_greedy_translations_and_attention_are_the_translators(explorer, explorer_url):
    status, answer = post(explorer_url, {"text": TEXT})
    assert status == 200 and answer["notes"] == []
    for result, translator, arch in zip(answer["results"], translators(explorer), ARCHS):
        (expected,) = translator.translate([TEXT], strategy=Greedy())
        assert result["run"] == arch
        assert result["translation"] == expected.text
        assert result["score"] == pytest.approx(expected.score, abs=1e-5)
        assert result["source_tokens"] == expected.source_tokens
        assert result["target_tokens"] == expected.output_tokens
        assert result["seconds"] > 0 and result["alternatives"] == []
        if expected.attention is None:
            assert result["attention"] is None and "fixed-length context" in result[
                "attention_note"]
            continue
        attention = np.array(result["attention"])  # (layers, heads, outputs, sources)
        np.testing.assert_allclose(attention, translator.attention_heads(expected), atol=1e-4)
        # The last layer's mean over heads is what the decoder attended to, step by step.
        np.testing.assert_allclose(attention[-1].mean(axis=0), expected.attention, atol=1e-4)
    transformer = translators(explorer)[2].model
    assert np.array(answer["results"][2]["attention"]).shape[:2] == (
        transformer.num_layers, transformer.num_heads)


def test_beam_n_best_with_length_penalties(explorer, explorer_url):
    status, answer = post(explorer_url, {"text": TEXT, "strategy": "beam", **BEAM})
    assert status == 200
    for result, translator in zip(answer["results"], translators(explorer)):
        (expected,) = translator.translate([TEXT], strategy=Beam(3, alpha=0.8, n_best=3))
        hypotheses = [result, *result["alternatives"]]
        assert [h["translation"] for h in hypotheses] == [
            h.text for h in [expected, *expected.alternatives]]
        for hypothesis in hypotheses:
            penalty = ((5 + len(hypothesis["target_tokens"])) / 6) ** 0.8  # GNMT, eq. 14
            assert hypothesis["length_penalty"] == pytest.approx(penalty, rel=1e-5)
            assert hypothesis["log_probability"] == pytest.approx(
                hypothesis["score"] * penalty, rel=1e-5)
        assert [h["score"] for h in hypotheses] == sorted(
            [h["score"] for h in hypotheses], reverse=True)


def test_sampling_with_a_seed_is_the_translators(explorer, explorer_url):
    request = {"text": TEXT, "strategy": "sample", "temperature": 1.5, "seed": 7}
    status, answer = post(explorer_url, request)
    assert status == 200
    for result, translator in zip(answer["results"], translators(explorer)):
        (expected,) = translator.translate([TEXT], strategy=Sample(temperature=1.5, seed=7))
        assert result["target_tokens"] == expected.output_tokens
        assert result["length_penalty"] is None


def contains(tokens, phrase):
    return any(tokens[i:i + len(phrase)] == phrase for i in range(len(tokens)))


def test_prefix_and_constraints_are_honoured_as_the_translators(explorer, explorer_url):
    status, answer = post(explorer_url, GUIDED)
    assert status == 200
    for result, translator in zip(answer["results"], translators(explorer)):
        (expected,) = translator.translate([TEXT], strategy=Beam(3, alpha=0.8, n_best=3),
                                           prefixes=[PREFIX], constraints=[CONSTRAINTS])
        assert [h["translation"] for h in [result, *result["alternatives"]]] == [
            h.text for h in [expected, *expected.alternatives]]
        assert result["target_tokens"][0] == PREFIX
        for phrase in CONSTRAINTS:
            assert contains(result["target_tokens"], phrase.split()), (phrase, result)


def wordpiece_words(tokens):
    """The word of each WordPiece token: "##" continues the word before; START, END and padding
    are no word."""
    words, word = [], -1
    for token in tokens:
        if token in ("[START]", "[END]", "[PAD]"):
            words.append(None)
            continue
        word += word < 0 or not token.startswith("##")
        words.append(word)
    return words


def merged_argmax_pairs(weights, source_words, target_words):
    """Pharaoh pairs of a `(T, S)` heat map, with numpy: each target word's rows summed, then
    each source word's columns, and the largest sum taken; also each pair's margin to the
    runner-up and how far rounding could move the sums apart."""
    def membership(words):
        count = max([word for word in words if word is not None], default=-1) + 1
        return np.array([[word == k for k in range(count)] for word in words], float)

    sources, targets = membership(source_words), membership(target_words)
    merged = targets.T @ weights @ sources
    ordered = np.sort(merged, axis=1)
    margins = ordered[:, -1] - ordered[:, -2] if merged.shape[1] > 1 else np.inf
    cells = targets.sum(axis=0)[:, None] * sources.sum(axis=0)[None, :]
    # Two sums of rounded weights, each off by half a unit per cell at most (and a
    # Transformer's recomputed weights by ~1e-6 more).
    return (" ".join(f"{s}-{t}" for t, s in enumerate(merged.argmax(axis=1))), margins,
            (10.0 ** -DECIMALS + 1e-5) * cells.max())


@pytest.mark.parametrize("request_", [{"text": TEXT}, GUIDED])
def test_alignments_are_the_translators_and_the_heat_maps_argmax(explorer, explorer_url,
                                                                 request_):
    status, answer = post(explorer_url, request_)
    assert status == 200
    guided = "prefix" in request_
    for result, translator in zip(answer["results"], translators(explorer)):
        (expected,) = translator.translate(
            [TEXT], strategy=Beam(3, alpha=0.8, n_best=3) if guided else Greedy(),
            prefixes=[PREFIX] if guided else None, constraints=[CONSTRAINTS] if guided else None)
        if expected.alignments is None:  # no attention
            assert result["alignments"] is None
            continue
        assert result["alignments"] == pharaoh(expected.alignments) != ""
        # The heat map the page draws first: the last layer, averaged over the heads.
        weights = np.array(result["attention"])[-1].mean(axis=0)
        pairs, margins, rounding = merged_argmax_pairs(
            weights, result["source_words"], result["target_words"])
        clear = margins > rounding  # the pairs rounding cannot have changed
        assert clear.any()
        assert np.array(pairs.split())[clear].tolist() == np.array(
            result["alignments"].split())[clear].tolist()
        for tokens, words in ((result["source_tokens"], result["source_words"]),
                              (result["target_tokens"], result["target_words"])):
            assert words == wordpiece_words(tokens)


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON in UTF-8"),
    (b"[" * 100_000, "not JSON"),
    ([TEXT], "must be a JSON object"),
    ({}, "text must be a string"),
    ({"text": 3}, "text must be a string"),
    ({"text": TEXT, "strategy": "top-k"}, "strategy must be one of"),
    ({"text": TEXT, "beams": 3}, "unknown field 'beams'"),
    ({"text": TEXT, "strategy": "beam", "beam_width": 0}, "beam_width must be an int in [1, 16]"),
    ({"text": TEXT, "strategy": "beam", "beam_width": 17}, "beam_width"),
    ({"text": TEXT, "strategy": "beam", "beam_width": True}, "beam_width"),
    ({"text": TEXT, "strategy": "beam", "beam_width": 2, "n_best": 3}, "n_best must be at most"),
    ({"text": TEXT, "strategy": "beam", "alpha": -1}, "alpha"),
    ({"text": TEXT, "strategy": "sample", "temperature": "hot"}, "temperature"),
    ({"text": TEXT, "strategy": "sample", "seed": -1}, "seed"),
    # JSON's Infinity and NaN (Python's json reads them) and values past the strategies' bounds.
    ({"text": TEXT, "strategy": "beam", "alpha": float("inf")},
     "alpha must be a number in [0.0, 10.0], got inf"),
    ({"text": TEXT, "strategy": "beam", "alpha": float("nan")}, "alpha must be a number in"),
    ({"text": TEXT, "strategy": "sample", "temperature": 1e-300},
     "temperature must be 0 (greedy search) or a number in [0.001, 100.0], got 1e-300"),
    ({"text": TEXT, "strategy": "sample", "temperature": float("-inf")}, "got -inf"),
    ({"text": TEXT, "strategy": "sample", "seed": 2 ** 40}, "seed must be an int in [0, "),
    # Guides: their types here, the rest as the Translator checks them.
    ({"text": TEXT, "prefix": 3}, "prefix must be a string, got 3"),
    ({"text": TEXT, "strategy": "beam", "constraints": "k"},
     "constraints must be a list of strings (phrases), got 'k'"),
    ({"text": TEXT, "strategy": "beam", "constraints": [["k"]]}, "constraints must be a list"),
    ({"text": TEXT, "constraints": ["k"]}, "constraints need beam search (Beam(width)): Greedy"),
    ({"text": TEXT, "strategy": "sample", "constraints": ["k"]}, "constraints need beam search"),
    ({"text": TEXT, "strategy": "beam", "constraints": ["k", " "]},
     "the constraint ' ' is empty: it holds no token"),
    ({"text": TEXT, "prefix": "p " * 12}, "has 12 tokens; at most 9 fit before the end token"),
    ({"text": TEXT, "strategy": "beam", "constraints": ["k p i"] * 4},
     "hold 12 tokens; at most 9 fit before the end token"),
])
def test_bad_requests_get_400_and_one_line(explorer_url, body, message):
    status, answer = post(explorer_url, body)
    assert status == 400 and list(answer) == ["error"]
    assert message in answer["error"] and "\n" not in answer["error"]


def test_the_server_answers_after_refusing_non_finite_values(explorer_url):
    assert post(explorer_url, {"text": TEXT, "strategy": "beam", "alpha": float("inf")})[0] == 400
    status, answer = post(explorer_url, {"text": TEXT})
    assert status == 200 and len(answer["results"]) == len(ARCHS)


def test_other_paths_answer_json_errors(explorer_url):
    for path, status in (("nothing", 404), ("api/translate", 405)):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(explorer_url + path)
        assert error.value.code == status and "error" in json.loads(error.value.read())


def test_the_page_and_its_files_are_local(explorer_url):
    with urllib.request.urlopen(explorer_url + "?text=a") as response:
        page = response.read().decode()
        policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "://" not in page  # nothing fetched from elsewhere
    for name in ("app.js", "style.css"):
        assert f"/static/{name}" in page
        with urllib.request.urlopen(explorer_url + "static/" + name) as response:
            code = response.read().decode()
        assert "://" not in code and "@import" not in code
        # Data reaches the page as text only (the browser test checks it too).
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", code)


@pytest.mark.parametrize("text", [
    "", "   ", "😀🇰🇷 a b", "مرحبا بالعالم a", "<script>alert(1)</script><img src=x onerror=1>",
    "나는 학교에 간다"])
def test_any_text_gets_an_answer_holding_it_as_data(explorer_url, text):
    status, answer = post(explorer_url, {"text": text})
    assert status == 200 and answer["text"] == text
    assert len(answer["results"]) == len(ARCHS)
    if not text.strip():
        assert all(result["translation"] == "" for result in answer["results"])
        assert "empty" in answer["notes"][0]


def test_long_texts_are_cut_with_a_note(explorer_url):
    status, answer = post(explorer_url, {"text": "a b " * 1500})
    assert status == 200 and len(answer["text"]) == MAX_CHARACTERS
    assert "first 5,000 characters (it had 6,000)" in answer["notes"][0]
    assert "reads at most" in answer["results"][0]["notes"][0]


def test_cli_prints_one_ready_line(tiny_runs, monkeypatch, capsys):
    monkeypatch.setattr(ExplorerServer, "serve_forever", lambda server: None)
    assert main(["explore", tiny_runs["luong"], tiny_runs["seq2seq"], "--port", "0"]) == 0
    assert re.fullmatch(r"Attention explorer of 2 run\(s\) at http://127\.0\.0\.1:\d+/\n",
                        capsys.readouterr().out)


def test_cli_refuses_a_directory_that_is_no_run(tmp_path, capsys):
    assert main(["explore", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("keras-s2s explore: error:") and "config.json is missing" in error
    assert len(error.splitlines()) == 1
