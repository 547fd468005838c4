"""Decoding over the model contract, backend-neutral: CI also runs this file under JAX."""

import itertools

import numpy as np
import pytest
from keras import ops

from keras_s2s.decoding import Beam, Greedy, Sample, length_penalty
from keras_s2s.layers import LuongAttention
from keras_s2s.models import AttentionSeq2Seq, Seq2Seq, Transformer
from keras_s2s.special_tokens import END_ID, PAD_ID, START_ID

VOCAB = 17


def numpy(tensor):
    return ops.convert_to_numpy(tensor)


class BigramModel:
    """A fixed next-token table behind the model contract: P(next | previous token)."""

    has_attention = False
    max_decode_length = None

    def __init__(self, table):
        self.log_table = np.log(np.asarray(table, "float32") + 1e-12)

    def encode(self, source_ids, training=None):
        return {"source_mask": ops.not_equal(source_ids, 0)}

    def initial_state(self, memory, max_length):
        return {"unused": ops.zeros((ops.shape(memory["source_mask"])[0], 1))}

    def decode_step(self, token_ids, memory, state, step, training=None):
        return ops.take(self.log_table, token_ids, axis=0), state, None


class BigramTables:
    """One bigram table per input row, chosen by the row's first source id: a batch of
    different models in one decoding call."""

    has_attention = False

    def __init__(self, tables):
        tables = np.log(np.asarray(tables, "float32") + 1e-12)
        self.vocab_size = tables.shape[-1]
        self.log_tables = tables.reshape(-1, self.vocab_size)  # (N·V, V)

    def encode(self, source_ids, training=None):
        return {"table": ops.cast(source_ids[:, 0], "int32")}

    def initial_state(self, memory, max_length):
        return {}

    def decode_step(self, token_ids, memory, state, step, training=None):
        rows = memory["table"] * self.vocab_size + ops.cast(token_ids, "int32")
        return ops.take(self.log_tables, rows, axis=0), state, None


def normalized(table):
    return table / table.sum(1, keepdims=True)


def trap_table():
    """Greedy takes token 4 (0.5) and then wanders; the best output is 5 (0.4), then end."""
    table = np.full((8, 8), 1e-6)
    table[START_ID, 4], table[START_ID, 5] = 0.5, 0.4
    table[4, [4, 6, 7]] = 0.3  # after 4 nothing is likely, END only 0.1
    table[4, END_ID] = 0.1
    table[5, END_ID] = 0.99
    table[6, END_ID] = table[7, END_ID] = 0.9
    table[6, 6] = table[7, 7] = 0.1
    return normalized(table)


def pushing_out_table():
    """With width 2, START 4 END (log P −1.90) ends at step 2 while START 4 6 and START 5 5
    (−1.05 each) lead; a search that keeps finished hypotheses in the beam drops it and
    returns 4 6 6 6 6 (−2.12) at max_length 5."""
    table = np.full((7, 7), 1e-9)
    table[START_ID, [4, 5]] = 0.5
    table[4, 6], table[4, END_ID] = 0.7, 0.3
    table[5, 5], table[5, END_ID] = 0.7, 0.3
    table[6, 6], table[6, END_ID] = 0.7, 0.3
    return normalized(table)


def test_beam_search_finds_a_better_output_than_greedy():
    table = trap_table()
    model, source = BigramModel(table), np.ones((1, 3), "int32")
    greedy = Greedy().decode(model, source, max_length=6)
    beam = Beam(width=3, alpha=0.0).decode(model, source, max_length=6)
    assert list(numpy(greedy["tokens"])[0][:2]) == [4, 4]
    assert list(numpy(beam["tokens"])[0]) == [5, END_ID, 0, 0, 0, 0]
    assert float(numpy(beam["scores"])[0]) > float(numpy(greedy["scores"])[0])
    assert float(numpy(beam["scores"])[0]) == pytest.approx(
        np.log(table[START_ID, 5]) + np.log(table[5, END_ID]), abs=1e-4)


