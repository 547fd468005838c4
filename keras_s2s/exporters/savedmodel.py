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

- `constrained` (beam-search exports only): `inputs` (string `[batch]`), `prefixes` (string
  `[batch]`, "" for none), `constraints` (string `[batch, C]`, "" for none), `beam_width`
  (int32 scalar, which must be the exported width: the width fixes the loop's shapes) and
  `alpha` (float32 scalar in [0, 10]) → `outputs`, `scores`: each translation starts with its
  prefix and contains its phrases (`keras_s2s.decoding`). A request out of these bounds fails
  with INVALID_ARGUMENT and one line naming what is wrong.

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
from keras_s2s.decoding import MAX_ALPHA, Beam, Greedy, check_strategy
from keras_s2s.inference.translator import Translator, blank_empty_sources
from keras_s2s.serving.warmup import write_warmup_requests
from keras_s2s.special_tokens import SPECIAL_TOKENS

logger = logging.getLogger(__name__)



class TranslationModule(tf.Module):
    """The exported graph: tokenizer → decoding → detokenizer, around a `Translator`'s parts.

    Args:
        translator: a `keras_s2s.inference.translator.Translator` (model, tokenizers, maximum
            lengths).
        strategy: the `keras_s2s.decoding` strategy of both signatures (default `Greedy()`).
    """

    def __init__(self, translator, strategy=Greedy()):
        super().__init__(name="translation")
        check_strategy(strategy)
        self.strategy = strategy
        self.model = translator.model
        self.source_tokenizer = translator.source_tokenizer
        self.target_tokenizer = translator.target_tokenizer
        self.max_source_length = translator.max_source_length
        self.max_target_length = translator.max_target_length

    def _search(self, source_ids, attention):
        """Decode `source_ids`; empty rows (END alone) get zeros: no ids, length, score 0."""
        seed = None  # a seeded strategy's own seed
        if self.strategy.random and self.strategy.seed is None:
            seed = tf.random.uniform([2], maxval=2 ** 31 - 1, dtype=tf.int32)  # per call
        return blank_empty_sources(self.strategy.decode(
            self.model, source_ids, self.max_target_length, attention=attention, seed=seed),
            source_ids, self.source_tokenizer.pad_id)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="source_ids")])
    def translate_ids(self, source_ids):
        result = self._search(source_ids, attention=True)
        return {"output_ids": result.pop("tokens"), **result}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def serving_default(self, inputs):
        source_ids = encode_source(inputs, self.source_tokenizer, self.max_source_length)
        result = self._search(source_ids, attention=False)
        tokens = result["tokens"]
        texts = self.target_tokenizer.detokenize(tf.reshape(tokens, [-1, tokens.shape[-1]]))
        return {"outputs": tf.reshape(texts, tf.shape(tokens)[:-1]), "scores": result["scores"]}

    #: The inputs of the `constrained` signature.
    CONSTRAINED_INPUTS = [tf.TensorSpec([None], tf.string, name="inputs"),
                          tf.TensorSpec([None], tf.string, name="prefixes"),
                          tf.TensorSpec([None, None], tf.string, name="constraints"),
                          tf.TensorSpec([], tf.int32, name="beam_width"),
                          tf.TensorSpec([], tf.float32, name="alpha")]

    def _constrained(self, inputs, prefixes, constraints, beam_width, alpha):
        """Beam search at the exported width with a prefix ("" = none) and constraint phrases
        ("" = none) per input, and the request's alpha; bad requests fail with one line
        (INVALID_ARGUMENT). Traced by `signatures` for beam-search exports only."""
        room = self.max_target_length - 1
        prefix_ids = self.target_tokenizer.tokenize(prefixes).to_tensor(
            self.target_tokenizer.pad_id)
        phrase_ids = self.target_tokenizer.tokenize(tf.reshape(constraints, [-1]))
        phrase_tokens = tf.reshape(phrase_ids.row_lengths(), tf.shape(constraints))
        checks = [tf.debugging.Assert(condition, [message]) for condition, message in (
            (tf.equal(beam_width, self.strategy.width),
             f"beam_width must be the exported width {self.strategy.width}"),
            (tf.logical_and(alpha >= 0.0, alpha <= MAX_ALPHA),
             f"alpha must be a number in [0.0, {MAX_ALPHA}]"),
            (tf.reduce_all(tf.equal(tf.shape(inputs)[0], [tf.shape(prefixes)[0],
                                                          tf.shape(constraints)[0]])),
             "prefixes and constraints must have one row per input"),
            (tf.shape(prefix_ids)[1] <= room,
             f"a prefix has more than {room} tokens, leaving no room for the end token"),
            (tf.reduce_all(tf.reduce_sum(phrase_tokens, axis=1) <= room),
             f"the constraints of an input hold more than {room} tokens, leaving no room for "
             f"the end token"))]
        with tf.control_dependencies(checks):
            source_ids = encode_source(inputs, self.source_tokenizer, self.max_source_length)
        phrases = tf.reshape(phrase_ids.to_tensor(self.target_tokenizer.pad_id), tf.concat(
            [tf.shape(constraints), [-1]], axis=0))
        tokens, scores = (blank_empty_sources(self.strategy.decode(
            self.model, source_ids, self.max_target_length, prefix=prefix_ids,
            constraints=phrases, alpha=alpha), source_ids, self.source_tokenizer.pad_id)[name]
            for name in ("tokens", "scores"))
        texts = self.target_tokenizer.detokenize(tf.reshape(tokens, [-1, tokens.shape[-1]]))
        return {"outputs": tf.reshape(texts, tf.shape(tokens)[:-1]), "scores": scores}

    def signatures(self):
        signatures = {"serving_default": self.serving_default.get_concrete_function(),
                      "translate_ids": self.translate_ids.get_concrete_function()}
        if isinstance(self.strategy, Beam):
            signatures["constrained"] = tf.function(
                self._constrained, input_signature=self.CONSTRAINED_INPUTS).get_concrete_function()
        return signatures

    def warmup_inputs(self, signature_name, batch_size, length):
        """{input alias: numpy array} for the inputs of `signature_name`'s warm-up requests
        that need values other than `warmup_requests`' generic ones (e.g. a signature whose
        valid settings are not 1); none of these signatures has such inputs."""
        return {}


