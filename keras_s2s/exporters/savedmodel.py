"""Export a trained run as a SavedModel that TensorFlow Serving loads: export/NAME/<version>/.

The exported graph holds the whole translation: the source tokenizer, the decoding loop
(`keras_s2s.decoding`: greedy search, beam search or sampling) and the target detokenizer, so a
client sends strings and gets strings back. It contains TF core and tensorflow-text ops only (no
`py_function`), so it loads with `tf.saved_model.load` after `import tensorflow_text`, without
this package, and TF Serving builds with tensorflow-text serve it.

Signatures:

- `serving_default`: `inputs` (string `[batch]`) → `outputs` (string `[batch]`, the
  translation) and `scores` (float32 `[batch]`). Inputs longer than the run's
  `max_source_length` tokens (END included) are truncated to it, as the `Translator` does,
  and an empty (or blank) input gives "" with score 0.0, as there.
- `translate_ids`: `source_ids` (int32 `[batch, time]`, padded with 0, END at the end of each
  row) → `output_ids` (int32 `[batch, max_target_length]`), `scores`, `lengths` (int32
  `[batch]`) and, for attention models, `attention` (float32 `[batch, max_target_length,
  time]`). A row with END alone gives no output ids, length 0 and score 0.0.

- `beam`: `inputs` (string `[batch]`), `beam_width` (int32 scalar in [1, 256]), `alpha`
  (float32 scalar in [0, 10]) and `n_best` (int32 scalar in [1, beam_width]) → `outputs`
  (string `[batch, n_best]`) and `scores` (float32 `[batch, n_best]`), best first: beam search
  with the settings of each request.
- `sample`: `inputs`, `temperature` (float32 scalar: 0, greedy search, or in [1e-3, 100]),
  `top_k` (int32 scalar >= 0; 0 keeps every token), `top_p` (float32 scalar in (0, 1]; 1 cuts
  none) and `seed` (int32 scalar; the same seed gives the same outputs, a negative one draws
  afresh) → `outputs` and `scores` (`[batch]`): sampling with the settings of each request.
- `constrained`: `beam`'s inputs and outputs, and `prefixes` (string `[batch]`, "" for none)
  and `constraints` (string `[batch, C]`, "" for none): beam search whose translations start
  with their prefix and contain their phrases (`keras_s2s.decoding`).

A setting out of its bounds (or a prefix or phrases leaving no room for the end token) fails
the call with INVALID_ARGUMENT and a message naming it (checked in the graph before any buffer
is allocated, so a beam width of 10,000 costs nothing).

With `Beam(n_best=N)`, N > 1, every output has an axis of N hypotheses after the batch axis
(`outputs` string `[batch, N]`, ...), best first. A `Sample` strategy with a seed gives the same
output for the same input on every call; without one, each call draws afresh.

A version is written to a hidden temporary directory beside it and renamed into place, so
TF Serving, which polls the model directory, never sees a half-written version; an existing
version is never overwritten. The run's configuration, weights and tokenizers are copied into
`<version>/assets.extra/` (which TF Serving ignores) so later steps, such as
`keras_s2s.exporters.tflite`, can rebuild the Keras model from the export alone. Beside them,
`assets.extra/tf_serving_warmup_requests` holds warm-up requests for every signature (a few
batch sizes and lengths, see `warmup_requests`), which TF Serving and `keras-s2s serve` replay
before serving the version, so its first request is not slowed by TensorFlow's one-time work.

With `xla=True` (`keras-s2s export --xla on`), the decoding loops of every signature but
`constrained` are compiled with XLA: strings → ids (graph) → ids → ids (`jit_compile`) → ids
→ strings (graph), since tensorflow-text ops have no XLA kernels. The ids are padded to buckets
of batch size and source length first (`bucketed_source_ids`), so a server compiles one program
per bucket, and the warm-up requests cover every bucket up to `XLA_WARMUP_BATCH_SIZES` rows,
so loading compiles them. TF Serving runs such an export only with
`--xla_cpu_compilation_enabled` (serving/README.md).
"""

