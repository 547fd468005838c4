"""Greedy search, beam search and sampling, written once over the model contract.

Every strategy only calls `model.encode`, `model.initial_state` and `model.decode_step` (see
`keras_s2s.models.base`), so it serves the RNN, attention and Transformer families alike, uses
the Transformer's key/value cache, and runs inside a `tf.function` or a SavedModel: the loop
is a `keras.ops.while_loop` over fixed-shape tensors, and it stops as soon as every sequence
has produced the end token.

Each strategy returns a dict of tensors:

- `tokens` `(B, max_length)`: output ids after the start token, end token included, then 0.
- `lengths` `(B,)`: number of tokens up to and including the end token.
- `scores` `(B,)`: log-probability of the output (beam search: divided by the length
  penalty, the score the beams were ranked by).
- `attention` `(B, max_length, S)`: the attention weights of each output step over the source
  (attention models only).
"""

import keras
from keras import ops

from keras_s2s.special_tokens import END_ID, PAD_ID, START_ID
from keras_s2s.tensor_ops import write_at

NEG_INF = -1e9


def _check_max_length(max_length):
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= 0:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")


def _next_token_log_probs(logits, start_id):
    """(B, V) logits → log-probabilities with padding and the start token ruled out."""
    vocab_ids = ops.arange(ops.shape(logits)[-1])
    forbidden = ops.logical_or(ops.equal(vocab_ids, PAD_ID), ops.equal(vocab_ids, start_id))
    return ops.log_softmax(ops.where(forbidden, NEG_INF, ops.cast(logits, "float32")), axis=-1)


def _unfinished(max_length):
    """Loop condition: steps remain and some sequence has not produced the end token."""
    def cond(loop_vars):
        return ops.logical_and(loop_vars["step"] < max_length,
                               ops.logical_not(ops.all(loop_vars["finished"])))
    return cond


def _decode_one_per_input(model, source_ids, max_length, choose_next, start_id, end_id):
    """Shared loop of greedy search and sampling: one hypothesis per input."""
    _check_max_length(max_length)
    source_ids = ops.convert_to_tensor(source_ids, dtype="int32")
    memory = model.encode(source_ids, training=False)
    state = model.initial_state(memory, max_length)
    batch_size, source_length = ops.shape(source_ids)[0], ops.shape(source_ids)[1]
    loop_vars = {
        "step": ops.convert_to_tensor(0, dtype="int32"),
        "previous": ops.full((batch_size,), start_id, dtype="int32"),
        "state": state,
        "tokens": ops.zeros((batch_size, max_length), dtype="int32"),
        "scores": ops.zeros((batch_size,), dtype="float32"),
        "finished": ops.zeros((batch_size,), dtype="bool"),
    }
    if model.has_attention:
        loop_vars["attention"] = ops.zeros((batch_size, max_length, source_length))

    def body(loop_vars):
        step, finished = loop_vars["step"], loop_vars["finished"]
        logits, state, attention = model.decode_step(
            loop_vars["previous"], memory, loop_vars["state"], step)
        log_probs = _next_token_log_probs(logits, start_id)  # (B, V)
        next_ids = ops.where(finished, PAD_ID, ops.cast(choose_next(log_probs), "int32"))
        next_log_probs = ops.take_along_axis(log_probs, next_ids[:, None], axis=-1)[:, 0]
        new_vars = {
            "step": step + 1,
            "previous": next_ids,
            "state": state,
            "tokens": write_at(loop_vars["tokens"], next_ids[:, None], step, axis=1),
            "scores": loop_vars["scores"] + ops.where(finished, 0.0, next_log_probs),
            "finished": ops.logical_or(finished, ops.equal(next_ids, end_id)),
        }
        if "attention" in loop_vars:
            new_vars["attention"] = write_at(
                loop_vars["attention"], ops.cast(attention, "float32")[:, None], step, axis=1)
        return (new_vars,)

    (result,) = ops.while_loop(_unfinished(max_length), body, (loop_vars,),
                               maximum_iterations=max_length)
    outputs = {"tokens": result["tokens"], "scores": result["scores"],
               "lengths": _lengths(result["tokens"])}
    if "attention" in result:
        outputs["attention"] = result["attention"]
    return outputs


