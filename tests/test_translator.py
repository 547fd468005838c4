"""The Translator's decoding: every strategy inside its compiled function, n-best, empty input."""

import numpy as np
import pytest

from keras_s2s.decoding import Beam, Greedy, Sample
from keras_s2s.models import Transformer
from keras_s2s.translator import Translator
from tests.test_decoding import BigramModel, uniform_table
from tests.test_export import MAX_SOURCE_LENGTH, make_run_dir

TEXTS = ["a b c", "d e f g", "b a"]


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    return Translator.load(make_run_dir(tmp_path_factory.mktemp("runs") / "luong", "luong"))


def uniform_translator(translator, jit_compile=False):
    """The run's tokenizers around a model whose every next token but END is equally likely."""
    model = BigramModel(uniform_table(translator.target_tokenizer.vocabulary_size))
    return Translator(model, translator.source_tokenizer, translator.target_tokenizer,
                      MAX_SOURCE_LENGTH, max_target_length=12, jit_compile=jit_compile)


def output_ids(translations):
    return [tuple(t.output_tokens) for t in translations]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_sampling_draws_afresh_at_every_step_and_repeats_with_a_seed(translator, jit_compile):
    uniform = uniform_translator(translator, jit_compile)
    first = uniform.translate(TEXTS, strategy=Sample(seed=1))
    for translation in first:
        assert len(translation.output_tokens) == 12 and len(set(translation.output_tokens)) > 3
    assert output_ids(uniform.translate(TEXTS, strategy=Sample(seed=1))) == output_ids(first)
    assert output_ids(uniform.translate(TEXTS, strategy=Sample(seed=2))) != output_ids(first)
    unseeded = [output_ids(uniform.translate(TEXTS, strategy=Sample(top_k=20)))
                for _ in range(2)]
    assert unseeded[0] != unseeded[1]  # no seed: fresh randomness on every call
    assert len(uniform._decoders) == 2  # one compiled function serves every seed


def test_batches_draw_different_numbers(translator):
    translations = uniform_translator(translator).translate(
        ["a b"] * 4, strategy=Sample(seed=5), batch_size=2)
    assert len(set(output_ids(translations))) == 4


def test_n_best_alternatives_are_the_other_beams_best_first(translator):
    translations = translator.translate(TEXTS, strategy=Beam(4, alpha=0.6, n_best=3))
    best = translator.translate(TEXTS, strategy=Beam(4, alpha=0.6))
    for translation, alone in zip(translations, best):
        assert (translation.text, translation.score) == (alone.text, alone.score)
        hypotheses = [translation, *translation.alternatives]
        assert len(hypotheses) == 3 and all(not h.alternatives for h in hypotheses[1:])
        assert len({tuple(h.output_tokens) for h in hypotheses}) == 3
        scores = [h.score for h in hypotheses]
        assert scores == sorted(scores, reverse=True)
        for hypothesis in hypotheses:
            assert hypothesis.attention.shape == (len(hypothesis.output_tokens),
                                                  len(hypothesis.source_tokens))
    assert all(not t.alternatives for t in best)


def test_attention_only_when_asked_and_empty_inputs_are_not_decoded(translator):
    plain = translator.translate(["", *TEXTS, "  "], strategy=Greedy(), attention=False)
    assert all(t.attention is None for t in plain)
    assert [(t.text, t.score, t.output_tokens) for t in (plain[0], plain[-1])] == [
        ("", 0.0, [])] * 2
    assert [t.text for t in plain[1:-1]] == [t.text for t in translator.translate(TEXTS)]
    [empty] = translator.translate([""])
    assert empty.attention.shape == (0, 1) and empty.source_tokens == ["[END]"]


def test_strategy_must_be_a_value(translator):
    with pytest.raises(ValueError, match="strategy must be a decoding strategy such as"):
        translator.translate(TEXTS, strategy="beam")
    np.testing.assert_array_equal([t.score for t in translator.translate(TEXTS)],
                                  [t.score for t in translator.translate(TEXTS, Greedy())])


def test_lengths_beyond_the_models_limit_are_refused(translator):
    model = Transformer(8, 8, num_layers=1, d_model=8, num_heads=2, d_ff=8, max_length=10)
    with pytest.raises(ValueError, match="must not exceed the model's max_decode_length=10"):
        Translator(model, translator.source_tokenizer, translator.target_tokenizer,
                   max_source_length=11, max_target_length=4)