import itertools
import logging
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from keras_s2s import run as run_files
from keras_s2s.checks import check_non_negative_int
from keras_s2s.data.pipeline import encode_source
from keras_s2s import decoding
from keras_s2s.decoding import (MAX_ALPHA, MAX_BEAM_WIDTH, MAX_SEED, MAX_TEMPERATURE,
                                MIN_COMPILED_ROWS, MIN_TEMPERATURE, Greedy, check_strategy)
from keras_s2s.inference.translator import Translator, blank_empty_sources
from keras_s2s.serving.warmup import write_warmup_requests
from keras_s2s.special_tokens import SPECIAL_TOKENS

logger = logging.getLogger(__name__)



class TranslationModule(tf.Module):
    """The exported graph: tokenizer → decoding → detokenizer, around a `Translator`'s parts.

    Args:
        translator: a `keras_s2s.inference.translator.Translator` (model, tokenizers, maximum
            lengths).
        strategy: the `keras_s2s.decoding` strategy of `serving_default` and `translate_ids`
            (default `Greedy()`).
        xla: compile the decoding loops with XLA (`compiled_decoding`).
    """

    def __init__(self, translator, strategy=Greedy(), xla=False):
        super().__init__(name="translation")
        check_strategy(strategy)
        self.strategy = strategy
        self.xla = bool(xla)
        self.model = translator.model
        self.source_tokenizer = translator.source_tokenizer
        self.target_tokenizer = translator.target_tokenizer
        self.max_source_length = translator.max_source_length
        self.max_target_length = translator.max_target_length

    def _search(self, source_ids, attention):
        """Decode `source_ids` with the strategy chosen at export."""
        seed = None  # a seeded strategy's own seed
        if self.strategy.random and self.strategy.seed is None:
            seed = tf.random.uniform([2], maxval=2 ** 31 - 1, dtype=tf.int32)  # per call
        return self._decode(lambda ids: self.strategy.decode(
            self.model, ids, self.max_target_length, attention=attention, seed=seed), source_ids,
            self.strategy.rows_per_input)

    @tf.autograph.experimental.do_not_convert  # Python control flow only
    def _decode(self, search, source_ids, rows_per_input=1):
        """`search(source_ids)`, a decoding result; in an XLA export compiled with XLA on
        `source_ids` padded to its bucket (`bucketed_source_ids`, with at least
        `decoding.MIN_COMPILED_ROWS` decoder rows of `rows_per_input` each), then cut back."""
        if not self.xla:
            return search(source_ids)
        result = tf.function(search, jit_compile=True)(bucketed_source_ids(
            source_ids, self.max_source_length, self.source_tokenizer.pad_id,
            decoding.min_compiled_inputs(rows_per_input)))
        rows, columns = tf.shape(source_ids)[0], tf.shape(source_ids)[1]
        return {name: value[:rows, ..., :columns] if name == "attention" else value[:rows]
                for name, value in result.items()}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="source_ids")])
    def translate_ids(self, source_ids):
        """Empty rows (END alone) get zeros: no ids, length, score 0."""
        result = blank_empty_sources(self._search(source_ids, attention=True), source_ids,
                                     self.source_tokenizer.pad_id)
        return {"output_ids": result.pop("tokens"), **result}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def serving_default(self, inputs):
        return self._translate_texts(inputs, lambda source_ids: self._search(source_ids, False))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs"),
                                  tf.TensorSpec([], tf.int32, name="beam_width"),
                                  tf.TensorSpec([], tf.float32, name="alpha"),
                                  tf.TensorSpec([], tf.int32, name="n_best")])
    def beam(self, inputs, beam_width, alpha, n_best):
        return self._beam_search(inputs, beam_width, alpha, n_best, checks=[])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs"),
                                  tf.TensorSpec([None], tf.string, name="prefixes"),
                                  tf.TensorSpec([None, None], tf.string, name="constraints"),
                                  tf.TensorSpec([], tf.int32, name="beam_width"),
                                  tf.TensorSpec([], tf.float32, name="alpha"),
                                  tf.TensorSpec([], tf.int32, name="n_best")])
    def constrained(self, inputs, prefixes, constraints, beam_width, alpha, n_best):
        room, pad_id = self.max_target_length - 1, self.target_tokenizer.pad_id
        no_room = f"at most {room} (max_target_length {self.max_target_length} less END)"
        prefix_ids = self.target_tokenizer.tokenize(prefixes).to_tensor(pad_id)
        phrase_ids = self.target_tokenizer.tokenize(tf.reshape(constraints, [-1]))
        phrase_tokens = tf.reduce_sum(tf.reshape(phrase_ids.row_lengths(), tf.shape(
            constraints)), axis=1)
        rows = tf.shape(inputs)[0]
        checks = [
            _check("the rows of prefixes", tf.shape(prefixes)[0],
                   tf.equal(tf.shape(prefixes)[0], rows), "one per input"),
            _check("the rows of constraints", tf.shape(constraints)[0],
                   tf.equal(tf.shape(constraints)[0], rows), "one per input"),
            _check("the tokens of a prefix", tf.shape(prefix_ids)[1],
                   tf.shape(prefix_ids)[1] <= room, no_room),
            _check("the tokens of the constraints of an input", tf.reduce_max(phrase_tokens),
                   tf.reduce_all(phrase_tokens <= room), no_room)]
        phrases = tf.reshape(phrase_ids.to_tensor(pad_id), tf.concat(
            [tf.shape(constraints), [-1]], axis=0))
        return self._beam_search(inputs, beam_width, alpha, n_best, checks, prefix=prefix_ids,
                                 constraints=phrases)

    def _beam_search(self, inputs, beam_width, alpha, n_best, checks, **guides):
        """The `beam` and `constrained` signatures' beam search (`decoding.beam_search`,
        `guides` its prefix and constraints) after the bound checks of the settings and the
        signature's own `checks`."""
        checks = [
            _check("beam_width", beam_width, (beam_width >= 1) & (beam_width <= MAX_BEAM_WIDTH),
                   f"an int in [1, {MAX_BEAM_WIDTH}]"),
            _check("alpha", alpha, (alpha >= 0.0) & (alpha <= MAX_ALPHA),
                   f"a number in [0, {MAX_ALPHA}]"),
            _check("n_best", n_best, (n_best >= 1) & (n_best <= beam_width),
                   "an int in [1, beam_width]"), *checks]
        with tf.control_dependencies(checks):  # before any buffer of that width is allocated
            beam_width, alpha, n_best = (tf.identity(value) for value in (beam_width, alpha,
                                                                          n_best))
        # The width is the request's: a program is compiled per width, and one of 2 or more
        # has rows enough at batch 1 (`decoding.MIN_COMPILED_ROWS`).
        return self._translate_texts(inputs, lambda source_ids: decoding.beam_search(
            self.model, source_ids, self.max_target_length, beam_width, alpha, n_best,
            **guides), compiled=not guides, rows_per_input=MIN_COMPILED_ROWS)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs"),
                                  tf.TensorSpec([], tf.float32, name="temperature"),
                                  tf.TensorSpec([], tf.int32, name="top_k"),
                                  tf.TensorSpec([], tf.float32, name="top_p"),
                                  tf.TensorSpec([], tf.int32, name="seed")])
    def sample(self, inputs, temperature, top_k, top_p, seed):
        checks = [
            _check("temperature", temperature, (temperature == 0.0) | (
                (temperature >= MIN_TEMPERATURE) & (temperature <= MAX_TEMPERATURE)),
                f"0 (greedy search) or a number in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}]"),
            _check("top_k", top_k, top_k >= 0, "an int >= 0 (0: every token)"),
            _check("top_p", top_p, (top_p > 0.0) & (top_p <= 1.0), "a number in (0, 1]")]
        with tf.control_dependencies(checks):
            temperature, top_k, top_p = (tf.identity(value) for value in (temperature, top_k,
                                                                          top_p))
        seeds = tf.where(seed < 0, tf.random.uniform([2], maxval=MAX_SEED, dtype=tf.int32),
                         tf.stack([seed, 0]))  # a negative seed draws afresh per call
        return self._translate_texts(inputs, lambda source_ids: decoding.sample(
            self.model, source_ids, self.max_target_length, temperature, top_k, top_p, seeds))

    def _translate_texts(self, inputs, search, compiled=True, rows_per_input=1):
        """Tokenize `inputs`, `search(source_ids)` → a decoding result (`compiled`: by
        `_decode`, for `rows_per_input` decoder rows an input), detokenize: the text
        signatures' `outputs` (string, the shape of `scores`) and `scores`."""
        source_ids = encode_source(inputs, self.source_tokenizer, self.max_source_length)
        result = blank_empty_sources(
            self._decode(search, source_ids, rows_per_input) if compiled else search(source_ids),
            source_ids, self.source_tokenizer.pad_id)
        tokens = result["tokens"]
        texts = self.target_tokenizer.detokenize(tf.reshape(tokens, [-1, tokens.shape[-1]]))
        return {"outputs": tf.reshape(texts, tf.shape(tokens)[:-1]), "scores": result["scores"]}

    def signatures(self):
        """{signature name: `tf.function` with its input signature}: what
        `tf.saved_model.save` exports. Given as functions rather than concrete functions, they
        are traced once, in the saving context (concrete functions traced before would be
        traced again there, doubling the export time)."""
        return {name: getattr(self, name) for name in (
            "serving_default", "translate_ids", "beam", "sample", "constrained")}

    def warmup_inputs(self, signature_name, batch_size, length):
        """{input alias: numpy array} for the inputs of `signature_name`'s warm-up requests
        that need values other than `warmup_requests`' generic ones: typical settings, no
        prefix, and a target word as every input's one constraint."""
        settings = {
            "beam": {"beam_width": 2, "alpha": 0.6, "n_best": 1},
            "sample": {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 0},
            "constrained": {"beam_width": 2, "alpha": 0.6, "n_best": 1,
                            "prefixes": [""] * batch_size,
                            "constraints": [[self._warmup_constraint]] * batch_size},
        }.get(signature_name, {})
        specs = {spec.name: spec for spec in tf.nest.flatten(
            getattr(self, signature_name).input_signature)}
        return {name: np.array(value, dtype=object if specs[name].dtype == tf.string
                               else specs[name].dtype.as_numpy_dtype)
                for name, value in settings.items()}

    @property
    def _warmup_constraint(self):
        """A word of the target vocabulary (one token), so the phrase always fits."""
        words = [token.lstrip("#\u2581") for token in
                 self.target_tokenizer.vocabulary[len(SPECIAL_TOKENS):]]
        words = [word for word in words if word.isalnum()]
        return words[0] if words else ""


