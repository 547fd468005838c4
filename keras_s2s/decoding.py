"""Decoding strategies as values: `Greedy()`, `Beam(width, alpha, n_best)` and
`Sample(temperature, top_k, top_p, seed)`, each written once over the model contract.

A strategy is a frozen dataclass whose arguments are checked when it is made, so the same value
travels unchanged from the command line or the Python API through the `Translator` to an
export. Its `decode` only calls `model.encode`, `model.initial_state` and `model.decode_step`
(see `keras_s2s.models.base`), so it serves every family, uses the Transformer's key/value
cache, and runs eagerly on every Keras backend, inside a `tf.function`, a SavedModel, XLA and
(greedy search) TFLite: the loop is a `keras.ops.while_loop` over fixed-shape tensors that
stops once no hypothesis can change any more.

`decode(model, source_ids, max_length)` returns a dict of tensors:

- `tokens` `(B, max_length)`: output ids after the start token, end token included, then the
  model's padding id (0 by default).
- `lengths` `(B,)`: number of tokens up to and including the end token (`max_length` for an
  output cut off there).
- `scores` `(B,)`: log-probability of the output under the model (beam search: divided by the
  GNMT length penalty, the score hypotheses are ranked by).
- `attention` `(B, max_length, S)`: the attention weights of each output step over the source,
  only when asked for (`attention=True`) and the model has attention.

With `Beam(n_best=N)`, N > 1, every output has a hypothesis axis after the batch axis (`tokens`
`(B, N, max_length)`, ...), best first.

Target prefixes (`decode(..., prefix=ids)`, every strategy): while a row's prefix lasts, every
other token is ruled out in the same loop (so it keeps its fixed shape and exports); the
output starts with the prefix and its score counts the prefix's log-probabilities, so it is
the score of the whole output. A prefix longer than `max_length` is cut there.

Lexical constraints (`decode(..., constraints=ids)`, beam search only; greedy search and
sampling raise a one-line ValueError): phrases every returned hypothesis contains, contiguous,
in any order, whenever `max_length` leaves room for them. This is the dynamic beam allocation
of Post & Vilar (2018, https://aclanthology.org/N18-1119/) in the vectorized form of Hu et al.
(2019, https://aclanthology.org/N19-1090/), as fairseq's `LexicallyConstrainedBeamSearch`
implements it per sentence in Python: each step's candidates are the usual 2·width best plus,
for every hypothesis, the next token of each phrase it has not met, its own best token and
END; the beam is shared out among banks (the constraint tokens a candidate holds) by striping,
the best of every bank first, deepest bank first. We chose it over grid beam search (Hokamp &
Liu, 2017), whose beam grows with the number of constraint tokens, because DBA keeps the
beam width fixed whatever the constraints, so one fixed-shape loop serves them all. Each
hypothesis tracks every phrase with the Shift-And matcher (all its partial matches at once,
fixed shape) and whether it was met; END is ruled out until every phrase is met, so every
finished hypothesis meets them all, and the hypotheses returned are those meeting them all,
best first, before any other. Only when the search found fewer such hypotheses than asked
for (always when `max_length` cannot fit the phrases; with a beam too narrow for n_best, or
a model that will not produce a phrase soon enough, possibly) do outputs cut off at
`max_length` missing some phrases follow, those missing the fewest constraint tokens first,
then by score. Any number of phrases works
with any width (more phrases than the width is allowed: the striping still gives the deepest
bank the first slot), though a narrow beam then finds worse outputs.

Example:

>>> from keras_s2s.decoding import Beam, Sample
>>> Beam(width=0)
Traceback (most recent call last):
...
ValueError: width must be an int in [1, 256], got 0
>>> Sample(temperature=0.8, top_p=0.9)
Sample(temperature=0.8, top_k=None, top_p=0.9, seed=None)

Every argument is bounded, so a value is finite and decodes to a meaningful answer (a
temperature of 1e-300 overflows the scaled logits; an infinite alpha ranks every hypothesis
the same): see `MAX_BEAM_WIDTH`, `MAX_ALPHA`, `MIN_TEMPERATURE`, `MAX_TEMPERATURE`,
`MAX_TOP_K` and `MAX_SEED`. `strategy_from_options` turns the options a user gives (on the
command line or in the explorer's requests) into one of these values.
"""

import dataclasses

import keras
from keras import ops

from keras_s2s.checks import check_int, check_number, check_positive_int
from keras_s2s.models.base import beam_state, reorder_state, special_ids
from keras_s2s.tensor_ops import write_at

NEG_INF = -1e9

#: The widest beam: each step ranks 2·width·V continuations per input.
MAX_BEAM_WIDTH = 256
#: The largest length penalty exponent (GNMT tuned α in [0.6, 1]; 10 already favours the
#: longest hypothesis whatever its probability).
MAX_ALPHA = 10.0
#: Sampling temperatures other than 0 (greedy search): below 1e-3 the scaled log-probabilities
#: overflow float32 and the draw is no longer from a distribution; above 100 it is uniform.
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-3, 100.0
#: The largest top_k (more than any vocabulary; a larger top_k than the vocabulary keeps all).
MAX_TOP_K = 1 << 20
#: The largest sampling seed: seeds travel as int32 tensors.
MAX_SEED = 2 ** 31 - 1
#: The fewest decoder rows a decoding loop compiled with XLA is given. With one row, XLA's CPU
#: backend drops its unit dimensions and fuses each attention projection (a `(D, H, d)` kernel
#: seen as `(D, H·d)`) into a loop of its own that walks the kernel column by column; from two
#: rows it calls its matrix kernel. A greedy step at batch 1, d_model 256: 0.99 ms with one
#: row, 0.41 ms with the row twice (`python bench/decoding_speed.py --latency-only`).
MIN_COMPILED_ROWS = 2


