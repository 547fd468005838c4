"""Convert a trained model to TensorFlow Lite: token ids and a target prefix in, token ids out,
by greedy search or beam search.

The `.tflite` model holds builtin ops only (TF 2.20+'s Python interpreters have no Flex
delegate, and phones rarely ship it), so its shapes, and its search (`Greedy()`, or
`Beam(width, alpha, n_best)`: `keras-s2s tflite --beam WIDTH --alpha A --n-best N`), are fixed
when converting. Its one signature, `serving_default`, has:

- input `source_ids`: int32 `[batch_size, max_source_length]`, each row the source ids with
  END appended (as `keras_s2s.data.pipeline.encode_source` makes them), padded with 0 up to
  `max_source_length`. Padding is masked, so it does not change the result.
- input `prefix_ids`: int32 `[batch_size, max_target_length]`, each row the target ids its
  output starts with (tokenized by the target vocabulary, no END), padded with its padding
  id (0 for the package's own tokenizers); a row of padding is no prefix (plain search).
  The prefix is forced during the first steps, as `Translator.translate(prefixes=...)` and
  the SavedModel force it, and the score counts it.
- outputs `output_ids` int32 `[batch_size, max_target_length]` (END included, then 0),
  `lengths` int32 `[batch_size]` and `scores` float32 `[batch_size]` (log-probability; beam
  search: over the GNMT length penalty). With `n_best` N > 1, each has an axis of N
  hypotheses after the batch axis, best first. A row with END alone (an empty text) gives no
  ids, length 0 and score 0.0, as the `Translator`.

One model serves both plain and prefixed decoding: the prefix costs a few ops per step (on
a tiny Transformer, 1.9 kB of 149 kB; its time was lost in the noise of a loaded machine).

The decoding loop is `keras_s2s.decoding`'s loop over the model contract (greedy search's,
or beam search's and its backtracking loop): a while loop whose variables all have fixed
shapes (the RNN state, or the Transformer's key/value cache for `max_target_length` steps,
times the beam width), which the converter turns into a builtin WHILE; beam search's
ranking is TOPK_V2 and its reordering GATHER. The batch size
is fixed too: the Keras RNN encoders' loops become builtin ops only with static shapes. The
SavedModel handed to the converter tracks the model's variables, which the converter freezes
into constants itself (a SavedModel that does not track them gives a model whose loop reads
uninitialised variables). Frozen this way, converting needs about 4× the weights' size in
memory over the process's own; freezing first in Python
(`convert_variables_to_constants_v2`) needed about 20×.

Tokenizing stays outside (the tensorflow-text ops are not TFLite builtins): the source and
target vocabularies are copied beside the model, `<stem>.source_vocab.txt` and
`<stem>.target_vocab.txt`, one token a line in id order; a run tokenized by SentencePiece also
gets its models, `<stem>.source.model` and `<stem>.target.model`, which the SentencePiece
library on a phone loads to turn text into the same ids.
"""

import contextlib
import gc
import logging
import os
import re
import shutil
import sys
import tempfile

import tensorflow as tf
from tensorflow.lite.python.convert_phase import ConverterError

from keras_s2s import run as run_files
from keras_s2s.checks import check_choice, check_positive_int
from keras_s2s.decoding import Beam, Greedy, check_strategy
from keras_s2s.exporters import TFLITE_QUANTIZATIONS
from keras_s2s.inference.translator import Translator, blank_empty_sources, check_length_limit
from keras_s2s.models.base import special_ids
from keras_s2s.run import Run

logger = logging.getLogger(__name__)

QUANTIZATIONS = TFLITE_QUANTIZATIONS

#: How TensorFlow's converter names an op it cannot turn into TFLite builtin ops.
_UNLOWERABLE_OP = re.compile(r"'(tf\.\w+)' op is neither a custom op nor a flex op"
                             r"|failed to legalize operation '(tf\.\w+)'")


def decoding_function(model, strategy, max_source_length, max_target_length, batch_size=1):
    """A decoder of fixed shapes, ready to convert: `strategy` (`Greedy()` or a `Beam`) with a
    target prefix.

    Returns:
        A `tf.function` concrete function: `source_ids` `[batch_size, max_source_length]` and
        `prefix_ids` `[batch_size, max_target_length]` → {"output_ids", "lengths", "scores"}.
    """
    check_tflite_strategy(strategy)
    specs = [tf.TensorSpec([batch_size, max_source_length], tf.int32, name="source_ids"),
             tf.TensorSpec([batch_size, max_target_length], tf.int32, name="prefix_ids")]

    @tf.function(input_signature=specs)
    def translate_ids(source_ids, prefix_ids):
        result = blank_empty_sources(
            strategy.decode(model, source_ids, max_target_length, prefix=prefix_ids),
            source_ids, special_ids(model)[0])
        return {"output_ids": result["tokens"], "lengths": result["lengths"],
                "scores": result["scores"]}

    return translate_ids.get_concrete_function()


def check_tflite_strategy(strategy):
    """One-line ValueError unless `strategy` is one the TFLite model decodes with."""
    check_strategy(strategy)
    if not isinstance(strategy, (Greedy, Beam)):
        raise ValueError(f"a TFLite model decodes with Greedy() or Beam(...), not {strategy!r} "
                         f"(sampling draws random numbers the model would have to take in)")