#: The fewest source columns an XLA export compiles for (`source_length_buckets`).
MIN_SOURCE_BUCKET = 16
#: The batch sizes whose programs an XLA export's warm-up compiles; larger batches compile on
#: their first request.
XLA_WARMUP_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


def batch_buckets():
    """The batch sizes XLA programs are compiled for: 0 and the powers of two."""
    return [0] + [1 << power for power in range(31)]


def source_length_buckets(max_source_length):
    """The source lengths XLA programs are compiled for: powers of two from
    `MIN_SOURCE_BUCKET`, and `max_source_length`, the longest text inputs get."""
    return sorted({max_source_length} | {MIN_SOURCE_BUCKET << power for power in range(27)})


def bucketed_source_ids(source_ids, max_source_length, pad_id, min_rows=1):
    """`source_ids` grown to the next of `batch_buckets` (copies of the first row, which finish
    when it does), of at least `min_rows` rows unless it has none, and of
    `source_length_buckets` (`pad_id` columns), so that XLA compiles one program per bucket
    rather than per request shape. Graph ops: the compiled part then sees the bucket's
    shape."""
    rows, columns = tf.shape(source_ids)[0], tf.shape(source_ids)[1]

    def bucket(size, buckets):
        buckets = tf.constant(buckets, tf.int32)
        return tf.gather(buckets, tf.searchsorted(buckets, size[None]))[0]

    padded = tf.pad(source_ids, [[0, 0], [0, bucket(columns, source_length_buckets(
        max_source_length)) - columns]], constant_values=pad_id)
    wanted = tf.where(rows > 0, tf.maximum(rows, min_rows), 0)
    return tf.concat([padded, tf.gather(padded, tf.zeros(
        [bucket(wanted, batch_buckets()) - rows], tf.int32))], axis=0)


