"""Position-wise feed-forward network (Vaswani et al., 2017, §3.3)."""

import keras

from keras_s2s.checks import check_dropout, check_positive_int
from keras_s2s.layers.common import clone_initializer


@keras.saving.register_keras_serializable(package="keras_s2s")
class PositionwiseFeedForward(keras.layers.Layer):
    """FFN(x) = dropout(W₂ · activation(W₁ x + b₁) + b₂), applied to every position alike.

    Args:
        d_model: int. Input and output size.
        d_ff: int. Inner size (2048 in the base model).
        activation: str or callable, default "relu". Activation of the inner layer.
        dropout: float, default 0.0. Dropout on the output (before the residual connection).
        kernel_initializer: initializer, default "glorot_uniform". Of W₁ and W₂ (each gets its
            own copy).

    Shapes: `(B, T, d_model)` → `(B, T, d_model)`.

    Example:
    >>> from keras import ops
    >>> from keras_s2s.layers import PositionwiseFeedForward
    >>> tuple(PositionwiseFeedForward(d_model=8, d_ff=32)(ops.ones((2, 5, 8))).shape)
    (2, 5, 8)

    Reference: Vaswani et al. [Attention Is All You Need](https://arxiv.org/abs/1706.03762).
    NeurIPS 2017, §3.3.
    """

    def __init__(self, d_model, d_ff, activation="relu", dropout=0.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("d_model", d_model)
        check_positive_int("d_ff", d_ff)
        check_dropout(dropout)
        self.d_model = d_model
        self.d_ff = d_ff
        self.activation = keras.activations.get(activation)
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.inner_dense = keras.layers.Dense(
            d_ff, activation=self.activation, name="inner_dense", dtype=self.dtype_policy,
            kernel_initializer=clone_initializer(self.kernel_initializer))
        self.output_dense = keras.layers.Dense(
            d_model, name="output_dense", dtype=self.dtype_policy,
            kernel_initializer=clone_initializer(self.kernel_initializer))
        self.output_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, inputs_shape):
        self.inner_dense.build(inputs_shape)
        self.output_dense.build(tuple(inputs_shape[:-1]) + (self.d_ff,))

    def call(self, inputs, training=None):
        hidden = self.inner_dense(inputs)  # (B, T, d_ff)
        return self.output_dropout(self.output_dense(hidden), training=training)

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape[:-1]) + (self.d_model,)

    def get_config(self):
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "d_ff": self.d_ff,
            "activation": keras.activations.serialize(self.activation),
            "dropout": self.dropout,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