def convert(path, out_path, quantize="none", max_source_length=None, max_target_length=None,
            batch_size=1, strategy=Greedy()):
    """Convert the model of a run directory (or export version directory) to `out_path`.

    Args:
        path: a trained run directory, or an export version directory (`export/NAME/<v>/`),
            whose `assets.extra/` holds the run's files.
        out_path: the `.tflite` file to write; the vocabularies go beside it.
        quantize: "none" (float32), "dynamic" (int8 weights) or "float16" (float16 weights).
        max_source_length, max_target_length: the fixed lengths; default: the run's.
        batch_size: the fixed batch size of the input.
        strategy: `Greedy()` or `Beam(width, alpha, n_best)`, fixed in the model.

    Returns:
        The size of the written model in bytes.

    Raises:
        FileExistsError: `out_path` or a vocabulary beside it exists (never overwritten).
    """
    check_choice("quantize", quantize, QUANTIZATIONS)
    check_tflite_strategy(strategy)
    out_dir = os.path.dirname(os.path.abspath(out_path))
    stem = os.path.splitext(os.path.basename(out_path))[0]
    vocabularies = [run_files.vocabulary_path(out_dir, f"{stem}.{side}")
                    for side in run_files.SIDES]
    _check_absent([out_path, *vocabularies])
    run = Run.of(path)
    with tempfile.TemporaryDirectory() as saved_model:
        models, shapes = _save_decoder(run, saved_model, out_dir, stem, strategy,
                                       max_source_length, max_target_length, batch_size)
        # The model is gone by now: the converter, which needs several times the weights'
        # size, has the memory to itself.
        gc.collect()
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        flatbuffer = _run_converter(converter)

    os.makedirs(out_dir, exist_ok=True)
    with open(out_path, "xb") as file:
        file.write(flatbuffer)
    for side, output in zip(run_files.SIDES, vocabularies):
        shutil.copyfile(run_files.vocabulary_path(run.directory, side), output)
    for output, proto in models.items():
        with open(output, "xb") as file:
            file.write(proto)
    logger.info("wrote %s (%s, %r, %d bytes; source ids [%d, %d] → output ids [%d, %d])",
                out_path, quantize, strategy, len(flatbuffer), *shapes)
    return len(flatbuffer)


def _save_decoder(run, saved_model, out_dir, stem, strategy, max_source_length,
                  max_target_length, batch_size):
    """Save the run's decoder as a SavedModel in `saved_model`, for the converter.

    Returns:
        The SentencePiece models to write beside the `.tflite` file ({path: bytes}), and the
        input and output shapes (batch, source length, batch, target length).
    """
    translator = Translator.from_run(run)
    tokenizers = dict(zip(run_files.SIDES, (translator.source_tokenizer,
                                            translator.target_tokenizer)))
    models = {os.path.join(out_dir, f"{stem}.{side}.model"): tokenizer.proto
              for side, tokenizer in tokenizers.items() if hasattr(tokenizer, "proto")}
    _check_absent(models)
    if max_source_length is None:
        max_source_length = translator.max_source_length
    if max_target_length is None:
        max_target_length = translator.max_target_length
    for name, value in (("max_source_length", max_source_length),
                        ("max_target_length", max_target_length), ("batch_size", batch_size)):
        check_positive_int(name, value)
    check_length_limit(translator.model, max_source_length, max_target_length)

    function = decoding_function(translator.model, strategy, max_source_length,
                                 max_target_length, batch_size)
    # Converted from a SavedModel, the model keeps its signature; the module tracks the
    # model's TensorFlow variables (Keras variables hold them as `.value`), so the SavedModel
    # holds their values. Saved without custom gradients: swish (Marian's activation) captures
    # its beta in one, which SavedModel refuses, and the converter would then silently drop
    # the signature.
    module = tf.Module()
    module.weights = [weight.value for weight in translator.model.weights]
    tf.saved_model.save(module, saved_model, signatures={"serving_default": function},
                        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
    return models, (batch_size, max_source_length, batch_size, max_target_length)


def _run_converter(converter):
    """`converter.convert()`, with its C++ diagnostics logged (debug level) rather than printed
    on stderr; an op that cannot become a TFLite builtin op is a one-line ValueError naming it.
    """
    with _stderr_logged():
        try:
            return converter.convert()
        except ConverterError as error:
            match = _UNLOWERABLE_OP.search(str(error))
            if match is None:
                raise
            raise ValueError(
                f"the model's decoding loop holds {match.group(1) or match.group(2)!r}, which "
                f"cannot be lowered to TFLite builtin ops: write the model's encode and "
                f"decode_step with ops TFLite has (see the plug-in guide, docs/plugins.md)"
            ) from error


@contextlib.contextmanager
def _stderr_logged():
    """Send what is written to file descriptor 2 meanwhile (C++ code's diagnostics) to this
    module's debug log."""
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines():
                logger.debug("converter: %s", line)


def _check_absent(paths):
    """FileExistsError naming the first of `paths` that exists: nothing is overwritten."""
    for path in paths:
        if os.path.exists(path):
            raise FileExistsError(f"{path} already exists and is never overwritten; choose "
                                  f"another --out or remove it")