class Strategy:
    """Base of the decoding strategies: a value that knows how to decode.

    Subclasses are frozen dataclasses and implement `decode`.
    """

    #: Hypotheses returned per input; more than one adds a hypothesis axis to the outputs.
    n_best = 1
    #: Whether `decode` draws random numbers from its `seed`. The Translator and the export
    #: then pass the seed in as a tensor (one compiled function serves every seed), drawn
    #: afresh per call when the strategy's own `seed` is None.
    random = False
    seed = None
    #: Decoder rows per input: the hypotheses each step extends (a beam search's width).
    rows_per_input = 1

    def without_seed(self):
        """This strategy with its own `seed` left to the caller's `seed` tensor."""
        return dataclasses.replace(self, seed=None) if self.random else self

    def decode(self, model, source_ids, max_length, attention=False, seed=None,
               start_id=None, end_id=None, prefix=None, constraints=None):
        """Decode `source_ids` `(B, S)` int ids into at most `max_length` tokens per output.

        Args:
            model: a model keeping the contract of `keras_s2s.models.base`.
            source_ids: `(B, S)` int ids, END at the end of each row, padded with 0.
            max_length: a positive int, the most output tokens (END included).
            attention: also return the attention weights (attention models only).
            seed: `(2,)` int32 tensor, the random draws of this call (random strategies only;
                deterministic ones ignore it). Default: from the strategy's own seed.
            start_id, end_id: the ids that start and end an output; None (the default): the
                model's own (`keras_s2s.models.base.special_ids`).
            prefix: `(B, P)` int ids each output starts with, padded at the end with the
                model's padding id (a row of padding: no prefix), or None. Decoding goes on
                after them; the score counts their log-probabilities (it is the whole output's).
            constraints: `(B, C, L)` int ids, C phrases per input of up to L tokens, padded
                with the padding id (an all-padding phrase is none), or None: phrases every
                output must contain (beam search only; see `Beam`).

        Returns:
            The dict of tensors described in `keras_s2s.decoding`.
        """
        raise NotImplementedError


