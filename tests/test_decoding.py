"""Decoding over the model contract, backend-neutral: CI also runs this file under JAX."""

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
from keras import ops

from keras_s2s.decoding import (
    MAX_ALPHA,
    MAX_BEAM_WIDTH,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    MIN_TEMPERATURE,
    Beam,
    Greedy,
    Sample,
    length_penalty,
    strategy_from_options,
)
from keras_s2s.layers import LuongAttention, MultiHeadAttention
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


class ReorderedCacheAttention(MultiHeadAttention):
    """Keras's attention under a `_compute_attention` of its own: a beam search then reorders
    the Transformer's whole self-attention cache every step instead of reading it in place."""

    def _compute_attention(self, *args, **kwargs):
        return super()._compute_attention(*args, **kwargs)


def test_a_wide_beam_reads_the_cache_in_place_as_reordering_it_would(source):
    settings = dict(num_layers=2, d_model=16, num_heads=2, d_ff=32, max_length=16)
    in_place = MODELS["transformer"]()
    reordered = built(Transformer(VOCAB, VOCAB, attention_class=ReorderedCacheAttention,
                                  **settings))
    reordered.set_weights(in_place.get_weights())
    beam = Beam(width=4, alpha=0.6, n_best=3)
    results = [beam.decode(model, source, max_length=9, attention=True)
               for model in (in_place, reordered)]
    for name in ("tokens", "lengths"):
        np.testing.assert_array_equal(numpy(results[0][name]), numpy(results[1][name]))
    for name in ("scores", "attention"):
        np.testing.assert_allclose(numpy(results[0][name]), numpy(results[1][name]), atol=1e-5)
    tokens, lengths = numpy(results[0]["tokens"]), numpy(results[0]["lengths"])
    expected = teacher_forced_log_probs(model=in_place, sources=np.repeat(source, 3, axis=0),
                                        tokens=tokens.reshape(9, -1),
                                        lengths=lengths.reshape(-1))
    np.testing.assert_allclose(numpy(results[0]["scores"]).reshape(-1), np.asarray(expected) /
                               numpy(length_penalty(lengths.reshape(-1), 0.6)), atol=1e-4)


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


TEMPERATURE_RANGE = r"temperature must be 0 \(greedy search\) or a number in \[0.001, 100.0\], got "


