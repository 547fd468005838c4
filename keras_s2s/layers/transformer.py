"""Transformer encoder and decoder layers (Vaswani et al., 2017, §3.1).

Each sub-layer is wrapped as `LayerNorm(x + Dropout(Sublayer(x)))` (post-norm, the paper's
placement) or, with `normalize_first=True`, `x + Dropout(Sublayer(LayerNorm(x)))` (pre-norm,
which trains more stably in deep stacks; the model then needs a final LayerNorm).
"""

import keras

from keras_s2s.checks import (check_bool, check_dropout, check_heads, check_number,
                              check_positive_int)
from keras_s2s.layers.common import clone_initializer
from keras_s2s.layers.feed_forward import PositionwiseFeedForward
from keras_s2s.layers.multi_head_attention import MultiHeadAttention


class _TransformerLayer(keras.layers.Layer):
    """Shared arguments and the residual + layer-norm wrapper of both layer kinds."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.0, activation="relu",
                 normalize_first=False, layer_norm_epsilon=1e-5,
                 kernel_initializer="glorot_uniform", attention_class=MultiHeadAttention,
                 **kwargs):
        super().__init__(**kwargs)
        check_heads(d_model, num_heads)
        check_positive_int("d_ff", d_ff)
        check_dropout(dropout)
        check_bool("normalize_first", normalize_first)
        check_number("layer_norm_epsilon", layer_norm_epsilon, 0.0, low_inclusive=False)
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_ff = d_ff
        self.dropout = dropout
        self.activation = activation
        self.normalize_first = normalize_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.attention_class = attention_class_from(attention_class)
        self.feed_forward = PositionwiseFeedForward(
            d_model, d_ff, activation=activation, dropout=dropout, name="feed_forward",
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=self.dtype_policy)
        self.feed_forward_norm = self._layer_norm("feed_forward_norm")

    def _attention(self, name):
        return self.attention_class(
            self.num_heads, self.d_model // self.num_heads, dropout=self.dropout, name=name,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=self.dtype_policy)

    def _layer_norm(self, name):
        return keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, name=name,
                                               dtype=self.dtype_policy)

    def _dropout(self):
        return keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def _spec(self, shape):
        return keras.KerasTensor(tuple(shape), dtype=self.compute_dtype)

    def _check_width(self, shape, what):
        if shape[-1] != self.d_model:
            raise ValueError(f"{what} must have last dimension d_model={self.d_model}, got "
                             f"shape {tuple(shape)}")

    def _residual(self, inputs, norm, sublayer, dropout=None, training=None):
        """Apply `sublayer` with a residual connection and layer norm (pre or post).

        `sublayer` may return `(output, *extras)`; the extras are passed through.
        """
        outputs = sublayer(norm(inputs) if self.normalize_first else inputs)
        outputs, extras = (outputs[0], outputs[1:]) if isinstance(outputs, tuple) else (
            outputs, ())
        if dropout is not None:
            outputs = dropout(outputs, training=training)
        outputs = inputs + outputs
        if not self.normalize_first:
            outputs = norm(outputs)
        return (outputs, *extras)

    def get_config(self):
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "num_heads": self.num_heads,
            "d_ff": self.d_ff,
            "dropout": self.dropout,
            "activation": self.activation,
            "normalize_first": self.normalize_first,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "attention_class": keras.saving.get_registered_name(self.attention_class),
        }


def attention_class_from(attention_class):
    """A `MultiHeadAttention` subclass, given as the class or its registered name (as
    `get_config` stores it, e.g. "keras_s2s>MultiHeadAttention")."""
    if isinstance(attention_class, str):
        found = keras.saving.get_registered_object(attention_class)
        if found is None:
            raise ValueError(
                f"attention_class {attention_class!r} is not a registered Keras class; "
                f"register it with @keras.saving.register_keras_serializable")
        attention_class = found
    if not (isinstance(attention_class, type) and issubclass(attention_class,
                                                             MultiHeadAttention)):
        raise ValueError(f"attention_class must be a subclass of "
                         f"keras_s2s.layers.MultiHeadAttention, got {attention_class!r}")
    return attention_class


@keras.saving.register_keras_serializable(package="keras_s2s")
class TransformerEncoderLayer(_TransformerLayer):
    """Self-attention → feed-forward, each with residual + layer norm.

    Args:
        d_model: int. Model width.
        num_heads: int. Attention heads; `d_model` must divide by it.
        d_ff: int. Width of the feed-forward hidden layer.
        dropout: float, default 0.0. On attention weights and on each sub-layer's output.
        activation: str or callable, default "relu". The feed-forward activation.
        normalize_first: bool, default False. Pre-norm instead of the paper's post-norm.
        layer_norm_epsilon: float, default 1e-5. Epsilon of the layer norms.
        kernel_initializer: initializer, default "glorot_uniform". Of every kernel (each
            weight gets its own copy).
        attention_class: a `MultiHeadAttention` subclass (or its registered name), default
            `MultiHeadAttention`. Built for every attention sub-layer, with
            `(num_heads, d_model // num_heads, dropout=, kernel_initializer=, name=)`; a
            subclass overriding `_compute_attention` changes how every head attends.

    Call arguments:
        inputs: `(B, T, d_model)`.
        padding_mask: `(B, T)`, True on real tokens.
        return_attention_scores: also return the self-attention weights `(B, H, T, T)`.

    Returns:
        `(B, T, d_model)` (and the weights).

    Example:
    >>> from keras import ops
    >>> from keras_s2s.layers import TransformerEncoderLayer
    >>> layer = TransformerEncoderLayer(d_model=16, num_heads=2, d_ff=32)
    >>> tuple(layer(ops.ones((2, 5, 16))).shape)
    (2, 5, 16)

    Reference: Vaswani et al. [Attention Is All You Need](https://arxiv.org/abs/1706.03762).
    NeurIPS 2017, §3.1; pre-norm: Xiong et al. [On Layer Normalization in the Transformer
    Architecture](https://arxiv.org/abs/2002.04745). ICML 2020.
    """

    def __init__(self, d_model, num_heads, d_ff, **kwargs):
        super().__init__(d_model, num_heads, d_ff, **kwargs)
        self.self_attention = self._attention("self_attention")
        self.self_attention_norm = self._layer_norm("self_attention_norm")
        self.self_attention_dropout = self._dropout()

    def build(self, inputs_shape):
        self._check_width(inputs_shape, "the encoder input")
        self.self_attention.build(inputs_shape, inputs_shape)
        for layer in (self.self_attention_norm, self.feed_forward, self.feed_forward_norm):
            layer.build(inputs_shape)

    def call(self, inputs, padding_mask=None, return_attention_scores=False, training=None):
        outputs, *scores = self._residual(
            inputs, self.self_attention_norm,
            lambda x: self.self_attention(
                x, x, value_mask=padding_mask,
                return_attention_scores=return_attention_scores, training=training),
            self.self_attention_dropout, training,
        )  # (B, T, d_model)
        (outputs,) = self._residual(
            outputs, self.feed_forward_norm, lambda x: self.feed_forward(x, training=training))
        return (outputs, *scores) if return_attention_scores else outputs

    def compute_output_spec(self, inputs, padding_mask=None, return_attention_scores=False,
                            training=None):
        outputs = self._spec(inputs.shape)
        if not return_attention_scores:
            return outputs
        batch, length = inputs.shape[0], inputs.shape[1]
        return outputs, self._spec((batch, self.num_heads, length, length))


@keras.saving.register_keras_serializable(package="keras_s2s")
class TransformerDecoderLayer(_TransformerLayer):
    """Masked self-attention → encoder–decoder cross-attention → feed-forward.

    Each sub-layer has a residual connection and layer norm.

    Args:
        d_model, num_heads, d_ff: as for `TransformerEncoderLayer`.
        dropout, activation, normalize_first, layer_norm_epsilon: as for
            `TransformerEncoderLayer` (default 0.0, "relu", False and 1e-5).
        kernel_initializer, attention_class: as for `TransformerEncoderLayer`.

    Call arguments:
        decoder_sequence: `(B, T, d_model)`.
        encoder_sequence: `(B, S, d_model)`; may be omitted when `cross_attention_cache` is given.
        decoder_padding_mask: `(B, T)`; encoder_padding_mask: `(B, S)` (True on real tokens).
        decoder_attention_mask: `(B, T, T_self)` (or broadcastable), True where self-attention
            may attend; encoder_attention_mask: `(B, T, S)` (or broadcastable), the same for
            cross-attention. keras-hub's names; a step-by-step decoder builds them once a step
            for every layer (with `use_causal_mask=False`) instead of each layer rebuilding
            them from the padding masks.
        self_attention_cache: `(keys, values)`, each `(B, H, T_max, d_model/H)`, of earlier
            steps (`MultiHeadAttention`'s cache); with `self_attention_cache_update_index` the
            step's keys/values are written there and the causal mask is offset by that index
            (step-by-step decoding).
        self_attention_cache_ancestry: `(B, T_max, k)` or None: with the cache, the row of
            its beam each row reads each cache position from (`MultiHeadAttention`'s
            `cache_ancestry`; a beam search's).
        cross_attention_cache: `(keys, values)`, each `(B, H, S, d_model/H)`, from
            `compute_cross_attention_cache`, so the encoder output is projected once per
            sentence, not once per step.
        use_causal_mask: mask future positions in self-attention (default True).
        return_attention_scores: also return the cross-attention weights (default False: they
            are then never materialised outside the fused attention).

    Returns:
        `outputs (B, T, d_model)`, then the cross-attention weights `(B, H, T, S)` if asked
        for, then the updated self-attention cache if one was given (a tuple when more than
        the outputs).

    Example:
    >>> from keras import ops
    >>> from keras_s2s.layers import TransformerDecoderLayer
    >>> layer = TransformerDecoderLayer(d_model=16, num_heads=2, d_ff=32)
    >>> outputs, weights = layer(ops.ones((2, 4, 16)), ops.ones((2, 6, 16)),
    ...                          return_attention_scores=True)
    >>> tuple(outputs.shape), tuple(weights.shape)
    ((2, 4, 16), (2, 2, 4, 6))

    Reference: Vaswani et al. [Attention Is All You Need](https://arxiv.org/abs/1706.03762).
    NeurIPS 2017, §3.1.
    """

    def __init__(self, d_model, num_heads, d_ff, **kwargs):
        super().__init__(d_model, num_heads, d_ff, **kwargs)
        self.self_attention = self._attention("self_attention")
        self.self_attention_norm = self._layer_norm("self_attention_norm")
        self.self_attention_dropout = self._dropout()
        self.cross_attention = self._attention("cross_attention")
        self.cross_attention_norm = self._layer_norm("cross_attention_norm")
        self.cross_attention_dropout = self._dropout()

    def build(self, decoder_sequence_shape, encoder_sequence_shape=None):
        self._check_width(decoder_sequence_shape, "the decoder input")
        encoder_sequence_shape = encoder_sequence_shape or decoder_sequence_shape
        self._check_width(encoder_sequence_shape, "the encoder output")
        self.self_attention.build(decoder_sequence_shape, decoder_sequence_shape)
        self.cross_attention.build(decoder_sequence_shape, encoder_sequence_shape)
        for layer in (self.self_attention_norm, self.cross_attention_norm, self.feed_forward,
                      self.feed_forward_norm):
            layer.build(decoder_sequence_shape)

    def compute_cross_attention_cache(self, encoder_sequence):
        """`(B, S, d_model)` → cross-attention `(keys, values)`, each `(B, H, S, d_model/H)`."""
        if not self.built:
            self.build(encoder_sequence.shape, encoder_sequence.shape)
        return self.cross_attention.compute_cache(encoder_sequence)

    def call(self, decoder_sequence, encoder_sequence=None, decoder_padding_mask=None,
             encoder_padding_mask=None, self_attention_cache=None,
             self_attention_cache_update_index=None, cross_attention_cache=None,
             use_causal_mask=True, return_attention_scores=False, training=None,
             decoder_attention_mask=None, encoder_attention_mask=None,
             self_attention_cache_ancestry=None):
        if encoder_sequence is None and cross_attention_cache is None:
            raise ValueError("pass encoder_sequence or cross_attention_cache")
        self_attention_extras = {}
        if self_attention_cache is not None:
            self_attention_extras = dict(
                cache=self_attention_cache, cache_update_index=self_attention_cache_update_index,
                cache_ancestry=self_attention_cache_ancestry)
        outputs, *new_cache = self._residual(
            decoder_sequence, self.self_attention_norm,
            lambda x: self.self_attention(
                x, x, value_mask=None if self_attention_cache is not None else decoder_padding_mask,
                attention_mask=decoder_attention_mask, use_causal_mask=use_causal_mask,
                training=training, **self_attention_extras),
            self.self_attention_dropout, training,
        )  # (B, T, d_model)
        memory = encoder_sequence if cross_attention_cache is None else None
        outputs, *cross_weights = self._residual(
            outputs, self.cross_attention_norm,
            lambda x: self._cross_attend(x, memory, encoder_padding_mask, encoder_attention_mask,
                                         cross_attention_cache, return_attention_scores,
                                         training),
            self.cross_attention_dropout, training,
        )  # (B, T, d_model), [(B, H, T, S)]
        (outputs,) = self._residual(
            outputs, self.feed_forward_norm, lambda x: self.feed_forward(x, training=training))
        results = (outputs, *cross_weights, *new_cache)
        return results[0] if len(results) == 1 else results

    def _cross_attend(self, x, memory, padding_mask, attention_mask, cache,
                      return_attention_scores, training):
        """Cross-attention output and, if asked for, its weights (never the fixed cache)."""
        results = self.cross_attention(x, memory, value_mask=padding_mask,
                                       attention_mask=attention_mask, cache=cache,
                                       return_attention_scores=return_attention_scores,
                                       training=training)
        if cache is None:
            return results
        return results[:2] if return_attention_scores else results[0]

    def compute_output_spec(self, decoder_sequence, encoder_sequence=None,
                            decoder_padding_mask=None, encoder_padding_mask=None,
                            self_attention_cache=None, self_attention_cache_update_index=None,
                            cross_attention_cache=None, use_causal_mask=True,
                            return_attention_scores=False, training=None,
                            decoder_attention_mask=None, encoder_attention_mask=None,
                            self_attention_cache_ancestry=None):
        batch, length = decoder_sequence.shape[0], decoder_sequence.shape[1]
        results = (self._spec(decoder_sequence.shape),)
        if return_attention_scores:
            source_length = (encoder_sequence.shape[1] if cross_attention_cache is None
                             else cross_attention_cache[0].shape[2])
            results += (self._spec((batch, self.num_heads, length, source_length)),)
        if self_attention_cache is not None:
            results += (tuple(keras.KerasTensor(part.shape, dtype=part.dtype)
                              for part in self_attention_cache),)
        return results[0] if len(results) == 1 else results