def min_compiled_inputs(rows_per_input):
    """The fewest inputs to compile a decoding loop of `rows_per_input` decoder rows each for
    (`MIN_COMPILED_ROWS`): callers pad a smaller batch with copies of its first input."""
    return -(-MIN_COMPILED_ROWS // rows_per_input)


def check_strategy(strategy):
    """Raise a one-line ValueError unless `strategy` is a `Strategy` value."""
    if not isinstance(strategy, Strategy):
        raise ValueError(f"strategy must be a decoding strategy such as Greedy(), Beam(4) or "
                         f"Sample(temperature=0.8), got {strategy!r}")


@dataclasses.dataclass(frozen=True)
class Greedy(Strategy):
    """Pick the most probable token at every step."""

    def decode(self, model, source_ids, max_length, attention=False, seed=None,
               start_id=None, end_id=None, prefix=None, constraints=None):
        _refuse_constraints(self, constraints)
        return token_by_token(model, source_ids, max_length,
                              lambda log_probs, step: _most_probable(log_probs), attention,
                              start_id, end_id, prefix)


@dataclasses.dataclass(frozen=True)
class Sample(Strategy):
    """Draw each token from softmax(logits / temperature), among the `top_k` most likely tokens
    and the smallest set of them holding `top_p` of the probability (nucleus sampling, Holtzman
    et al., 2020, https://arxiv.org/abs/1904.09751), in that order.

    Args:
        temperature: float in [1e-3, 100], default 1.0; or 0, which picks the most probable
            token (greedy search).
        top_k: int in [1, 2**20] or None (default: every token).
        top_p: float in (0, 1] or None (default: no nucleus cut).
        seed: int in [0, 2**31 - 1] or None. An int makes the draws repeatable; None draws
            fresh randomness
            (`keras.random`) when no `seed` tensor is passed to `decode`.

    The random numbers are a counter-based hash of (seed, step, row, token) in `keras.ops`
    integer arithmetic, turned into Gumbel noise (the Gumbel-max trick draws exactly from the
    softmax): stateless, so each step of the loop draws anew on every backend, one traced
    function serves every seed, and it exports to a SavedModel. (`keras.random` takes a tensor
    seed on JAX only, and its `SeedGenerator` is a variable that neither a `tf.function` nor a
    JAX loop can advance.) Scores are log-probabilities under the model itself, before the
    temperature and the cuts.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    random = True

    def __post_init__(self):
        if not _is_greedy_temperature(self.temperature):
            try:
                check_number("temperature", self.temperature, MIN_TEMPERATURE, MAX_TEMPERATURE)
            except ValueError:
                raise ValueError(f"temperature must be 0 (greedy search) or a number in "
                                 f"[{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], got "
                                 f"{self.temperature!r}") from None
        if self.top_k is not None:
            check_int("top_k", self.top_k, 1, MAX_TOP_K)
        if self.top_p is not None:
            check_number("top_p", self.top_p, 0.0, 1.0, low_inclusive=False)
        check_int("seed", self.seed, 0, MAX_SEED, optional=True)

    def seed_tensor(self, stream=0):
        """The `(2,)` int32 seed of `decode` for this strategy's own seed and `stream`."""
        if self.seed is None:
            return keras.random.randint((2,), 0, 2 ** 31 - 1, dtype="int32")
        return ops.convert_to_tensor([self.seed, stream], dtype="int32")

    def decode(self, model, source_ids, max_length, attention=False, seed=None,
               start_id=None, end_id=None, prefix=None, constraints=None):
        _refuse_constraints(self, constraints)
        if self.temperature == 0:  # the limit of the softmax: the most probable token
            return Greedy().decode(model, source_ids, max_length, attention, None, start_id,
                                   end_id, prefix)
        key = _key(self.seed_tensor() if seed is None else seed)

        def choose_next(log_probs, step):
            logits = _filtered(log_probs / self.temperature, self.top_k, self.top_p)
            return ops.argmax(logits + _gumbel_noise(key, step, ops.shape(logits)), axis=-1)

        return token_by_token(model, source_ids, max_length, choose_next, attention,
                              start_id, end_id, prefix)


@dataclasses.dataclass(frozen=True)
class Beam(Strategy):
    """Beam search: the `width` best live hypotheses per input, finished ones in a pool of their
    own, ranked by log P(Y) / lp(Y) with the GNMT length penalty lp (Wu et al., 2016,
    https://arxiv.org/abs/1609.08144, eq. 14).

    Args:
        width: int in [1, 256], default 4: live hypotheses kept per input.
        alpha: float in [0, 10], default 0.6: the length penalty's exponent (0: plain log P).
        n_best: int in [1, width], default 1: hypotheses returned per input, best first.

    As in GNMT, tensor2tensor and fairseq, each step ranks the 2·width best continuations: those
    ending with END enter the finished pool (the `width` best finished so far), the best
    `width` others stay live, so a finished hypothesis is never pushed out by live ones. The
    search stops when no live hypothesis can beat the worst in a full pool (its log-probability
    over lp(max_length) bounds every continuation's score) or at `max_length`, where the live
    hypotheses, cut off, compete with the finished ones. Tokens are stored per step with the
    beam they extend and read back once at the end (as `tf.addons.seq2seq.gather_tree` does),
    instead of reordering whole buffers every step. Unlike greedy search, width 1 may return a
    hypothesis that ends earlier than the greedy one, when it scores better.
    """

    width: int = 4
    alpha: float = 0.6
    n_best: int = 1

    @property
    def rows_per_input(self):
        return self.width

    def __post_init__(self):
        check_int("width", self.width, 1, MAX_BEAM_WIDTH)
        check_number("alpha", self.alpha, 0.0, MAX_ALPHA)
        check_int("n_best", self.n_best, 1)
        if self.n_best > self.width:
            raise ValueError(f"n_best must be at most the beam width {self.width}, got "
                             f"{self.n_best}")

    def decode(self, model, source_ids, max_length, attention=False, seed=None,
               start_id=None, end_id=None, prefix=None, constraints=None):
        return _beam_search(model, source_ids, max_length, self, attention, start_id, end_id,
                            prefix, constraints)


def beam_search(model, source_ids, max_length, width, alpha, n_best, attention=False,
                prefix=None, constraints=None):
    """`Beam(width, alpha, n_best).decode` with the settings as scalar tensors (int32 `width`
    and `n_best`, float32 `alpha`), so one traced function serves every setting (the export's
    `beam` and `constrained` signatures), TensorFlow only; the outputs always have the
    hypothesis axis. `prefix` and `constraints` are `Strategy.decode`'s. The caller checks the
    bounds `Beam` checks in Python (`width` in [1, MAX_BEAM_WIDTH], ...)."""
    return _beam_search(model, source_ids, max_length, _BeamSettings(width, alpha, n_best),
                        attention, None, None, prefix, constraints)


@dataclasses.dataclass(frozen=True)
class _BeamSettings:
    """What `_beam_search` reads of a `Beam`, as tensors: no checks, no dropped axis."""

    width: object
    alpha: object
    n_best: object


def sample(model, source_ids, max_length, temperature, top_k, top_p, seed, attention=False):
    """`Sample(temperature, top_k, top_p).decode(..., seed=seed)` with the settings as scalar
    tensors (float32 `temperature` and `top_p`, int32 `top_k`), so one traced function serves
    every setting (the export's `sample` signature), TensorFlow only. Temperature 0 picks the
    most probable token, top_k 0 keeps every token and top_p 1 cuts none, as None does in
    `Sample`. The caller checks the bounds `Sample` checks in Python."""
    key = _key(seed)

    def choose_next(log_probs, step):
        vocab_size = ops.shape(log_probs)[-1]
        kept = ops.where(top_k > 0, ops.minimum(top_k, vocab_size), vocab_size)
        logits = log_probs / ops.maximum(temperature, MIN_TEMPERATURE)
        kth_best = ops.top_k(logits, k=kept)[0][:, -1:]  # (B, 1)
        logits = _filtered(ops.where(logits < kth_best, NEG_INF, logits), None, top_p)
        drawn = ops.argmax(logits + _gumbel_noise(key, step, ops.shape(logits)), axis=-1)
        return ops.where(temperature == 0, _most_probable(log_probs), drawn)

    return token_by_token(model, source_ids, max_length, choose_next, attention)


def _key(seed):
    """The `(2,)` int32 seed of a sampling call → one int32 key of its random draws."""
    seed = ops.cast(seed, "int32")
    return _hash(ops.bitwise_xor(_hash(seed[0]), seed[1]))


def _is_greedy_temperature(temperature):
    """Whether `temperature` is the number 0 (a bool is no temperature)."""
    return isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and (
        temperature == 0)


def strategy_from_options(beam=None, alpha=None, n_best=None, temperature=None, top_k=None,
                          top_p=None, seed=None, default_alpha=None):
    """The strategy a user's decoding options ask for; None means "not given".

    Options of beam search (`beam`, the width; `alpha`; `n_best`) and of sampling
    (`temperature`, `top_k`, `top_p`, `seed`) exclude each other; none gives `Greedy()`.
    Beam search's alpha is `alpha`, else `default_alpha` (the one `tune-alpha` stored in a
    run), else `Beam`'s default. Raises a one-line ValueError naming the contradiction, or the
    strategy's own for a value out of its bounds.
    """
    sampling = {name: value for name, value in (("temperature", temperature), ("top_k", top_k),
                                                ("top_p", top_p), ("seed", seed))
                if value is not None}
    if sampling and any(value is not None for value in (beam, alpha, n_best)):
        raise ValueError("choose beam search (--beam, --alpha, --n-best) or sampling "
                         "(--temperature, --top-k, --top-p, --seed), not both")
    if sampling:
        if set(sampling) == {"seed"}:
            raise ValueError("--seed applies to sampling: give --temperature, --top-k or "
                             "--top-p too")
        return Sample(**sampling)
    if beam is not None:
        beam_options = {"alpha": default_alpha if alpha is None else alpha, "n_best": n_best}
        return Beam(width=beam, **{name: value for name, value in beam_options.items()
                                   if value is not None})
    if alpha is not None or n_best is not None:
        raise ValueError("--alpha and --n-best apply to beam search: give --beam WIDTH too")
    return Greedy()


def _next_token_log_probs(logits, pad_id, start_id):
    """(B, V) logits → log-probabilities with padding and the start token ruled out."""
    vocab_ids = ops.arange(ops.shape(logits)[-1])
    forbidden = ops.logical_or(ops.equal(vocab_ids, pad_id), ops.equal(vocab_ids, start_id))
    return ops.log_softmax(ops.where(forbidden, NEG_INF, ops.cast(logits, "float32")), axis=-1)


def _most_probable(log_probs):
    """Arg-max as a top-1 (TFLite has TOPK_V2; the TF lowering of `ops.argmax` is not builtin)."""
    return ops.top_k(log_probs, k=1)[1][:, 0]


def _filtered(logits, top_k, top_p):
    """(B, V) logits with the tokens outside the top k and outside the nucleus set to NEG_INF.

    The nucleus is the smallest set of most likely tokens whose probability reaches `top_p`: a
    token stays when the tokens more likely than it hold less than `top_p`.
    """
    if top_k is not None:
        kth_best = ops.top_k(logits, k=min(top_k, logits.shape[-1]))[0][:, -1:]  # (B, 1)
        logits = ops.where(logits < kth_best, NEG_INF, logits)
    if top_p is not None:
        sorted_logits = ops.top_k(logits, k=logits.shape[-1])[0]  # (B, V), descending
        sorted_probs = ops.softmax(sorted_logits, axis=-1)
        mass_before = ops.cumsum(sorted_probs, axis=-1) - sorted_probs
        kept = ops.where(mass_before < top_p, sorted_logits, -NEG_INF)  # the most likely stays
        logits = ops.where(logits < ops.min(kept, axis=-1, keepdims=True), NEG_INF, logits)
    return logits


def _hash(x):
    """Wellons' lowbias32 integer hash of int32 `x`, elementwise, wrapping like uint32 (the
    multiplications overflow two's-complement; right shifts are masked to be logical)."""
    x = ops.cast(x, "int32")
    for shift, multiplier in ((16, 0x7FEB352D), (15, 0x846CA68B - (1 << 32))):
        x = ops.bitwise_xor(x, ops.bitwise_and(ops.right_shift(x, shift),
                                               (1 << (32 - shift)) - 1))
        x = ops.multiply(x, ops.convert_to_tensor(multiplier, "int32"))
    return ops.bitwise_xor(x, ops.bitwise_and(ops.right_shift(x, 16), 0xFFFF))


def _gumbel_noise(key, step, shape):
    """`shape` (B, V) float32 Gumbel(0, 1) noise, a pure function of (key, step, position)."""
    rows, columns = shape
    counter = ops.arange(rows, dtype="int32")[:, None] * columns + ops.arange(
        columns, dtype="int32")[None, :]
    bits = _hash(ops.bitwise_xor(_hash(counter), _hash(ops.bitwise_xor(key, step))))
    uniform = (ops.cast(ops.bitwise_and(bits, 0x7FFFFF), "float32") + 0.5) / float(1 << 23)
    return -ops.log(-ops.log(uniform))


def _unfinished(max_length, done):
    """Loop condition: steps remain and `done(loop_vars)` is not true for every input."""
    def cond(loop_vars):
        return ops.logical_and(loop_vars["step"] < max_length,
                               ops.logical_not(ops.all(done(loop_vars))))
    return cond


def _prepare(model, source_ids, max_length, start_id, end_id):
    """Check the arguments and build a model never called before: its sublayers must not be
    first built inside the decoding loop (that leaks tracers on JAX). Returns the source ids
    as a tensor and the `(pad_id, start_id, end_id)` to decode with."""
    check_positive_int("max_length", max_length)
    if not getattr(model, "built", True):  # a Keras model; plain contract objects need none
        model.build()
    pad_id, model_start_id, model_end_id = special_ids(model)
    ids = (pad_id, model_start_id if start_id is None else start_id,
           model_end_id if end_id is None else end_id)
    return ops.convert_to_tensor(source_ids, dtype="int32"), ids


def check_constraints_allowed(strategy):
    """One-line ValueError unless `strategy` is beam search, the one that takes constraints."""
    if not isinstance(strategy, Beam):
        raise ValueError(f"constraints need beam search (Beam(width)): {strategy!r} keeps one "
                         f"hypothesis and cannot steer it towards the phrases")


def _refuse_constraints(strategy, constraints):
    """`check_constraints_allowed` when a strategy keeping one hypothesis gets constraints."""
    if constraints is not None:
        check_constraints_allowed(strategy)


def _forced_tokens(prefix, batch_size, max_length, pad_id):
    """`(B, max_length)` int32: the token each step must take (the `prefix`), else `pad_id`."""
    prefix = ops.convert_to_tensor(prefix, dtype="int32")
    if len(prefix.shape) != 2:
        raise ValueError(f"prefix must be (batch, length) int ids, got shape {prefix.shape}")
    free = ops.full((batch_size, max_length), pad_id, dtype="int32")
    return ops.concatenate([prefix, free], axis=1)[:, :max_length]


def _forced_now(forced, step, pad_id):
    """`(B,)` the token of each row forced at `step` and `(B,)` whether one is."""
    token = ops.take(forced, step, axis=1)
    return token, ops.not_equal(token, pad_id)


def token_by_token(model, source_ids, max_length, choose_next, attention=False,
                   start_id=None, end_id=None, prefix=None):
    """The loop of greedy search and sampling, for any strategy keeping one hypothesis per
    input: `decode`'s arguments and outputs, with the choice of each token left to
    `choose_next(log_probs (B, V) float32, step () int32)` → `(B,)` int ids, in `keras.ops`.
    While a row's `prefix` lasts its token is taken instead of the choice.
    """
    source_ids, (pad_id, start_id, end_id) = _prepare(model, source_ids, max_length, start_id,
                                                      end_id)
    memory = model.encode(source_ids, training=False)
    state = model.initial_state(memory, max_length)
    batch_size, source_length = ops.shape(source_ids)[0], ops.shape(source_ids)[1]
    loop_vars = {
        "step": ops.convert_to_tensor(0, dtype="int32"),
        "previous": ops.full((batch_size,), start_id, dtype="int32"),
        "state": state,
        "tokens": ops.full((batch_size, max_length), pad_id, dtype="int32"),
        "scores": ops.zeros((batch_size,), dtype="float32"),
        "finished": ops.zeros((batch_size,), dtype="bool"),
    }
    if attention and model.has_attention:
        loop_vars["attention"] = ops.zeros((batch_size, max_length, source_length))
    forced = None if prefix is None else _forced_tokens(prefix, batch_size, max_length, pad_id)

    def body(loop_vars):
        step, finished = loop_vars["step"], loop_vars["finished"]
        logits, state, step_attention = model.decode_step(
            loop_vars["previous"], memory, loop_vars["state"], step)
        log_probs = _next_token_log_probs(logits, pad_id, start_id)  # (B, V)
        chosen = ops.cast(choose_next(log_probs, step), "int32")
        if forced is not None:
            forced_token, forcing = _forced_now(forced, step, pad_id)
            chosen = ops.where(forcing, forced_token, chosen)
        next_ids = ops.where(finished, pad_id, chosen)
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
                loop_vars["attention"], ops.cast(step_attention, "float32")[:, None], step,
                axis=1)
        return (new_vars,)

    (result,) = ops.while_loop(_unfinished(max_length, lambda loop_vars: loop_vars["finished"]),
                               body, (loop_vars,), maximum_iterations=max_length)
    outputs = {"tokens": result["tokens"], "scores": result["scores"],
               "lengths": ops.sum(ops.cast(ops.not_equal(result["tokens"], pad_id), "int32"),
                                  axis=-1)}
    if "attention" in result:
        outputs["attention"] = result["attention"]
    return outputs