@pytest.mark.parametrize("make, message", [
    (lambda: Beam(width=0), r"width must be an int in \[1, 256\], got 0"),
    (lambda: Beam(width=2, n_best=3), "n_best must be at most the beam width 2, got 3"),
    (lambda: Beam(alpha=-1), r"alpha must be a number in \[0.0, 10.0\], got -1"),
    (lambda: Sample(temperature=-0.5), TEMPERATURE_RANGE + "-0.5"),
    (lambda: Sample(top_k=0), r"top_k must be an int in \[1, 1048576\], got 0"),
    (lambda: Sample(top_p=1.5), r"top_p must be a number in \(0.0, 1.0\], got 1.5"),
    (lambda: Sample(seed="1"), r"seed must be an int in \[0, 2147483647\] or None, got '1'"),
    (lambda: Greedy().decode(BigramModel(uniform_table()), np.ones((1, 1), "int32"), 0),
     "max_length must be a positive int, got 0"),
])
def test_bad_options_raise_one_line(make, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        make()


@pytest.mark.parametrize("make, message", [
    (lambda: Sample(temperature=float("inf")), TEMPERATURE_RANGE + "inf"),
    (lambda: Sample(temperature=float("nan")), TEMPERATURE_RANGE + "nan"),
    (lambda: Sample(temperature=1e-300), TEMPERATURE_RANGE + "1e-300"),
    (lambda: Sample(temperature=101.0), TEMPERATURE_RANGE + "101.0"),
    (lambda: Sample(temperature=False), TEMPERATURE_RANGE + "False"),
    (lambda: Sample(top_k=2 ** 20 + 1), r"top_k must be an int in \[1, 1048576\], got 1048577"),
    (lambda: Sample(top_p=float("nan")), r"top_p must be a number in \(0.0, 1.0\], got nan"),
    (lambda: Sample(seed=2 ** 31), r"seed must be an int in \[0, 2147483647\] or None, got "
                                   r"2147483648"),
    (lambda: Beam(alpha=float("inf")), r"alpha must be a number in \[0.0, 10.0\], got inf"),
    (lambda: Beam(alpha=float("nan")), r"alpha must be a number in \[0.0, 10.0\], got nan"),
    (lambda: Beam(width=257), r"width must be an int in \[1, 256\], got 257"),
])
def test_non_finite_and_extreme_values_are_refused(make, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        make()


def test_the_extreme_values_allowed_still_decode_to_finite_scores(rng):
    model = BigramModel(normalized(rng.random((VOCAB, VOCAB)) ** 4))
    source = np.ones((3, 2), "int32")
    greedy = Greedy().decode(model, source, 6)
    coldest = Sample(temperature=MIN_TEMPERATURE, seed=2 ** 31 - 1).decode(model, source, 6)
    # At the lowest temperature the draws are the most probable tokens, scored by the model.
    np.testing.assert_array_equal(numpy(coldest["tokens"]), numpy(greedy["tokens"]))
    np.testing.assert_allclose(numpy(coldest["scores"]), numpy(greedy["scores"]), rtol=1e-5)
    for strategy in (Sample(temperature=MAX_TEMPERATURE, top_k=MAX_TOP_K, seed=0),
                     Beam(width=MAX_BEAM_WIDTH, alpha=MAX_ALPHA, n_best=4)):
        assert np.isfinite(numpy(strategy.decode(model, source, 6)["scores"])).all()


#: Decoding options as the CLI's flags give them (None: not given).
OPTION_VALUES = {"beam": (None, 3), "alpha": (None, 0.8), "n_best": (None, 2),
                 "temperature": (None, 0.5), "top_k": (None, 5), "top_p": (None, 0.9),
                 "seed": (None, 7)}


def outcome(make):
    """The strategy `make()` returns, or the one line of its ValueError."""
    try:
        return make()
    except ValueError as error:
        return str(error)


@pytest.mark.parametrize("tuned", [None, 1.2])
def test_strategy_from_options_covers_every_combination(tuned):
    """Every combination of the decoding options gives a strategy or one of three one-line
    errors; a beam search without its own alpha takes the tuned one."""
    outcomes = set()
    for values in itertools.product(*OPTION_VALUES.values()):
        options = dict(zip(OPTION_VALUES, values))
        result = outcome(lambda: strategy_from_options(**options, default_alpha=tuned))
        if isinstance(result, Beam) and options["alpha"] is None and tuned is not None:
            assert result.alpha == tuned
        outcomes.add(result if isinstance(result, str) else type(result).__name__)
    assert {"Greedy", "Beam", "Sample"} < outcomes and len(outcomes) == 6  # and three errors
    assert strategy_from_options(beam=2) == Beam(width=2)  # Beam's own defaults
    assert strategy_from_options(beam=2, default_alpha=1.2).alpha == 1.2


@pytest.fixture(scope="module")
def seq2seq_run(tmp_path_factory):
    """A tiny untrained run (the TF tokenizers and the command need the TensorFlow backend)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("runs and the command use TensorFlow")
    from tests.test_export import make_run_dir

    return str(make_run_dir(tmp_path_factory.mktemp("runs") / "seq2seq", "seq2seq"))


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "1e-300"], "temperature must be 0 (greedy search) or a number in "
                                  "[0.001, 100.0], got 1e-300"),
    (["--temperature", "inf"], "temperature must be 0 (greedy search) or a number in "
                               "[0.001, 100.0], got inf"),
    (["--beam", "2", "--alpha", "Infinity"], "alpha must be a number in [0.0, 10.0], got inf"),
    (["--beam", "2", "--alpha", "nan"], "alpha must be a number in [0.0, 10.0], got nan"),
    (["--beam", "100000"], "width must be an int in [1, 256], got 100000"),
    (["--top-k", "99999999"], "top_k must be an int in [1, 1048576], got 99999999"),
    (["--seed", "4294967296", "--top-k", "5"], "seed must be an int in [0, 2147483647]"),
])
def test_the_command_refuses_non_finite_and_extreme_values(flags, message, seq2seq_run, capsys):
    from keras_s2s.cli import main

    assert main(["translate", seq2seq_run, "a b", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"keras-s2s translate: error: {message}")
    assert len(err.splitlines()) == 1


def test_a_command_that_ran_tensorflow_ops_fails_with_one_line_on_stderr(seq2seq_run, tmp_path):
    """TensorFlow's C++ logs (such as oneDNN's "supports DT_INT64 only on platforms with
    AVX-512", printed when ops first run) stay off stderr: the error is its only line."""
    environment = {name: value for name, value in os.environ.items()
                   if name != "TF_CPP_MIN_LOG_LEVEL"}  # the user's, not the test suite's
    result = subprocess.run(
        [sys.executable, "-m", "keras_s2s.cli", "translate", seq2seq_run, "a b", "c",
         "--attention-plot", str(tmp_path / "attention.png")],
        capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"keras-s2s translate: error: the model in {seq2seq_run} has no attention to plot "
        f"(its family, seq2seq, decodes without attention)"]
    assert len(result.stdout.splitlines()) == 2  # both translated before the error


def contains(tokens, phrase):
    """Whether `phrase` appears contiguous in `tokens`."""
    tokens, phrase = list(tokens), list(phrase)
    return any(tokens[start:start + len(phrase)] == phrase
               for start in range(len(tokens) - len(phrase) + 1))


def padded(rows, width):
    """Lists of ids → an int32 array padded with PAD_ID to `width` columns."""
    return np.array([list(row) + [PAD_ID] * (width - len(row)) for row in rows], "int32")


@pytest.fixture(scope="module")
def random_bigrams():
    """Eight random bigram models (one per input row) over 6 tokens, three of them free (UNK,
    4, 5), their log tables, and every output of up to 4 tokens."""
    vocab_size, count = 6, 8
    tables = np.maximum(np.random.default_rng(3).dirichlet(
        np.full(vocab_size, 0.5), size=(count, vocab_size)), 1e-6)
    return (BigramTables(tables), np.arange(count, dtype="int32")[:, None],
            [log_table_without_forbidden(table) for table in tables],
            list(all_outputs(vocab_size, 4)))


#: The prefix of each of the eight rows (some empty).
PREFIXES = [(4,), (5, 5), (), (1, 4, 5), (5,), (), (4, 4), (1,)]


def test_greedy_and_sampling_continue_after_the_prefix(random_bigrams):
    model, source, log_tables, _ = random_bigrams
    prefix = padded(PREFIXES, 3)
    result = Greedy().decode(model, source, 4, prefix=prefix)
    for row, log_table in enumerate(log_tables):
        expected, previous = list(PREFIXES[row]), START_ID
        for token in expected:
            previous = token
        while len(expected) < 4 and previous != END_ID:  # step-by-step argmax after the prefix
            previous = int(np.argmax(log_table[previous]))
            expected.append(previous)
        tokens = list(numpy(result["tokens"])[row])
        assert tokens[:len(expected)] == expected and not any(tokens[len(expected):])
        assert float(numpy(result["scores"])[row]) == pytest.approx(  # the prefix counts
            score(log_table, expected, 0.0, 4), abs=1e-4)
    sampled = numpy(Sample(seed=5).decode(model, source, 4, prefix=prefix)["tokens"])
    for row, tokens in enumerate(sampled):
        assert list(tokens[:len(PREFIXES[row])]) == list(PREFIXES[row])


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_wide_beam_returns_the_best_continuation_of_the_prefix(alpha, random_bigrams):
    model, source, log_tables, outputs = random_bigrams
    result = Beam(width=len(outputs), alpha=alpha).decode(
        model, source, 4, prefix=padded(PREFIXES, 3))
    for row, log_table in enumerate(log_tables):
        continuations = [output for output in outputs
                         if output[:len(PREFIXES[row])] == PREFIXES[row]]
        scores = [score(log_table, output, alpha, 4) for output in continuations]
        best = continuations[int(np.argmax(scores))]
        assert float(numpy(result["scores"])[row]) == pytest.approx(max(scores), abs=1e-4)
        assert list(numpy(result["tokens"])[row][:len(best)]) == list(best)


#: Two phrases per row (an all-padding phrase is none).
CONSTRAINTS = [[(4, 4), (5,)], [(5, 4), ()], [(1,), (4,)], [(4, 5, 4), ()],
               [(5, 5), (5,)], [(), ()], [(1, 4), (4, 1)], [(4,), (4,)]]


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_wide_constrained_beam_returns_the_best_output_holding_every_phrase(
        alpha, random_bigrams):
    model, source, log_tables, outputs = random_bigrams
    constraints = np.stack([padded(row, 3) for row in CONSTRAINTS])
    n_best = 3
    result = {name: numpy(value) for name, value in Beam(
        width=len(outputs), alpha=alpha, n_best=n_best).decode(
        model, source, 4, constraints=constraints).items()}
    for row, log_table in enumerate(log_tables):
        allowed = [output for output in outputs
                   if all(contains(output, phrase) for phrase in CONSTRAINTS[row])]
        scores = sorted((score(log_table, output, alpha, 4) for output in allowed),
                        reverse=True)
        np.testing.assert_allclose(result["scores"][row], scores[:n_best], atol=1e-4)
        for rank in range(n_best):
            tokens = result["tokens"][row, rank, :result["lengths"][row, rank]]
            assert all(contains(tokens, phrase) for phrase in CONSTRAINTS[row])


def test_phrases_that_do_not_fit_give_the_cut_off_outputs_missing_the_fewest_tokens(
        random_bigrams):
    """max_length 2 holds "4 4" or "5" with END, never both: END stays forbidden, and the
    outputs cut off at max_length rank by the constraint tokens they miss, then by score."""
    model, source, log_tables, _ = random_bigrams
    phrases = [(4, 4), (5,)]
    constraints = np.stack([padded(phrases, 2)] * len(log_tables))
    result = Beam(width=16, alpha=0.0, n_best=3).decode(model, source, 2,
                                                        constraints=constraints)
    cut_off = [output for output in itertools.product((1, 4, 5), repeat=2)]
    for row, log_table in enumerate(log_tables):
        ranked = sorted(cut_off, key=lambda output: (
            sum(len(phrase) for phrase in phrases if not contains(output, phrase)),
            -score(log_table, output, 0.0, 2)))
        np.testing.assert_array_equal(numpy(result["tokens"])[row], ranked[:3])


@pytest.mark.parametrize("strategy", [Greedy(), Sample(seed=1)])
def test_greedy_search_and_sampling_refuse_constraints(strategy):
    with pytest.raises(ValueError, match=r"^constraints need beam search \(Beam\(width\)\): "
                                         r"(Greedy|Sample)\(.*\) keeps one hypothesis"):
        strategy.decode(BigramModel(uniform_table()), np.ones((1, 2), "int32"), 4,
                        constraints=np.full((1, 1, 1), 4, "int32"))


def test_constrained_beam_with_a_prefix_scores_its_outputs_on_a_real_model(source):
    """Every hypothesis starts with the prefix and holds the phrases, though an untrained
    model rarely ends an output; its score is the model's log-probability of the whole output,
    prefix included."""
    model = MODELS["seq2seq"]()
    prefixes = [(7, 8), (), (9,)]
    phrases = np.stack([padded([(5, 6), (11,)], 2)] * 3)
    result = {name: numpy(value) for name, value in Beam(width=3, alpha=0.0, n_best=2).decode(
        model, source, 8, prefix=padded(prefixes, 2), constraints=phrases).items()}
    tokens, lengths = result["tokens"].reshape(6, 8), result["lengths"].reshape(-1)
    for row in range(6):
        output, prefix = tokens[row, :lengths[row]], prefixes[row // 2]
        assert tuple(output[:len(prefix)]) == prefix
        assert contains(output, (5, 6)) and contains(output, (11,))
    np.testing.assert_allclose(result["scores"].reshape(-1), teacher_forced_log_probs(
        model, np.repeat(source, 2, axis=0), tokens, lengths), atol=1e-3)