def _lengths(tokens):
    """Count of non-pad tokens per row (output rows are padded with 0 after the end token)."""
    return ops.sum(ops.cast(ops.not_equal(tokens, PAD_ID), "int32"), axis=-1)


def _most_probable(log_probs):
    """Arg-max as a top-1 (TFLite has TOPK_V2; the TF lowering of `ops.argmax` is not builtin)."""
    return ops.top_k(log_probs, k=1)[1][:, 0]


def greedy_search(model, source_ids, max_length, start_id=START_ID, end_id=END_ID):
    """Pick the most probable token at every step. `source_ids`: `(B, S)` int ids."""
    return _decode_one_per_input(model, source_ids, max_length, _most_probable, start_id,
                                 end_id)


def sample(model, source_ids, max_length, temperature=1.0, top_k=None, seed=None,
           start_id=START_ID, end_id=END_ID):
    """Draw each token from softmax(logits / temperature), optionally among the `top_k` best.

    `seed` (int) makes the draws repeatable.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k <= 0):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    seed_generator = keras.random.SeedGenerator(seed)

    def choose_next(log_probs):
        logits = log_probs / temperature
        if top_k is not None:
            kth_best = ops.top_k(logits, k=top_k)[0][:, -1:]  # (B, 1)
            logits = ops.where(logits < kth_best, NEG_INF, logits)
        return keras.random.categorical(logits, 1, seed=seed_generator)[:, 0]

    return _decode_one_per_input(model, source_ids, max_length, choose_next, start_id, end_id)


def length_penalty(lengths, alpha):
    """GNMT length penalty lp(Y) = ((5 + |Y|) / 6)^α (Wu et al., 2016, eq. 14)."""
    return ops.power((5.0 + ops.cast(lengths, "float32")) / 6.0, alpha)


def beam_search(model, source_ids, max_length, beam_width=4, alpha=0.6, start_id=START_ID,
                end_id=END_ID, return_all_beams=False):
    """Keep the `beam_width` best hypotheses per input, ranked by log P(Y) / lp(Y).

    A finished hypothesis keeps its score and competes with the live ones; the search stops
    when every beam of every input has ended or at `max_length`. With `beam_width=1` this is
    greedy search. With `return_all_beams`, outputs have a beam axis after the batch axis,
    best first.
    """
    _check_max_length(max_length)
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width <= 0:
        raise ValueError(f"beam_width must be a positive int, got {beam_width!r}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha!r}")
    source_ids = ops.convert_to_tensor(source_ids, dtype="int32")
    batch_size, source_length = ops.shape(source_ids)[0], ops.shape(source_ids)[1]
    k = beam_width

    def tile(tensor):  # (B, ...) → (B·k, ...), each input's beams adjacent
        return ops.repeat(tensor, k, axis=0)

    memory = keras.tree.map_structure(tile, model.encode(source_ids, training=False))
    state = model.initial_state(memory, max_length)
    # Only beam 0 is alive at first, so the first step does not pick k copies of one token.
    initial_log_probs = ops.concatenate(
        [ops.zeros((batch_size, 1)), ops.full((batch_size, k - 1), NEG_INF)], axis=1)
    loop_vars = {
        "step": ops.convert_to_tensor(0, dtype="int32"),
        "previous": ops.full((batch_size * k,), start_id, dtype="int32"),
        "state": state,
        "tokens": ops.zeros((batch_size, k, max_length), dtype="int32"),
        "log_probs": initial_log_probs,  # (B, k) sum of log-probabilities
        "lengths": ops.zeros((batch_size, k), dtype="int32"),
        "finished": ops.zeros((batch_size, k), dtype="bool"),
    }
    if model.has_attention:
        loop_vars["attention"] = ops.zeros((batch_size, k, max_length, source_length))

    def body(loop_vars):
        step, finished = loop_vars["step"], loop_vars["finished"]
        logits, state, attention = model.decode_step(
            loop_vars["previous"], memory, loop_vars["state"], step)
        vocab_size = ops.shape(logits)[-1]
        step_log_probs = ops.reshape(_next_token_log_probs(logits, start_id),
                                     (batch_size, k, vocab_size))
        # A finished beam has exactly one continuation, padding, at no cost.
        only_padding = ops.where(ops.arange(vocab_size) == PAD_ID, 0.0, NEG_INF)  # (V,)
        step_log_probs = ops.where(finished[..., None], only_padding, step_log_probs)
        candidate_log_probs = loop_vars["log_probs"][..., None] + step_log_probs  # (B, k, V)
        candidate_lengths = loop_vars["lengths"] + ops.cast(ops.logical_not(finished), "int32")
        candidate_scores = candidate_log_probs / length_penalty(candidate_lengths, alpha)[
            ..., None]
        _, top_indices = ops.top_k(
            ops.reshape(candidate_scores, (batch_size, k * vocab_size)), k=k)  # (B, k)
        beam_origin = top_indices // vocab_size  # which beam each winner extends
        next_ids = ops.cast(top_indices % vocab_size, "int32")

        def reorder(tensor):  # (B, k, ...) gathered by beam_origin
            return ops.take_along_axis(
                tensor, ops.reshape(beam_origin, (batch_size, k) + (1,) * (
                    len(tensor.shape) - 2)), axis=1)

        flat_origin = ops.reshape(
            beam_origin + ops.arange(batch_size)[:, None] * k, (-1,))  # (B·k,)
        new_vars = {
            "step": step + 1,
            "previous": ops.reshape(next_ids, (-1,)),
            "state": keras.tree.map_structure(
                lambda tensor: ops.take(tensor, flat_origin, axis=0), state),
            "tokens": write_at(reorder(loop_vars["tokens"]), next_ids[..., None], step, axis=2),
            "log_probs": ops.take_along_axis(
                ops.reshape(candidate_log_probs, (batch_size, k * vocab_size)), top_indices,
                axis=1),
            "lengths": reorder(candidate_lengths),
        }
        was_finished = reorder(finished)
        new_vars["finished"] = ops.logical_or(was_finished, ops.equal(next_ids, end_id))
        if "attention" in loop_vars:
            step_attention = ops.reshape(ops.cast(attention, "float32"),
                                         (batch_size, k, 1, source_length))
            step_attention = ops.where(was_finished[..., None, None], 0.0,
                                       reorder(step_attention))
            new_vars["attention"] = write_at(
                reorder(loop_vars["attention"]), step_attention, step, axis=2)
        return (new_vars,)

    (result,) = ops.while_loop(_unfinished(max_length), body, (loop_vars,),
                               maximum_iterations=max_length)
    scores = result["log_probs"] / length_penalty(result["lengths"], alpha)  # (B, k)
    order = ops.argsort(-scores, axis=1)  # best first
    outputs = {
        "tokens": ops.take_along_axis(result["tokens"], order[..., None], axis=1),
        "scores": ops.take_along_axis(scores, order, axis=1),
        "lengths": ops.take_along_axis(result["lengths"], order, axis=1),
    }
    if "attention" in result:
        outputs["attention"] = ops.take_along_axis(
            result["attention"], order[..., None, None], axis=1)
    if not return_all_beams:
        outputs = {name: value[:, 0] for name, value in outputs.items()}
    return outputs


def choose_strategy(beam_width=1, alpha=0.6, temperature=None, top_k=None, seed=None):
    """`(strategy, options)` for `decode`: greedy by default, beam search when `beam_width` > 1,
    sampling when `temperature` or `top_k` is given."""
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
        raise ValueError(f"beam_width must be a positive int, got {beam_width!r}")
    if temperature is not None or top_k is not None:
        if beam_width > 1:
            raise ValueError("choose beam search (beam_width > 1) or sampling, not both")
        return "sample", dict(temperature=temperature or 1.0, top_k=top_k, seed=seed)
    if beam_width > 1:
        return "beam", dict(beam_width=beam_width, alpha=alpha)
    return "greedy", {}


def decode(model, source_ids, max_length, strategy="greedy", **options):
    """Dispatch to `greedy_search`, `beam_search` or `sample` by name."""
    strategies = {"greedy": greedy_search, "beam": beam_search, "sample": sample}
    if strategy not in strategies:
        raise ValueError(f"strategy must be one of {tuple(strategies)}, got {strategy!r}")
    return strategies[strategy](model, source_ids, max_length, **options)