def test_beam_search_never_drops_a_finished_hypothesis_for_worse_ones():
    table = pushing_out_table()
    beam = Beam(width=2, alpha=0.0).decode(BigramModel(table), np.ones((1, 2), "int32"), 5)
    best_finished = np.log(table[START_ID, 4]) + np.log(table[4, END_ID])
    assert float(numpy(beam["scores"])[0]) == pytest.approx(best_finished, abs=1e-4)
    assert list(numpy(beam["tokens"])[0]) == [4, END_ID, 0, 0, 0]


def all_outputs(vocab_size, max_length):
    """Every output a search may return: ends with END within max_length, or has max_length
    tokens none of which is END (cut off). Padding and the start token never appear."""
    tokens = [t for t in range(vocab_size) if t not in (PAD_ID, START_ID, END_ID)]
    for length in range(1, max_length + 1):
        for prefix in itertools.product(tokens, repeat=length - 1):
            yield prefix + (END_ID,)
    yield from itertools.product(tokens, repeat=max_length)


def score(log_table, output, alpha, max_length):
    previous, total = START_ID, 0.0
    for token in output:
        total, previous = total + log_table[previous, token], token
    return total / ((5 + len(output)) / 6) ** alpha


def log_table_without_forbidden(table):
    """The log-probabilities decoding uses: padding and START ruled out, then renormalized."""
    log_table = np.log(table.astype("float64"))
    log_table[:, [PAD_ID, START_ID]] = -np.inf
    return log_table - np.log(np.exp(log_table).sum(1, keepdims=True))


def reference_beam_search(log_table, width, max_length, alpha):
    """The best of every finished hypothesis that a pooled beam search ranks among the 2·width
    best continuations of a step, and of the live ones cut off at max_length (plain Python)."""
    vocab = range(log_table.shape[0])
    live, finished = [((), 0.0)], []
    for step in range(max_length):
        candidates = sorted(
            ((tokens + (v,), log_prob + log_table[tokens[-1] if tokens else START_ID, v])
             for tokens, log_prob in live for v in vocab if v not in (PAD_ID, START_ID)),
            key=lambda candidate: -candidate[1])[:2 * width]
        finished += [(lp / ((5 + step + 1) / 6) ** alpha, t) for t, lp in candidates
                     if t[-1] == END_ID]
        live = [(t, lp) for t, lp in candidates if t[-1] != END_ID][:width]
    finished += [(lp / ((5 + max_length) / 6) ** alpha, t) for t, lp in live]
    return max(finished)[0]


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.5])
def test_beam_search_matches_brute_force_on_random_bigram_models(alpha, rng):
    vocab_size, max_length, count = 6, 3, 8
    outputs = list(all_outputs(vocab_size, max_length))
    tables = np.maximum(rng.dirichlet(np.full(vocab_size, 0.5), size=(count, vocab_size)), 1e-6)
    model, source = BigramTables(tables), np.arange(count, dtype="int32")[:, None]
    log_tables = [log_table_without_forbidden(table) for table in tables]
    # A width covering every output: the exact best.
    everything = Beam(width=len(outputs), alpha=alpha).decode(model, source, max_length)
    for row, log_table in enumerate(log_tables):
        scores = [score(log_table, output, alpha, max_length) for output in outputs]
        best = outputs[int(np.argmax(scores))]
        assert float(numpy(everything["scores"])[row]) == pytest.approx(max(scores), abs=1e-4)
        tokens = list(numpy(everything["tokens"])[row])
        assert tokens[:len(best)] == list(best) and not any(tokens[len(best):])
    # Any width: the best of what the search found, never a worse hypothesis.
    for width in (1, 2, 3):
        result = {name: numpy(value) for name, value in Beam(width=width, alpha=alpha).decode(
            model, source, max_length).items()}
        for row, log_table in enumerate(log_tables):
            found = reference_beam_search(log_table, width, max_length, alpha)
            assert result["scores"][row] == pytest.approx(found, abs=1e-4)
            assert result["scores"][row] == pytest.approx(score(
                log_table, result["tokens"][row, :result["lengths"][row]], alpha, max_length),
                abs=1e-4)