def existing_versions(model_dir):
    """The integer version directories under `model_dir`, ascending (TF Serving's layout)."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(name) for name in os.listdir(model_dir)
                  if name.isdigit() and os.path.isdir(os.path.join(model_dir, name)))


def export_run(run, model_name, base_path="export", version=None, strategy=Greedy()):
    """Export a trained run to `base_path/model_name/<version>/`; returns that path.

    Args:
        run: a `keras_s2s.run.Run`, or a trained run directory.
        model_name: the model's name on the server (one path component).
        base_path: the directory holding one subdirectory per model.
        version: a non-negative int; default: one more than the highest existing version (1
            for the first). An existing version is an error, never overwritten.
        strategy: the `keras_s2s.decoding` strategy of the exported signatures (default
            `Greedy()`).
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
    module = TranslationModule(Translator.from_run(run), strategy)
    signatures = module.signatures()

    os.makedirs(model_dir, exist_ok=True)
    staging_dir = tempfile.mkdtemp(prefix=f".{version}.partial-", dir=model_dir)
    try:
        tf.saved_model.save(module, staging_dir, signatures=signatures)
        _copy_run_files(run.directory, os.path.join(staging_dir, run_files.EXPORT_RUN_FILES))
        write_warmup_requests(staging_dir, warmup_requests(module, signatures))
        os.chmod(staging_dir, 0o755)  # mkdtemp makes it private; servers run as other users
        try:
            os.rename(staging_dir, version_dir)
        except OSError as error:  # another export took the version meanwhile
            raise FileExistsError(f"{version_dir!r} appeared while exporting; versions are "
                                  f"never overwritten") from error
    except BaseException:
        shutil.rmtree(staging_dir, ignore_errors=True)
        raise
    logger.info("exported %s as %s (%s)", run.directory, version_dir, strategy)
    return version_dir


#: The batch sizes and source lengths (in tokens, END included) of the warm-up requests: the
#: extremes a server sees, each of which TensorFlow may prepare for separately.
WARMUP_BATCH_SIZES = (1, 8)
WARMUP_LENGTHS = (4, None)  # None: the run's max_source_length


def warmup_requests(module, signatures):
    """(signature name, {input alias: numpy array}) for every signature of the export, batch size
    and length. The module's `warmup_inputs(name, batch_size, length)` gives the inputs it
    chooses; the others are built from the signature's input specs: strings are sentences of
    source vocabulary words, integer matrices token-id rows ending with END, scalars 1 (a valid
    beam width, temperature, top-p, length penalty or seed), anything else zeros.
    They are not run here (that would cost each export TensorFlow's one-time work too): the
    server replays them at load, and a record that fails fails the load with its reason."""
    tokenizer = module.source_tokenizer
    words = [token.lstrip("#\u2581") for token in tokenizer.vocabulary[len(SPECIAL_TOKENS):]]
    words = [word for word in words if word] or ["a"]
    requests = []
    for name, function in signatures.items():
        for batch, length in itertools.product(WARMUP_BATCH_SIZES, WARMUP_LENGTHS):
            length = length or module.max_source_length
            chosen = module.warmup_inputs(name, batch, length)
            requests.append((name, {
                spec.name: chosen[spec.name] if spec.name in chosen else
                _warmup_input(spec, batch, length, words, tokenizer)
                for spec in tf.nest.flatten(function.structured_input_signature)}))
    return requests


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
