import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_s2s.decoding import beam_search, decode, greedy_search, length_penalty, sample
from keras_s2s.models import AttentionSeq2Seq, Seq2Seq, Transformer
from keras_s2s.special_tokens import END_ID, START_ID

VOCAB = 17


class BigramModel:
    """A fixed next-token table behind the model contract: P(next | previous token)."""

    has_attention = False

    def __init__(self, table):
        self.log_table = np.log(np.asarray(table, "float32") + 1e-12)

    def encode(self, source_ids, training=None):
        return {"source_mask": ops.not_equal(source_ids, 0)}

    def initial_state(self, memory, max_length):
        return {"unused": ops.zeros((ops.shape(memory["source_mask"])[0], 1))}

    def decode_step(self, token_ids, memory, state, step, training=None):
        return ops.take(self.log_table, token_ids, axis=0), state, None


def trap_table():
    """Greedy takes token 4 (0.5) and then wanders; the best output is 5 (0.4), then end."""
    table = np.full((8, 8), 1e-6)
    table[START_ID, 4], table[START_ID, 5] = 0.5, 0.4
    table[4, [4, 6, 7]] = 0.3  # after 4 nothing is likely, END only 0.1
    table[4, END_ID] = 0.1
    table[5, END_ID] = 0.99
    table[6, END_ID] = table[7, END_ID] = 0.9
    table[6, 6] = table[7, 7] = 0.1
    return table / table.sum(1, keepdims=True)


def test_beam_search_finds_a_better_output_than_greedy():
    table = trap_table()
    model, source = BigramModel(table), np.ones((1, 3), "int32")
    greedy = greedy_search(model, source, max_length=6)
    beam = beam_search(model, source, max_length=6, beam_width=3, alpha=0.0)
    assert list(np.asarray(greedy["tokens"])[0][:2]) == [4, 4]
    assert list(np.asarray(beam["tokens"])[0]) == [5, END_ID, 0, 0, 0, 0]
    assert float(beam["scores"][0]) > float(greedy["scores"][0])
    assert float(beam["scores"][0]) == pytest.approx(
        np.log(table[START_ID, 5]) + np.log(table[5, END_ID]), abs=1e-4)


def test_length_penalty_is_gnmt():
    np.testing.assert_allclose(np.asarray(length_penalty(np.array([1, 10]), 0.6)),
                               ((5 + np.array([1, 10])) / 6) ** 0.6, rtol=1e-6)


MODELS = {
    "seq2seq": lambda: Seq2Seq(VOCAB, VOCAB, embedding_dim=8, units=16),
    "bahdanau": lambda: AttentionSeq2Seq(VOCAB, VOCAB, embedding_dim=8, units=16),
    "luong": lambda: AttentionSeq2Seq(VOCAB, VOCAB, embedding_dim=8, units=16,
                                      attention="luong"),
    "transformer": lambda: Transformer(VOCAB, VOCAB, num_layers=2, d_model=16, num_heads=2,
                                       d_ff=32, max_length=16),
}


@pytest.fixture
def source(rng):
    ids = rng.integers(4, VOCAB, size=(3, 6)).astype("int32")
    ids[0, 4:] = 0
    return ids


def teacher_forced_log_prob(model, source, tokens, length):
    """log P(tokens[:length]) recomputed from the teacher-forcing logits."""
    target_in = np.concatenate([[START_ID], tokens[:length - 1]])[None].astype("int32")
    logits = np.asarray(model((source[None], target_in)))[0].astype("float64")
    logits[:, [0, START_ID]] = -1e9
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
        -1, keepdims=True)) - logits.max(-1, keepdims=True)
    return log_probs[np.arange(length), tokens[:length]].sum()


@pytest.mark.parametrize("family", sorted(MODELS))
def test_beam_width_one_equals_greedy_and_scores_are_log_probs(family, source):
    model = MODELS[family]()
    greedy = greedy_search(model, source, max_length=7)
    beam = beam_search(model, source, max_length=7, beam_width=1, alpha=0.0)
    np.testing.assert_array_equal(np.asarray(beam["tokens"]), np.asarray(greedy["tokens"]))
    np.testing.assert_allclose(np.asarray(beam["scores"]), np.asarray(greedy["scores"]),
                               atol=1e-4)
    tokens, lengths = np.asarray(greedy["tokens"]), np.asarray(greedy["lengths"])
    for row in range(len(source)):
        assert float(greedy["scores"][row]) == pytest.approx(
            teacher_forced_log_prob(model, source[row], tokens[row], lengths[row]), abs=1e-3)
    if model.has_attention:
        assert tuple(greedy["attention"].shape) == (3, 7, 6)
        assert tuple(beam["attention"].shape) == (3, 7, 6)


@pytest.mark.parametrize("family", ["bahdanau", "transformer"])
def test_beam_search_returns_sorted_beams_and_runs_in_a_graph(family, source):
    model = MODELS[family]()
    run = tf.function(lambda ids: beam_search(model, ids, max_length=7, beam_width=4,
                                              return_all_beams=True))
    beams = run(tf.constant(source))
    scores = np.asarray(beams["scores"])
    assert scores.shape == (3, 4) and np.all(np.diff(scores, axis=1) <= 1e-6)
    assert tuple(beams["tokens"].shape) == (3, 4, 7)
    best = beam_search(model, source, max_length=7, beam_width=4)
    np.testing.assert_allclose(np.asarray(best["scores"]), scores[:, 0], atol=1e-4)


def test_decoding_stops_at_end_token_and_pads_after_it():
    table = np.full((8, 8), 1e-6)
    table[START_ID, 4] = 1.0
    table[4, END_ID] = 1.0
    model = BigramModel(table / table.sum(1, keepdims=True))
    for result in (greedy_search(model, np.ones((2, 2), "int32"), max_length=5),
                   beam_search(model, np.ones((2, 2), "int32"), max_length=5, beam_width=2)):
        np.testing.assert_array_equal(np.asarray(result["tokens"]), [[4, END_ID, 0, 0, 0]] * 2)
        np.testing.assert_array_equal(np.asarray(result["lengths"]), [2, 2])


def test_sampling_is_repeatable_and_top_k_one_is_greedy(source):
    model = MODELS["transformer"]()
    first = sample(model, source, max_length=6, temperature=1.5, seed=7)
    second = sample(model, source, max_length=6, temperature=1.5, seed=7)
    np.testing.assert_array_equal(np.asarray(first["tokens"]), np.asarray(second["tokens"]))
    np.testing.assert_array_equal(
        np.asarray(sample(model, source, max_length=6, top_k=1, seed=3)["tokens"]),
        np.asarray(greedy_search(model, source, max_length=6)["tokens"]))


def test_bad_options_raise(source):
    model = MODELS["seq2seq"]()
    with pytest.raises(ValueError, match="strategy must be one of .*'nucleus'"):
        decode(model, source, 5, strategy="nucleus")
    with pytest.raises(ValueError, match="beam_width must be a positive int, got 0"):
        beam_search(model, source, 5, beam_width=0)
    with pytest.raises(ValueError, match="max_length"):
        greedy_search(model, source, 0)
    with pytest.raises(ValueError, match="temperature"):
        sample(model, source, 5, temperature=0)
