"""The Translator's decoding: every strategy inside its compiled function, n-best, empty input."""

import numpy as np
import pytest

from keras_s2s.decoding import Beam, Greedy, Sample
from keras_s2s.models import Transformer
from keras_s2s.inference.translator import Translator
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


def test_batches_hold_texts_of_similar_lengths_and_come_back_in_order(translator, monkeypatch):
    """Long and short texts alternate; batches of 3 take the short ones, then the long ones
    (a batch's search lasts as long as its longest output), and each translation is the one
    the text gets alone."""
    texts = ["a b c d e f", "a", "b c d e f g", "c", "d e f g h a", "e"]
    alone = [translator.translate([text], strategy=Beam(2))[0] for text in texts]
    batches = []
    translate_batch = Translator._translate_batch
    monkeypatch.setattr(Translator, "_translate_batch", lambda self, batch, *rest: (
        batches.append(batch), translate_batch(self, batch, *rest))[1])
    together = translator.translate(texts, strategy=Beam(2), batch_size=3)
    assert batches == [["a", "c", "e"], ["a b c d e f", "b c d e f g", "d e f g h a"]]
    assert [(t.source, t.output_tokens) for t in together] == [
        (t.source, t.output_tokens) for t in alone]
    np.testing.assert_allclose([t.score for t in together], [t.score for t in alone],
                               atol=1e-5)


def test_texts_are_tokenized_once_and_each_batch_is_padded_to_its_longest(translator,
                                                                        monkeypatch):
    """One tokenizer call for all texts (sorting by length needs the ids the batches use), and
    a batch of short texts is not padded to the longest text of the call."""
    tokenizer = translator.source_tokenizer
    texts = ["a b c d e f", "a", "b c d e f g", "c"]
    calls, widths = [], []
    tokenize = type(tokenizer).tokenize
    monkeypatch.setattr(tokenizer, "tokenize",
                        lambda inputs: (calls.append(inputs), tokenize(tokenizer, inputs))[1])
    translate_batch = Translator._translate_batch
    monkeypatch.setattr(Translator, "_translate_batch", lambda self, batch, ids, *rest: (
        widths.append(np.shape(ids)[1]), translate_batch(self, batch, ids, *rest))[1])
    translator.translate(texts, batch_size=2)
    assert len(calls) == 1
    assert widths == [2, 7]  # one token and END; six tokens and END


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


def test_attention_heads_are_every_layers_step_by_step_weights(translator):
    """A Transformer's teacher-forced weights of each layer and head are those its decoder
    layers give step by step (read here through their caches, as decode_step runs them)."""
    vocab_sizes = (translator.source_tokenizer.vocabulary_size,
                   translator.target_tokenizer.vocabulary_size)
    model = Transformer(*vocab_sizes, num_layers=2, d_model=16, num_heads=2, d_ff=16,
                        max_length=MAX_SOURCE_LENGTH)
    transformer = Translator(model, translator.source_tokenizer, translator.target_tokenizer,
                             MAX_SOURCE_LENGTH, max_target_length=6)
    (translation,) = transformer.translate(["a b c"])
    heads = transformer.attention_heads(translation)
    source_ids = np.array([[translator.source_tokenizer.token_to_id(token)
                            for token in translation.source_tokens]])
    memory = model.encode(source_ids)
    caches = model.initial_state(memory, 6)["self_cache"]
    previous = [2] + [translator.target_tokenizer.token_to_id(token)
                      for token in translation.output_tokens]
    for step in range(len(translation.output_tokens)):
        x = model._embed(model.target_embedding, np.array([[previous[step]]]), step)
        for index, layer in enumerate(model.decoder_layers):
            x, weights, cache = layer(x, encoder_padding_mask=memory["source_mask"],
                                      self_attention_cache=caches[index],
                                      self_attention_cache_update_index=step,
                                      cross_attention_cache=memory["cross_cache"][index],
                                      return_attention_scores=True)
            caches = caches[:index] + (cache,) + caches[index + 1:]
            np.testing.assert_allclose(heads[index, :, step], np.asarray(weights)[0, :, 0],
                                       atol=1e-5)
    np.testing.assert_allclose(heads[-1].mean(axis=0), translation.attention, atol=1e-5)
    assert heads.shape == (2, 2, len(translation.output_tokens), len(translation.source_tokens))
    [luong] = translator.translate(["a b c"])
    np.testing.assert_array_equal(translator.attention_heads(luong), luong.attention[None, None])
    [plain] = translator.translate(["a b c"], attention=False)
    assert translator.attention_heads(plain) is None