def _check(name, value, valid, expected):
    """An assertion that fails the call with INVALID_ARGUMENT and the one-line message
    "`name` must be `expected`, got `value`" unless the scalar `valid` holds."""
    return tf.debugging.Assert(valid, [tf.strings.format(f"{name} must be {expected}, got {{}}",
                                                          value)])


def existing_versions(model_dir):
    """The integer version directories under `model_dir`, ascending (TF Serving's layout)."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(name) for name in os.listdir(model_dir)
                  if name.isdigit() and os.path.isdir(os.path.join(model_dir, name)))


def export_run(run, model_name, base_path="export", version=None, strategy=Greedy(),
               xla=False, warmup_batch_sizes=None):
    """Export a trained run to `base_path/model_name/<version>/`; returns that path.

    Args:
        run: a `keras_s2s.run.Run`, or a trained run directory.
        model_name: the model's name on the server (one path component).
        base_path: the directory holding one subdirectory per model.
        version: a non-negative int; default: one more than the highest existing version (1
            for the first). An existing version is an error, never overwritten.
        strategy: the `keras_s2s.decoding` strategy of `serving_default` and
            `translate_ids` (default `Greedy()`).
        xla: compile the decoding loops with XLA, one program per bucket of batch size and
            source length (`bucketed_source_ids`); TF Serving then needs
            `--xla_cpu_compilation_enabled`.
        warmup_batch_sizes: the batch sizes of the warm-up requests, default
            `XLA_WARMUP_BATCH_SIZES` with `xla` (their programs compile at load, not on a
            first request), else `WARMUP_BATCH_SIZES`.
    """
    if not model_name or model_name in (".", "..") or os.sep in model_name or (
            os.altsep and os.altsep in model_name):
        raise ValueError(f"model_name must be one path component, got {model_name!r}")
    model_dir = os.path.join(base_path, model_name)
    check_non_negative_int("version", version, optional=True)
    if version is None:
        version = (existing_versions(model_dir) or [0])[-1] + 1
    version_dir = os.path.join(model_dir, str(version))
    if os.path.exists(version_dir):
        raise FileExistsError(f"{version_dir!r} already exists and versions are never "
                              f"overwritten; choose another version or leave it out")
    check_strategy(strategy)
    run = run_files.Run.of(run)
    module = TranslationModule(Translator.from_run(run), strategy, xla=xla)
    signatures = module.signatures()

    os.makedirs(model_dir, exist_ok=True)
    staging_dir = tempfile.mkdtemp(prefix=f".{version}.partial-", dir=model_dir)
    try:
        tf.saved_model.save(module, staging_dir, signatures=signatures)
        _copy_run_files(run.directory, os.path.join(staging_dir, run_files.EXPORT_RUN_FILES))
        write_warmup_requests(staging_dir, warmup_requests(module, signatures,
                                                           warmup_batch_sizes))
        os.chmod(staging_dir, 0o755)  # mkdtemp makes it private; servers run as other users
        try:
            os.rename(staging_dir, version_dir)
        except OSError as error:  # another export took the version meanwhile
            raise FileExistsError(f"{version_dir!r} appeared while exporting; versions are "
                                  f"never overwritten") from error
    except BaseException:
        shutil.rmtree(staging_dir, ignore_errors=True)
        raise
    logger.info("exported %s as %s (%s%s)", run.directory, version_dir, strategy,
                ", XLA" if xla else "")
    return version_dir


#: The batch sizes and source lengths (in tokens, END included) of the warm-up requests: the
#: extremes a server sees, each of which TensorFlow may prepare for separately.
WARMUP_BATCH_SIZES = (1, 8)
WARMUP_LENGTHS = (4, None)  # None: the run's max_source_length


def warmup_requests(module, signatures, batch_sizes=None):
    """(signature name, {input alias: numpy array}) for every signature of the export, batch size
    (`batch_sizes`, default: `XLA_WARMUP_BATCH_SIZES` for an XLA export, else
    `WARMUP_BATCH_SIZES`) and length (an XLA export's: every `source_length_buckets` up to
    its max_source_length, so that each compiled program is). The module's
    `warmup_inputs(name, batch_size, length)` gives the inputs it chooses; the others are built
    from the signature's input specs: strings are sentences of source vocabulary words, integer
    matrices token-id rows ending with END, scalars 1 (a valid beam width, temperature, top-p,
    length penalty or seed), anything else zeros.
    They are not run here (that would cost each export TensorFlow's one-time work too): the
    server replays them at load, and a record that fails fails the load with its reason."""
    tokenizer = module.source_tokenizer
    words = [token.lstrip("#\u2581") for token in tokenizer.vocabulary[len(SPECIAL_TOKENS):]]
    words = [word for word in words if word] or ["a"]
    one_token = tokenizer.tokenize(words).row_lengths().numpy() == 1
    words = [word for word, single in zip(words, one_token) if single] or words  # exact lengths
    lengths = WARMUP_LENGTHS
    if module.xla:
        lengths = [length for length in source_length_buckets(module.max_source_length)
                   if length <= module.max_source_length]
    if batch_sizes is None:
        batch_sizes = XLA_WARMUP_BATCH_SIZES if module.xla else WARMUP_BATCH_SIZES
    requests = []
    for name, function in signatures.items():
        for batch, length in itertools.product(batch_sizes, lengths):
            length = length or module.max_source_length
            chosen = module.warmup_inputs(name, batch, length)
            requests.append((name, {
                spec.name: chosen[spec.name] if spec.name in chosen else
                _warmup_input(spec, batch, length, words, tokenizer)
                for spec in _input_specs(function)}))
    return requests


def _input_specs(function):
    """The input TensorSpecs of a signature given as a `tf.function` or a concrete function."""
    if isinstance(function, tf.types.experimental.ConcreteFunction):
        return tf.nest.flatten(function.structured_input_signature)
    return function.input_signature


def _warmup_input(spec, batch, length, words, tokenizer):
    """One input of `spec`'s dtype and shape, its unknown dimensions `batch` then `length`."""
    shape = [size if size is not None else batch if index == 0 else length
             for index, size in enumerate(spec.shape.as_list())]
    if spec.dtype == tf.string:
        return np.full(shape, " ".join(itertools.islice(itertools.cycle(words), length - 1)),
                       dtype=object)
    if spec.dtype.is_integer and len(shape) == 2:
        first_id = len(SPECIAL_TOKENS)
        ids = first_id + np.arange(shape[1]) % (tokenizer.vocabulary_size - first_id)
        ids[-1] = tokenizer.end_id
        return np.tile(ids, (shape[0], 1)).astype(spec.dtype.as_numpy_dtype)
    if not shape:
        return np.ones(shape, spec.dtype.as_numpy_dtype)
    return np.zeros(shape, spec.dtype.as_numpy_dtype)


def _copy_run_files(run_dir, destination):
    os.makedirs(destination)
    for name in run_files.portable_files():
        if name != run_files.DIGESTS or os.path.exists(os.path.join(run_dir, name)):
            shutil.copy2(os.path.join(run_dir, name), destination)