def test_n_best_returns_distinct_hypotheses_best_first_with_their_attention(rng):
    model = MODELS["luong"]()
    source = rng.integers(4, VOCAB, size=(2, 5)).astype("int32")
    result = Beam(width=4, alpha=0.0, n_best=3).decode(model, source, 6, attention=True)
    tokens, scores, lengths = (numpy(result[name]) for name in ("tokens", "scores", "lengths"))
    assert tokens.shape == (2, 3, 6) and scores.shape == (2, 3) and lengths.shape == (2, 3)
    assert numpy(result["attention"]).shape == (2, 3, 6, 5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    np.testing.assert_allclose(scores.reshape(-1), teacher_forced_log_probs(
        model, np.repeat(source, 3, axis=0), tokens.reshape(6, 6), lengths.reshape(-1)),
        atol=1e-3)
    for row in range(2):
        assert len({tuple(hypothesis) for hypothesis in tokens[row]}) == 3
        for rank in range(3):
            attention = numpy(result["attention"])[row, rank]
            np.testing.assert_allclose(attention[:lengths[row, rank]].sum(-1), 1.0, atol=1e-4)
            assert not attention[lengths[row, rank]:].any()
    best = Beam(width=4, alpha=0.0).decode(model, source, 6)
    np.testing.assert_array_equal(numpy(best["tokens"]), tokens[:, 0])
    assert "attention" not in best  # recorded only when asked for


def test_length_penalty_is_gnmt():
    np.testing.assert_allclose(numpy(length_penalty(np.array([1, 10]), 0.6)),
                               ((5 + np.array([1, 10])) / 6) ** 0.6, rtol=1e-6)


def built(model):
    model.build()
    return model


#: Built before decoding, as a trained or loaded model is.
MODELS = {
    "seq2seq": lambda: built(Seq2Seq(VOCAB, VOCAB, embedding_dim=8, units=16)),
    "bahdanau": lambda: built(AttentionSeq2Seq(VOCAB, VOCAB, embedding_dim=8, units=16)),
    "luong": lambda: built(AttentionSeq2Seq(VOCAB, VOCAB, embedding_dim=8, units=16,
                                            attention=LuongAttention(),
                                            step_order="update_then_attend",
                                            input_feeding=True)),
    "transformer": lambda: built(Transformer(VOCAB, VOCAB, num_layers=2, d_model=16,
                                             num_heads=2, d_ff=32, max_length=16)),
}


@pytest.fixture
def source(rng):
    ids = rng.integers(4, VOCAB, size=(3, 6)).astype("int32")
    ids[0, 4:] = 0
    return ids


def teacher_forced_log_probs(model, sources, tokens, lengths):
    """log P(tokens[i, :lengths[i]]) of each row i, recomputed from the teacher-forcing logits.

    One forward pass for all rows (on JAX every eager call of a new model or shape compiles):
    the decoders are causal, so what follows a row's length cannot change its first logits.
    """
    tokens = np.asarray(tokens)
    target_in = np.concatenate([np.full((len(tokens), 1), START_ID), tokens[:, :-1]], axis=1)
    logits = numpy(model((np.asarray(sources), target_in.astype("int32")))).astype("float64")
    logits[..., [0, START_ID]] = -1e9
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
        -1, keepdims=True)) - logits.max(-1, keepdims=True)
    return [log_probs[row, np.arange(length), tokens[row, :length]].sum()
            for row, length in enumerate(lengths)]


@pytest.mark.parametrize("family", sorted(MODELS))
def test_scores_are_log_probs_and_beam_is_at_least_greedy(family, source):
    model = MODELS[family]()
    greedy = Greedy().decode(model, source, max_length=7, attention=True)
    beam = Beam(width=1, alpha=0.0).decode(model, source, max_length=7, attention=True)
    assert np.all(numpy(beam["scores"]) >= numpy(greedy["scores"]) - 1e-4)
    expected = teacher_forced_log_probs(
        model, np.concatenate([source, source]),
        np.concatenate([numpy(greedy["tokens"]), numpy(beam["tokens"])]),
        np.concatenate([numpy(greedy["lengths"]), numpy(beam["lengths"])]))
    np.testing.assert_allclose(
        np.concatenate([numpy(greedy["scores"]), numpy(beam["scores"])]), expected, atol=1e-3)
    for result in (greedy, beam):
        if model.has_attention:
            assert numpy(result["attention"]).shape == (3, 7, 6)
        else:
            assert "attention" not in result


