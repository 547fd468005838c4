"""Sinusoidal positional encoding (Vaswani et al., 2017, §3.5)."""

import keras
import numpy as np
from keras import ops

from keras_s2s.checks import check_choice, check_number, check_positive_int

#: The orders of the sine and cosine columns `SinusoidalPositionalEncoding` offers.
LAYOUTS = ("interleaved", "concatenated")


@keras.saving.register_keras_serializable(package="keras_s2s")
class SinusoidalPositionalEncoding(keras.layers.Layer):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).

    Interleaved as in the paper, or (`layout="concatenated"`) every sine first, then every
    cosine: PE(pos, i) = sin(pos / 10000^(2i/d)) and PE(pos, d/2 + i) = cos(...), the layout
    of Marian / OPUS-MT checkpoints (Hugging Face's `MarianSinusoidalPositionalEmbedding`).
    Returns the encoding only (same shape as the inputs), so the
    caller decides how to combine it: `embeddings * sqrt(d) + encoding(embeddings)`.

    Args:
        max_length: int. The longest sequence this model supports; longer static lengths
            raise.
        max_wavelength: float, default 10000.0. The 10000 of the formula.
        layout: "interleaved" (default, the paper's) or "concatenated" (sines, then cosines).

    Call arguments:
        inputs: `(B, T, d)` (only the shape and dtype are used); `d` must be even.
        start_index: position of the first element, for step-by-step decoding (int or scalar
            tensor).

    Returns:
        `(B, T, d)` encoding of positions `start_index .. start_index + T - 1`.

    Example:
    >>> from keras import ops
    >>> from keras_s2s.layers import SinusoidalPositionalEncoding
    >>> encoding = SinusoidalPositionalEncoding(max_length=16)(ops.zeros((1, 3, 4)))
    >>> [round(float(value), 3) for value in encoding[0, 1]]  # sin 1, cos 1, sin .01, cos .01
    [0.841, 0.54, 0.01, 1.0]

    Reference: Vaswani et al. [Attention Is All You Need](https://arxiv.org/abs/1706.03762).
    NeurIPS 2017, §3.5.
    """

    def __init__(self, max_length, max_wavelength=10000.0, layout="interleaved", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("max_length", max_length)
        check_number("max_wavelength", max_wavelength, 0.0, low_inclusive=False)
        check_choice("layout", layout, LAYOUTS)
        self.max_length = max_length
        self.max_wavelength = max_wavelength
        self.layout = layout

    def build(self, inputs_shape):
        depth = inputs_shape[-1]
        if depth is None or depth % 2:
            raise ValueError(f"the feature size must be even, got {depth!r}")
        # The table of every position, computed once: a decoding step then looks up its row
        # (three ops) instead of evaluating the formula (twenty), and float64 keeps it exact.
        pair_index = np.arange(depth) // 2  # i for columns 2i and 2i+1
        angles = np.arange(self.max_length)[:, None] * np.power(
            float(self.max_wavelength), -2.0 * pair_index / depth)  # (max_length, d)
        if self.layout == "interleaved":
            table = np.where(np.arange(depth) % 2 == 0, np.sin(angles), np.cos(angles))
        else:  # the even columns hold each frequency once
            table = np.concatenate([np.sin(angles[:, 0::2]), np.cos(angles[:, 0::2])], axis=1)
        self._table = table.astype("float32")

    def call(self, inputs, start_index=0):
        length = inputs.shape[-2]
        if isinstance(length, int) and isinstance(start_index, int) and (
                start_index + length > self.max_length):
            raise ValueError(
                f"positions up to {start_index + length} exceed max_length={self.max_length}"
            )
        positions = ops.arange(ops.shape(inputs)[-2]) + ops.cast(start_index, "int32")  # (T,)
        encoding = ops.take(self._table, positions, axis=0)  # (T, d)
        return ops.broadcast_to(ops.cast(encoding, self.compute_dtype), ops.shape(inputs))

    def get_config(self):
        return {**super().get_config(), "max_length": self.max_length,
                "max_wavelength": self.max_wavelength, "layout": self.layout}
