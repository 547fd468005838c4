"""The TFLite model's target prefixes and beam search, as a user takes them: `keras-s2s tflite`,
then LiteRT's interpreter on ids the run's vocabularies make, against `Translator.translate`
with the same search and prefixes on the trained dates model."""

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from keras_s2s.cli import main
from keras_s2s.data import synthetic
from keras_s2s.data.pipeline import encode_source
from keras_s2s.decoding import Beam, Greedy
from keras_s2s.inference.translator import Translator

#: Twenty dates, one of them empty.
TEXTS = [source for source, _ in synthetic.generate("dates", 19, seed=7)] + [""]
#: No prefix, a plausible one, one no source asks for, and one the model would not start with.
PREFIXES = (["", "19", "1987", "2049-12", "0"] * 4)[:len(TEXTS)]


@pytest.fixture(scope="module")
def translator(dates_transformer):
    return Translator.load(dates_transformer)


def _tflite_hypotheses(path, translator, prefixes):
    """`[[(output tokens, score), ...] per text]` of the .tflite at `path` on TEXTS, its ids
    made from the run's tokenizers as an app makes them from the vocabularies beside it."""
    source_pad, target_pad = translator.source_tokenizer.pad_id, translator.target_tokenizer.pad_id
    source_ids = encode_source(TEXTS, translator.source_tokenizer,
                               translator.max_source_length).numpy()
    source_ids = np.pad(source_ids, [(0, 0), (0, translator.max_source_length -
                                               source_ids.shape[1])], constant_values=source_pad)
    prefix_ids = np.full((len(TEXTS), translator.max_target_length), target_pad, np.int32)
    for row, ids in enumerate(translator.target_tokenizer.tokenize(prefixes).to_list()):
        prefix_ids[row, :len(ids)] = ids
    result = Interpreter(model_path=str(path)).get_signature_runner("serving_default")(
        source_ids=source_ids, prefix_ids=prefix_ids)
    if result["output_ids"].ndim == 2:  # n_best 1: no hypothesis axis
        result = {name: value[:, None] for name, value in result.items()}
    return [[([translator.target_tokenizer.id_to_token(int(i)) for i in ids[:length]],
              float(score)) for ids, length, score in zip(*hypotheses)]
            for hypotheses in zip(result["output_ids"], result["lengths"], result["scores"])]


def _translator_hypotheses(translator, strategy, prefixes):
    """`_tflite_hypotheses` of `Translator.translate`."""
    return [[(hypothesis.output_tokens, hypothesis.score)
             for hypothesis in [translation, *translation.alternatives]]
            for translation in translator.translate(TEXTS, strategy, attention=False,
                                                    prefixes=prefixes)]


def _assert_same(ours, expected):
    assert [[tokens for tokens, _ in row] for row in ours] == [
        [tokens for tokens, _ in row] for row in expected]
    np.testing.assert_allclose([[score for _, score in row] for row in ours],
                               [[score for _, score in row] for row in expected], atol=1e-4)


@pytest.mark.parametrize("flags, strategy", [
    ([], Greedy()),
    (["--beam", "3", "--alpha", "0.8", "--n-best", "2"], Beam(3, alpha=0.8, n_best=2)),
], ids=["greedy", "beam"])
def test_tflite_gives_the_translators_outputs_with_prefixes(flags, strategy, translator,
                                                             dates_transformer, tmp_path):
    """Every hypothesis starts with its prefix's tokens and goes on as the Translator's; the
    empty text gives none."""
    path = tmp_path / "dates.tflite"
    assert main(["tflite", dates_transformer, "--out", str(path), "--batch-size",
                 str(len(TEXTS)), *flags]) == 0
    ours = _tflite_hypotheses(path, translator, PREFIXES)
    expected = _translator_hypotheses(translator, strategy, PREFIXES)
    _assert_same(ours[:-1], expected[:-1])
    prefix_tokens = [[translator.target_tokenizer.id_to_token(i) for i in ids]
                     for ids in translator.target_tokenizer.tokenize(PREFIXES).to_list()]
    for row, tokens in zip(ours[:-1], prefix_tokens):
        assert all(output[:len(tokens)] == tokens for output, _ in row), (row, tokens)
    assert expected[-1] == [([], 0.0)] and ours[-1] == [([], 0.0)] * strategy.n_best


@pytest.mark.parametrize("flags", [["--temperature", "0.5"], ["--n-best", "2"]])
def test_a_search_the_model_cannot_hold_is_refused_in_one_line(flags, dates_transformer,
                                                               tmp_path, capsys):
    path = tmp_path / "dates.tflite"
    assert main(["tflite", dates_transformer, "--out", str(path), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("keras-s2s tflite: error: "), err
    assert "sampling" in err or "--n-best apply to beam search" in err, err
    assert not path.exists()