def test_decoding_stops_at_end_token_and_pads_after_it():
    table = np.full((8, 8), 1e-6)
    table[START_ID, 4] = 1.0
    table[4, END_ID] = 1.0
    model, source = BigramModel(normalized(table)), np.ones((2, 2), "int32")
    for strategy in (Greedy(), Beam(width=2), Sample(seed=0)):
        result = strategy.decode(model, source, max_length=5)
        np.testing.assert_array_equal(numpy(result["tokens"]), [[4, END_ID, 0, 0, 0]] * 2)
        np.testing.assert_array_equal(numpy(result["lengths"]), [2, 2])


def uniform_table(vocab_size=8):
    """Every token but END equally likely after every token: outputs never end."""
    table = np.ones((vocab_size, vocab_size))
    table[:, END_ID] = 1e-9
    return normalized(table)


def test_sampling_draws_afresh_at_every_step_and_repeats_with_a_seed():
    model, source = BigramModel(uniform_table()), np.ones((4, 2), "int32")
    first = numpy(Sample(seed=7).decode(model, source, max_length=20)["tokens"])
    for row in first:  # 6 equally likely tokens: 20 equal draws would be a broken generator
        assert len(set(row)) >= 3
    assert len({tuple(row) for row in first}) == 4  # each row draws its own
    np.testing.assert_array_equal(
        numpy(Sample(seed=7).decode(model, source, max_length=20)["tokens"]), first)
    assert not np.array_equal(
        numpy(Sample(seed=8).decode(model, source, max_length=20)["tokens"]), first)
    assert not np.array_equal(
        numpy(Sample().decode(model, source, max_length=20)["tokens"]), first)


def test_sampling_follows_the_tempered_and_cut_distribution():
    probabilities = np.array([0.0, 0.0, 0.0, 0.0, 0.5, 0.3, 0.15, 0.05])
    table = np.tile(np.maximum(probabilities, 1e-9), (8, 1))
    model, source = BigramModel(normalized(table)), np.ones((4000, 1), "int32")

    def frequencies(strategy):
        tokens = numpy(strategy.decode(model, source, max_length=1)["tokens"])[:, 0]
        return np.bincount(tokens, minlength=8)[4:] / len(tokens)

    np.testing.assert_allclose(frequencies(Sample(seed=1)), probabilities[4:], atol=0.03)
    tempered = probabilities[4:] ** 2 / (probabilities[4:] ** 2).sum()
    np.testing.assert_allclose(frequencies(Sample(temperature=0.5, seed=2)), tempered, atol=0.03)
    np.testing.assert_allclose(frequencies(Sample(top_k=2, seed=3)), [0.625, 0.375, 0, 0],
                               atol=0.03)
    # The nucleus of 0.7: 0.5 alone is short of it, 0.5 + 0.3 reaches it.
    np.testing.assert_allclose(frequencies(Sample(top_p=0.7, seed=4)), [0.625, 0.375, 0, 0],
                               atol=0.03)


@pytest.mark.parametrize("strategy", [Sample(temperature=0.0), Sample(top_k=1, seed=3),
                                      Sample(top_p=1e-6, seed=3)])
def test_sampling_limits_are_greedy(strategy, source):
    model = MODELS["transformer"]()
    np.testing.assert_array_equal(numpy(strategy.decode(model, source, 6)["tokens"]),
                                  numpy(Greedy().decode(model, source, 6)["tokens"]))


@pytest.mark.parametrize("make, message", [
    (lambda: Beam(width=0), "width must be a positive int, got 0"),
    (lambda: Beam(width=2, n_best=3), "n_best must be at most the beam width 2, got 3"),
    (lambda: Beam(alpha=-1), "alpha must be a number >= 0.0, got -1"),
    (lambda: Sample(temperature=-0.5), "temperature must be a number >= 0.0, got -0.5"),
    (lambda: Sample(top_k=0), "top_k must be a positive int, got 0"),
    (lambda: Sample(top_p=1.5), r"top_p must be a number in \(0.0, 1.0\], got 1.5"),
    (lambda: Sample(seed="1"), "seed must be a non-negative int or None, got '1'"),
    (lambda: Greedy().decode(BigramModel(uniform_table()), np.ones((1, 1), "int32"), 0),
     "max_length must be a positive int, got 0"),
])
def test_bad_options_raise_one_line(make, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        make()
