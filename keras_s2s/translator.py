"""Translator: tokenizers + model + a decoding strategy, loaded from a run directory."""

import dataclasses
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from keras_s2s.config import TrainConfig, config_path
from keras_s2s.data.pipeline import encode_source
from keras_s2s.data.tokenizers import SubwordTokenizer
from keras_s2s.decoding import choose_strategy, decode

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"


@dataclasses.dataclass
class Translation:
    """One output: the text, its score, the tokens on both sides and where the model looked."""

    source: str
    text: str
    score: float
    source_tokens: list
    output_tokens: list
    attention: np.ndarray | None  # (len(output_tokens), len(source_tokens)), or None


def check_run_dir(run_dir):
    """Raise a clear error when `run_dir` is not a finished training run."""
    for needed in (config_path(run_dir), os.path.join(run_dir, MODEL_FILE)):
        if not os.path.exists(needed):
            raise FileNotFoundError(
                f"{run_dir!r} is not a trained run directory: {os.path.basename(needed)} is "
                f"missing (train one with `keras-s2s train --out {run_dir}`)")


class Translator:
    """Translate text with a trained model.

    Args:
        model: a model keeping the contract of `keras_s2s.models.base`.
        source_tokenizer, target_tokenizer: `SubwordTokenizer`s of the two sides.
        max_source_length: longer inputs are truncated to this many tokens.
        max_target_length: the most output tokens (the end token included).
        jit_compile: compile the decoding loop with XLA, once per input shape (batches are
            padded to a few shapes: rows to a power of two, sources to a multiple of 16
            tokens). It pays off for long outputs (the Transformer's loop is 3.5× faster at 64
            tokens in bench/decoding_speed.py) and loses for short ones (20,000 dates: 43.5 s
            against 35.0 s), so measure on your data.
    """

    def __init__(self, model, source_tokenizer, target_tokenizer, max_source_length,
                 max_target_length, jit_compile=False):
        self.model = model
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self.jit_compile = bool(jit_compile)
        self._decoders = {}

    @classmethod
    def load(cls, run_dir, jit_compile=False):
        check_run_dir(run_dir)
        config = TrainConfig.load(config_path(run_dir))
        model = keras.models.load_model(os.path.join(run_dir, MODEL_FILE), compile=False)
        return cls(model, SubwordTokenizer.load(run_dir, "source"),
                   SubwordTokenizer.load(run_dir, "target"), config.max_source_length,
                   config.max_target_length, jit_compile=jit_compile)

    def _decoder(self, strategy, options):
        """A compiled decoding function per strategy and options."""
        key = (strategy, tuple(sorted(options.items())))
        if key not in self._decoders:
            self._decoders[key] = tf.function(
                lambda source_ids: decode(self.model, source_ids, self.max_target_length,
                                          strategy, **options),
                input_signature=[tf.TensorSpec([None, None], tf.int32)], reduce_retracing=True,
                jit_compile=self.jit_compile)
        return self._decoders[key]

    def _padded_for_compilation(self, source_ids):
        """`source_ids` padded to one of few shapes, so XLA compiles a handful of programs:
        rows to a power of two (copies of the first row), columns to a multiple of 16."""
        rows, columns = source_ids.shape
        target_rows = 1 << (rows - 1).bit_length()
        target_columns = max(columns, min(-(-columns // 16) * 16, self.max_source_length))
        source_ids = tf.pad(source_ids, [[0, 0], [0, target_columns - columns]])
        return tf.concat([source_ids, tf.repeat(source_ids[:1], target_rows - rows, axis=0)],
                         axis=0)

    def translate(self, texts, beam_width=1, alpha=0.6, temperature=None, top_k=None,
                  seed=None, batch_size=64):
        """Translate a list of strings → list[Translation].

        Greedy search by default; beam search when `beam_width` > 1 (GNMT length penalty
        `alpha`); sampling when `temperature` or `top_k` is given (`seed` makes it repeatable).
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        strategy, options = choose_strategy(beam_width, alpha, temperature, top_k, seed)
        decoder = self._decoder(strategy, options)
        translations = []
        for start in range(0, len(texts), batch_size):
            translations += self._translate_batch(list(texts[start:start + batch_size]),
                                                  decoder)
        return translations

    def _translate_batch(self, texts, decoder):
        source_ids = encode_source(texts, self.source_tokenizer, self.max_source_length)
        if self.jit_compile:
            padded = decoder(self._padded_for_compilation(source_ids))
            result = {name: value[:len(texts)] for name, value in padded.items()}
        else:
            result = decoder(source_ids)
        output_ids = result["tokens"].numpy()
        lengths = result["lengths"].numpy()
        outputs = self.target_tokenizer.detokenize(output_ids).numpy()
        source_ids = source_ids.numpy()
        translations = []
        for row, text in enumerate(texts):
            source_length = int(np.count_nonzero(source_ids[row]))
            source_tokens = [self.source_tokenizer.id_to_token(int(i))
                             for i in source_ids[row, :source_length]]
            output_tokens = [self.target_tokenizer.id_to_token(int(i))
                             for i in output_ids[row, :lengths[row]]]
            attention = None
            if "attention" in result:
                attention = result["attention"].numpy()[row, :lengths[row], :source_length]
            translations.append(Translation(
                source=text, text=outputs[row].decode("utf-8"), score=float(
                    result["scores"][row]), source_tokens=source_tokens,
                output_tokens=output_tokens, attention=attention))
        return translations