def length_penalty(lengths, alpha):
    """GNMT length penalty lp(Y) = ((5 + |Y|) / 6)^α (Wu et al., 2016, eq. 14)."""
    return ops.power((5.0 + ops.cast(lengths, "float32")) / 6.0, alpha)


def _beam_search(model, source_ids, max_length, beam, attention, start_id, end_id,
                 prefix=None, constraints=None):
    """`Beam.decode`. Per step t the loop writes, at position t of `(B, max_length, k)` buffers,
    the live hypotheses' last tokens and their parents (the slot at step t − 1 they extend), and
    the attention of the k decoder rows of step t (`(B, max_length, k, S)`, by that parent
    slot). A finished hypothesis is its score, log-probability, end step and parent slot;
    `_backtrack` reads the tokens back at the end. With constraints, `_Phrases` adds the
    phrases' tokens to each step's candidates and allocates the beam among them."""
    source_ids, (pad_id, start_id, end_id) = _prepare(model, source_ids, max_length, start_id,
                                                      end_id)
    batch_size, source_length = ops.shape(source_ids)[0], ops.shape(source_ids)[1]
    k, alpha = beam.width, beam.alpha
    forced = None if prefix is None else _forced_tokens(prefix, batch_size, max_length, pad_id)
    phrases = None if constraints is None else _Phrases(constraints, pad_id, end_id, k)

    memory = keras.tree.map_structure(lambda tensor: ops.repeat(tensor, k, axis=0),
                                      model.encode(source_ids, training=False))  # (B·k, ...)
    # Only slot 0 is alive at first, so the first step does not pick k copies of one token.
    initial_log_probs = ops.concatenate(
        [ops.zeros((batch_size, 1)), ops.full((batch_size, k - 1), NEG_INF)], axis=1)
    loop_vars = {
        "step": ops.convert_to_tensor(0, dtype="int32"),
        "previous": ops.full((batch_size * k,), start_id, dtype="int32"),
        "state": beam_state(model, model.initial_state(memory, max_length), k),
        "log_probs": initial_log_probs,  # (B, k) live hypotheses
        "tokens": ops.zeros((batch_size, max_length, k), dtype="int32"),
        "parents": ops.zeros((batch_size, max_length, k), dtype="int32"),
        "pool": {  # (B, k) finished hypotheses, best first; empty entries score NEG_INF
            "scores": ops.full((batch_size, k), NEG_INF),
            "log_probs": ops.full((batch_size, k), NEG_INF),
            "end_steps": ops.zeros((batch_size, k), dtype="int32"),
            "parents": ops.zeros((batch_size, k), dtype="int32"),
        },
    }
    if attention and model.has_attention:
        loop_vars["attention"] = ops.zeros((batch_size, max_length, k, source_length))
    if phrases is not None:
        loop_vars["matched"] = phrases.initial_state()
    best_possible_penalty = length_penalty(max_length, alpha)

    def done(loop_vars):
        """(B,) no live hypothesis can still beat the worst one of a full pool."""
        worst_finished = loop_vars["pool"]["scores"][:, -1]
        bound = ops.max(loop_vars["log_probs"], axis=1) / best_possible_penalty
        return ops.logical_and(worst_finished > NEG_INF / 2, bound <= worst_finished)

    def body(loop_vars):
        step = loop_vars["step"]
        logits, state, step_attention = model.decode_step(
            loop_vars["previous"], memory, loop_vars["state"], step)
        vocab_size = ops.shape(logits)[-1]
        step_log_probs = ops.reshape(_next_token_log_probs(logits, pad_id, start_id),
                                     (batch_size, k, vocab_size))
        vocab_ids = ops.arange(vocab_size, dtype="int32")
        if forced is not None:  # every other token is ruled out while the prefix lasts
            forced_token, forcing = _forced_now(forced, step, pad_id)
            step_log_probs = ops.where(ops.logical_and(
                forcing[:, None, None], ops.not_equal(vocab_ids, forced_token[:, None, None])),
                NEG_INF, step_log_probs)
        if phrases is not None:  # END is ruled out until every phrase is met
            step_log_probs = ops.where(ops.logical_and(
                phrases.unmet(loop_vars["matched"])[..., None], ops.equal(vocab_ids, end_id)),
                NEG_INF, step_log_probs)
        totals = ops.reshape(loop_vars["log_probs"][..., None] + step_log_probs,
                             (batch_size, k * vocab_size))
        if phrases is None:
            candidate_log_probs, indices = ops.top_k(totals, k=2 * k)
        else:
            candidate_log_probs, indices = phrases.candidates(totals, loop_vars["matched"],
                                                              vocab_size)
        candidate_parents = ops.cast(indices // vocab_size, "int32")  # (B, N)
        candidate_tokens = ops.cast(indices % vocab_size, "int32")
        ends = ops.equal(candidate_tokens, end_id)
        valid = candidate_log_probs > NEG_INF / 2

        finished_scores = ops.where(ops.logical_and(ends, valid),
                                    candidate_log_probs / length_penalty(step + 1, alpha),
                                    NEG_INF)
        pool = _best_of(loop_vars["pool"], {
            "scores": finished_scores, "log_probs": candidate_log_probs,
            "end_steps": ops.full(ops.shape(candidate_parents), step, dtype="int32"),
            "parents": candidate_parents}, k)
        if phrases is None:
            # At most k of the 2k candidates end (one per parent), so k live ones remain.
            live_log_probs, live = ops.top_k(
                ops.where(ends, float("-inf"), candidate_log_probs), k=k)
        else:
            matched, banks = phrases.advance(loop_vars["matched"], candidate_parents,
                                             candidate_tokens)
            continuing = ops.logical_and(valid, ops.logical_not(ends))
            live = phrases.allocate(continuing, candidate_log_probs, banks)
            live_log_probs = ops.where(ops.take_along_axis(continuing, live, axis=1),
                                       ops.take_along_axis(candidate_log_probs, live, axis=1),
                                       NEG_INF)
        live_parents = ops.take_along_axis(candidate_parents, live, axis=1)
        live_tokens = ops.take_along_axis(candidate_tokens, live, axis=1)
        flat_parents = ops.reshape(live_parents + ops.arange(batch_size)[:, None] * k, (-1,))
        new_vars = {
            "step": step + 1,
            "previous": ops.reshape(live_tokens, (-1,)),
            "state": reorder_state(model, state, flat_parents),
            "log_probs": live_log_probs,
            "tokens": write_at(loop_vars["tokens"], live_tokens[:, None], step, axis=1),
            "parents": write_at(loop_vars["parents"], live_parents[:, None], step, axis=1),
            "pool": pool,
        }
        if "attention" in loop_vars:
            new_vars["attention"] = write_at(
                loop_vars["attention"], ops.reshape(ops.cast(step_attention, "float32"),
                                                    (batch_size, 1, k, source_length)),
                step, axis=1)
        if phrases is not None:
            new_vars["matched"] = phrases.select(matched, live)
        return (new_vars,)

    (result,) = ops.while_loop(_unfinished(max_length, done), body, (loop_vars,),
                               maximum_iterations=max_length)
    # Live hypotheses compete only when cut off at max_length (an early stop proved them worse).
    last_step = result["step"] - 1
    cut_off = {
        "scores": ops.where(result["step"] >= max_length,
                            result["log_probs"] / best_possible_penalty, NEG_INF),
        "log_probs": result["log_probs"],
        "end_steps": ops.full((batch_size, k), last_step, dtype="int32"),
        "parents": ops.take(result["parents"], last_step, axis=1),
        "last_tokens": ops.take(result["tokens"], last_step, axis=1),
    }
    pool = {**result["pool"], "last_tokens": ops.full((batch_size, k), end_id, dtype="int32")}
    if phrases is not None:  # every finished hypothesis meets every phrase
        pool["unmet"] = ops.zeros((batch_size, k), dtype="int32")
        cut_off["unmet"] = phrases.unmet_tokens(result["matched"])
    best = _best_of(pool, cut_off, beam.n_best)
    tokens, step_attention = _backtrack(best, result, max_length, pad_id)
    outputs = {"tokens": tokens, "scores": best["scores"], "lengths": best["end_steps"] + 1}
    if step_attention is not None:
        outputs["attention"] = step_attention
    if isinstance(beam, Beam) and beam.n_best == 1:
        outputs = {name: value[:, 0] for name, value in outputs.items()}
    return outputs


def _best_of(first, second, n):
    """The `n` best by "scores" of two dicts of `(B, ·)` tensors with the same keys, sorted.

    With an "unmet" key (constraint tokens a hypothesis misses) the order is by fewest unmet,
    then by score; empty entries (score NEG_INF) come last either way.
    """
    merged = {name: ops.concatenate([first[name], second[name]], axis=1) for name in first}
    scores = merged["scores"]
    if "unmet" in merged:
        size = ops.shape(scores)[1]
        _, by_score = ops.top_k(scores, k=size)
        rank = ops.cast(ops.argsort(by_score, axis=1), "int32")  # position by score
        unmet = ops.where(scores > NEG_INF / 2, merged["unmet"], size)
        scores = -ops.cast(unmet * size + rank, "float32")
    _, order = ops.top_k(scores, k=n)
    return {name: ops.take_along_axis(value, order, axis=1) for name, value in merged.items()}


class _Phrases:
    """The lexical constraints of a beam search, as fixed-shape tensors in `keras.ops`.

    Each hypothesis carries, per phrase c, `partial` `(·, C, L)` bool: whether the output ends
    with the phrase's first i + 1 tokens, for every i at once (the Shift-And string matcher, so
    a phrase whose start repeats inside it, such as "a a b" after "a a a", is still found), and
    `met` `(·, C)`: whether the phrase appeared already. Its bank is the constraint tokens it
    holds: every token of the phrases met, plus the longest partial match of the others.
    """

    def __init__(self, constraints, pad_id, end_id, width):
        phrases = ops.convert_to_tensor(constraints, dtype="int32")
        if len(phrases.shape) != 3:
            raise ValueError(f"constraints must be (batch, phrases, length) int ids, got shape "
                             f"{phrases.shape}")
        self.phrases, self.end_id, self.width = phrases, end_id, width
        self.lengths = ops.sum(ops.cast(ops.not_equal(phrases, pad_id), "int32"), axis=-1)
        self.positions = ops.arange(ops.shape(phrases)[-1], dtype="int32")  # (L,)
        self.last = ops.equal(self.positions, self.lengths[..., None] - 1)  # (B, C, L)
        # The deepest bank: every token of every phrase.
        self.max_bank = ops.shape(phrases)[1] * ops.shape(phrases)[2]

    def _per_hypothesis(self, tensor, count):
        """`(B, ...)` → `(B·count, ...)`: each row repeated for its `count` hypotheses."""
        return ops.repeat(tensor, count, axis=0)

    def initial_state(self):
        """`partial` all false and `met` for the empty phrases, for the `(B·k)` hypotheses."""
        shape = ops.shape(self.phrases)
        return {"partial": ops.zeros((shape[0] * self.width, shape[1], shape[2]), dtype="bool"),
                "met": self._per_hypothesis(ops.equal(self.lengths, 0), self.width)}

    def unmet(self, matched):
        """`(B, k)`: whether a live hypothesis still misses a phrase (it may not end)."""
        return ops.reshape(ops.logical_not(ops.all(matched["met"], axis=-1)), (-1, self.width))

    def unmet_tokens(self, matched):
        """`(B, k)` the tokens of the phrases each live hypothesis misses."""
        lengths = self._per_hypothesis(self.lengths, self.width)
        return ops.reshape(ops.sum(ops.where(matched["met"], 0, lengths), axis=-1),
                           (-1, self.width))

    def candidates(self, totals, matched, vocab_size):
        """A step's candidates `(B, N)`: scores and indices into the `(B, k·V)` `totals`.

        As Post & Vilar (2018) and fairseq: the 2k best continuations, the next token of every
        unmet phrase for every hypothesis (where its longest partial match goes on, or the
        phrase's first token) and each hypothesis's own best token; and END for every
        hypothesis, so that one meeting every phrase (END is ruled out for the others) finishes
        even where END is unlikely. A candidate that repeats an earlier one, or extends a met
        phrase, scores 2·NEG_INF (none).
        """
        k = self.width
        top_log_probs, top = ops.top_k(totals, k=2 * k)
        partial = matched["partial"]
        longest = ops.max(ops.where(partial, self.positions + 1, 0), axis=-1)  # (B·k, C)
        phrases = self._per_hypothesis(self.phrases, k)
        next_tokens = ops.take_along_axis(
            phrases, ops.minimum(longest, ops.shape(phrases)[-1] - 1)[..., None], axis=-1)[..., 0]
        slots = ops.reshape(ops.arange(ops.shape(totals)[0] * k, dtype="int32") % k, (-1, 1))
        phrase_indices = ops.reshape(slots * vocab_size + next_tokens, (ops.shape(totals)[0], -1))
        own_best = ops.top_k(ops.reshape(totals, (-1, vocab_size)), k=1)[1]  # (B·k, 1)
        own_indices = ops.reshape(slots * vocab_size + ops.concatenate(
            [ops.cast(own_best, "int32"), ops.full(ops.shape(slots), self.end_id, "int32")],
            axis=1), (ops.shape(totals)[0], 2 * k))
        indices = ops.concatenate([ops.cast(top, "int32"), phrase_indices, own_indices], axis=1)
        log_probs = ops.take_along_axis(totals, indices, axis=1)
        extends_met = ops.concatenate([
            ops.zeros_like(top, dtype="bool"),
            ops.reshape(matched["met"], ops.shape(phrase_indices)),
            ops.zeros_like(own_indices, dtype="bool")], axis=1)
        real = ops.logical_and(log_probs > NEG_INF / 2, ops.logical_not(extends_met))
        count = ops.shape(indices)[1]
        earlier = ops.arange(count)[None, :] < ops.arange(count)[:, None]  # [i, j]: j < i
        repeats = ops.any(ops.logical_and(ops.logical_and(
            ops.equal(indices[:, :, None], indices[:, None, :]), earlier), real[:, None, :]),
            axis=-1)
        keep = ops.logical_and(real, ops.logical_not(repeats))
        return ops.where(keep, log_probs, 2 * NEG_INF), indices

    def advance(self, matched, parents, tokens):
        """The phrase state of each candidate `(parent, token)` `(B, N)`, flat `(B·N, ...)`,
        and its bank `(B, N)`."""
        batch_size, count = ops.shape(parents)[0], ops.shape(parents)[1]
        flat_parents = ops.reshape(parents + ops.arange(batch_size)[:, None] * self.width,
                                   (-1,))
        partial = ops.take(matched["partial"], flat_parents, axis=0)  # (B·N, C, L)
        extended = ops.concatenate(
            [ops.ones_like(partial[..., :1]), partial[..., :-1]], axis=-1)
        phrases = self._per_hypothesis(self.phrases, count)
        partial = ops.logical_and(extended, ops.equal(
            phrases, ops.reshape(tokens, (-1, 1, 1))))
        met = ops.logical_or(ops.take(matched["met"], flat_parents, axis=0), ops.any(
            ops.logical_and(partial, self._per_hypothesis(self.last, count)), axis=-1))
        longest = ops.max(ops.where(partial, self.positions + 1, 0), axis=-1)
        banks = ops.sum(ops.where(met, self._per_hypothesis(self.lengths, count), longest),
                        axis=-1)
        return {"partial": partial, "met": met}, ops.reshape(banks, (batch_size, count))

    def allocate(self, continuing, log_probs, banks):
        """`(B, k)` indices of the candidates that stay live: dynamic beam allocation by
        striping across banks (Hu et al., 2019; fairseq's `LexicallyConstrainedBeamSearch`).

        Each candidate ranks within its bank by score; the beam takes the best of every bank,
        deepest bank first, then the second best of every bank, and so on, so that hypotheses
        that hold more constraint tokens are never all pushed out by likelier ones.
        """
        count = ops.shape(log_probs)[1]
        order = ops.arange(count)
        better = ops.logical_or(
            log_probs[:, None, :] > log_probs[:, :, None],
            ops.logical_and(ops.equal(log_probs[:, None, :], log_probs[:, :, None]),
                            order[None, :] < order[:, None]))  # [b, i, j]: j before i
        same_bank = ops.equal(banks[:, None, :], banks[:, :, None])
        rank = ops.sum(ops.cast(ops.logical_and(ops.logical_and(better, same_bank),
                                                continuing[:, None, :]), "int32"), axis=-1)
        stripes = rank * (self.max_bank + 1) + (self.max_bank - banks)
        key = ops.where(continuing, stripes, count * (self.max_bank + 1))
        return ops.top_k(-ops.cast(key, "float32"), k=self.width)[1]

    def select(self, matched, live):
        """The phrase state `(B·k, ...)` of the candidates `live` `(B, k)` keeps."""
        count = ops.shape(matched["met"])[0] // ops.shape(live)[0]
        flat = ops.reshape(live + ops.arange(ops.shape(live)[0])[:, None] * count, (-1,))
        return {name: ops.take(value, flat, axis=0) for name, value in matched.items()}


def _backtrack(hypotheses, buffers, max_length, pad_id):
    """Tokens `(B, n, max_length)` (and attention `(B, n, max_length, S)` if recorded) of the
    hypotheses `(B, n)` given by end step, last token and parent slot, read from the last
    position to the first through the per-step parent slots."""
    end_steps, parents = hypotheses["end_steps"], hypotheses["parents"]
    batch_size, n = ops.shape(end_steps)[0], ops.shape(end_steps)[1]
    outputs = {"tokens": ops.full((batch_size, n, max_length), pad_id, dtype="int32")}
    if "attention" in buffers:
        outputs["attention"] = ops.zeros(
            (batch_size, n, max_length, ops.shape(buffers["attention"])[-1]))

    def body(index, loop_vars):
        outputs, slots = loop_vars
        position = max_length - 1 - index
        at_end, inside = ops.equal(position, end_steps), position <= end_steps  # (B, n)
        tokens = ops.where(at_end, hypotheses["last_tokens"], ops.take_along_axis(
            ops.take(buffers["tokens"], position, axis=1), slots, axis=1))
        parent = ops.where(at_end, parents, ops.take_along_axis(
            ops.take(buffers["parents"], position, axis=1), slots, axis=1))
        new_outputs = {"tokens": write_at(outputs["tokens"], ops.where(inside, tokens, pad_id)[
            ..., None], position, axis=2)}
        if "attention" in outputs:
            step_attention = ops.take_along_axis(
                ops.take(buffers["attention"], position, axis=1), parent[..., None], axis=1)
            new_outputs["attention"] = write_at(
                outputs["attention"], ops.where(inside[..., None], step_attention, 0.0)[
                    :, :, None], position, axis=2)
        return new_outputs, ops.where(inside, parent, slots)

    outputs, _ = ops.fori_loop(0, max_length, body, (outputs, ops.zeros_like(end_steps)))
    return outputs["tokens"], outputs.get("attention")
