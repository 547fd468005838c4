"""Single-head attention: Bahdanau (additive), Luong (dot/general/concat) and scaled dot-product.

All three share one shape contract and one masking rule; they differ only in how a query is
scored against the keys:

    weights = masked_softmax(score(query, key))        # (B, Tq, Tv), 0 exactly on masked keys
    context = weights @ value                           # (B, Tq, Dv)

A query of shape `(B, Dq)` (one decoder step) gives a context `(B, Dv)` and weights `(B, Tv)`.
"""

import math

import keras
from keras import ops

from keras_s2s.checks import check_bool, check_choice, check_dropout, check_positive_int
from keras_s2s.layers.common import clone_initializer
from keras_s2s.layers.masking import masked_softmax, merge_masks


class ScoredAttention(keras.layers.Layer):
    """Base of single-head attention: subclasses implement `score(query, key) -> (B, Tq, Tv)`.

    The base owns everything else — masking, the softmax (exactly 0 on masked keys), dropout on
    the weights, the one-step `(B, Dq)` query form and the output shapes — so a new score is
    one method (and a `build` for its weights, made with `self._dense`).

    Args:
        dropout: float, default 0.0. Dropout on the attention weights.
        kernel_initializer: initializer, default "glorot_uniform". Each weight a subclass
            makes with `self._dense` gets its own copy.

    Call arguments and returns: see `call`. Shapes: query `(B, Dq)` (one decoder step) or
    `(B, Tq, Dq)`, value `(B, Tv, Dv)` → context `(B, Dv)` / `(B, Tq, Dv)` and weights
    `(B, Tv)` / `(B, Tq, Tv)`.

    Example (cosine similarity, a score none of the papers here uses):
    >>> import keras
    >>> from keras import ops
    >>> from keras_s2s.layers import ScoredAttention
    >>> class CosineAttention(ScoredAttention):
    ...     def score(self, query, key):
    ...         query = query / ops.norm(query, axis=-1, keepdims=True)
    ...         key = key / ops.norm(key, axis=-1, keepdims=True)
    ...         return ops.matmul(query, ops.swapaxes(key, -1, -2))
    >>> context, weights = CosineAttention()(ops.ones((2, 4)), ops.ones((2, 3, 4)),
    ...                                      return_attention_scores=True)
    >>> tuple(context.shape), [round(float(w), 3) for w in weights[0]]
    ((2, 4), [0.333, 0.333, 0.333])

    Register the subclass (`@keras.saving.register_keras_serializable`) so that models
    holding it can be saved and loaded.

    Reference: the shared form of Luong, Pham, Manning. [Effective Approaches to
    Attention-based Neural Machine Translation](https://arxiv.org/abs/1508.04025), §3.1.
    """

    def __init__(self, dropout=0.0, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        check_dropout(dropout)
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self._dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def _dense(self, units, name):
        """A bias-free projection of the score, with its own copy of the initializer."""
        return keras.layers.Dense(units, use_bias=False, name=name, dtype=self.dtype_policy,
                                  kernel_initializer=clone_initializer(self.kernel_initializer))

    def build(self, query_shape, value_shape, key_shape=None):
        """Create the score's weights from the shapes (a score without weights needs none)."""

    def score(self, query, key):
        raise NotImplementedError

    def call(self, query, value, key=None, value_mask=None, attention_mask=None,
             use_causal_mask=False, return_attention_scores=False, training=None):
        """Attend from `query` over `value`.

        Args:
            query: `(B, Dq)` or `(B, Tq, Dq)`.
            value: `(B, Tv, Dv)`.
            key: `(B, Tv, Dk)`; defaults to `value`.
            value_mask: `(B, Tv)`, True where a value may be attended (False on padding).
            attention_mask: `(B, Tq, Tv)` extra mask, True where attention is allowed.
            use_causal_mask: query `i` sees only values `<= i` (self-attention).
            return_attention_scores: also return the attention weights.

        Returns:
            context `(B, Dv)` / `(B, Tq, Dv)`, and with `return_attention_scores` the weights
            `(B, Tv)` / `(B, Tq, Tv)`.
        """
        single_step = len(query.shape) == 2
        if single_step:
            query = ops.expand_dims(query, -2)  # (B, 1, Dq)
        key = value if key is None else key
        scores = self.score(query, key)  # (..., Tq, Tv)
        mask = merge_masks(
            value_mask=value_mask, attention_mask=attention_mask, causal=use_causal_mask,
            query_length=ops.shape(query)[-2], value_length=ops.shape(key)[-2],
        )
        weights = masked_softmax(scores, mask)
        context = ops.matmul(self._dropout_layer(weights, training=training), value)
        if single_step:
            context = ops.squeeze(context, -2)  # (B, Dv)
            weights = ops.squeeze(weights, -2)  # (B, Tv)
        if return_attention_scores:
            return context, weights
        return context

    def compute_output_spec(self, query, value, key=None, value_mask=None,
                            attention_mask=None, use_causal_mask=False,
                            return_attention_scores=False, training=None):
        context = keras.KerasTensor(tuple(query.shape[:-1]) + (value.shape[-1],),
                                    dtype=self.compute_dtype)
        if not return_attention_scores:
            return context
        weights_shape = tuple(query.shape[:-1]) + (value.shape[-2],)
        return context, keras.KerasTensor(weights_shape, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "dropout": self.dropout,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


def _additive_score(layer, query, key):
    """vᵀ tanh(W₁ q + W₂ k) with `layer`'s query_dense, key_dense and score_dense: (B, Tq, Tv)."""
    processed_query = ops.expand_dims(layer.query_dense(query), -2)  # (B, Tq, 1, U)
    processed_key = ops.expand_dims(layer.key_dense(key), -3)  # (B, 1, Tv, U)
    hidden = ops.tanh(processed_query + processed_key)  # (B, Tq, Tv, U)
    return ops.squeeze(layer.score_dense(hidden), -1)  # (B, Tq, Tv)


@keras.saving.register_keras_serializable(package="keras_s2s")
class BahdanauAttention(ScoredAttention):
    """Additive attention (Bahdanau et al., 2015): score(s, hⱼ) = vᵀ tanh(W₁ s + W₂ hⱼ).

    Args:
        units: int. Size of the hidden layer inside the score (the width of W₁, W₂ and v).
        dropout: float, default 0.0. Dropout on the attention weights.
        kernel_initializer: initializer, default "glorot_uniform". Of W₁, W₂ and v (each gets
            its own copy).

    Call arguments and shapes: see `ScoredAttention.call`; query `(B, Dq)` or `(B, Tq, Dq)`,
    value `(B, Tv, Dv)`, key `(B, Tv, Dk)` (defaults to value). Weights `W₁: (Dq, units)`,
    `W₂: (Dk, units)`, `v: (units, 1)`, no biases, as in the equation.

    Example:
    >>> from keras import ops
    >>> from keras_s2s.layers import BahdanauAttention
    >>> layer = BahdanauAttention(units=16)
    >>> context, weights = layer(ops.ones((2, 8)), ops.ones((2, 5, 12)),
    ...                          return_attention_scores=True)
    >>> tuple(context.shape), tuple(weights.shape)
    ((2, 12), (2, 5))

    Reference: Bahdanau, Cho, Bengio. [Neural Machine Translation by Jointly Learning to Align
    and Translate](https://arxiv.org/abs/1409.0473). ICLR 2015, appendix A.1.2.
    """

    def __init__(self, units, dropout=0.0, **kwargs):
        super().__init__(dropout=dropout, **kwargs)
        check_positive_int("units", units)
        self.units = units
        self.query_dense = self._dense(units, "query_dense")
        self.key_dense = self._dense(units, "key_dense")
        self.score_dense = self._dense(1, "score_dense")

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        self.query_dense.build(query_shape)
        self.key_dense.build(key_shape)
        self.score_dense.build(tuple(key_shape[:-1]) + (self.units,))

    def score(self, query, key):
        return _additive_score(self, query, key)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="keras_s2s")
class LuongAttention(ScoredAttention):
    """Multiplicative attention (Luong et al., 2015) with its three score functions.

    - `"dot"`:     score(hₜ, h̄ₛ) = hₜᵀ h̄ₛ            (requires Dq == Dk)
    - `"general"`: score(hₜ, h̄ₛ) = hₜᵀ Wₐ h̄ₛ         (Wₐ: (Dk, Dq))
    - `"concat"`:  score(hₜ, h̄ₛ) = vₐᵀ tanh(Wₐ [hₜ; h̄ₛ])  (Wₐ split into query and key halves)

    Args:
        score: str, default "general". One of "dot", "general", "concat".
        scale: bool, default False. Multiply the scores by a learned scalar (initialised to 1),
            as `keras.layers.Attention(use_scale=True)` does.
        units: int or None, default None (the query size). Width of the "concat" hidden layer.
        dropout: float, default 0.0. Dropout on the attention weights.
        kernel_initializer: initializer, default "glorot_uniform". Of Wₐ and vₐ (each gets its
            own copy).

    Shapes: query `(B, Dq)` or `(B, Tq, Dq)`, value `(B, Tv, Dv)`, key defaults to value;
    returns as `ScoredAttention.call`.

    Example:
    >>> from keras import ops
    >>> from keras_s2s.layers import LuongAttention
    >>> context, weights = LuongAttention("dot")(ops.ones((2, 3, 8)), ops.ones((2, 5, 8)),
    ...                                          return_attention_scores=True)
    >>> tuple(context.shape), tuple(weights.shape)
    ((2, 3, 8), (2, 3, 5))

    Reference: Luong, Pham, Manning. [Effective Approaches to Attention-based Neural Machine
    Translation](https://arxiv.org/abs/1508.04025). EMNLP 2015, §3.1.
    """

    SCORES = ("dot", "general", "concat")

    def __init__(self, score="general", scale=False, units=None, dropout=0.0, **kwargs):
        super().__init__(dropout=dropout, **kwargs)
        check_choice("score", score, self.SCORES)
        check_bool("scale", scale)
        check_positive_int("units", units, optional=True)
        self.score_mode = score
        self.scale = scale
        self.units = units

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        query_dim, key_dim = query_shape[-1], key_shape[-1]
        if self.score_mode == "dot" and query_dim != key_dim:
            raise ValueError(
                f"LuongAttention(score='dot') needs query and key of the same size, got query "
                f"size {query_dim} and key size {key_dim}; use score='general' instead"
            )
        if self.score_mode == "general":
            self.key_dense = self._dense(query_dim, "key_dense")
            self.key_dense.build(key_shape)
        elif self.score_mode == "concat":
            units = self.units or query_dim
            self.query_dense = self._dense(units, "query_dense")
            self.key_dense = self._dense(units, "key_dense")
            self.score_dense = self._dense(1, "score_dense")
            self.query_dense.build(query_shape)
            self.key_dense.build(key_shape)
            self.score_dense.build(tuple(key_shape[:-1]) + (units,))
        if self.scale:
            self.scale_weight = self.add_weight(name="scale", shape=(), initializer="ones")

    def score(self, query, key):
        if self.score_mode == "concat":
            scores = _additive_score(self, query, key)  # (B, Tq, Tv)
        else:
            if self.score_mode == "general":
                key = self.key_dense(key)  # (B, Tv, Dq)
            scores = ops.matmul(query, ops.swapaxes(key, -1, -2))  # (B, Tq, Tv)
        if self.scale:
            scores = scores * ops.cast(self.scale_weight, scores.dtype)
        return scores

    def get_config(self):
        return {**super().get_config(), "score": self.score_mode, "scale": self.scale,
                "units": self.units}


@keras.saving.register_keras_serializable(package="keras_s2s")
class ScaledDotProductAttention(ScoredAttention):
    """softmax(Q Kᵀ / √d_k) · V (Vaswani et al., 2017). No weights.

    Works on any leading dimensions: `(B, Tq, d)` or `(B, H, Tq, d)` with masks
    broadcastable to `(B, H, Tq, Tv)`. (`MultiHeadAttention` fuses the same equation into
    `keras.ops.dot_product_attention` when it can.)

    Args:
        dropout: float, default 0.0. Dropout on the attention weights.

    Shapes: query `(..., Tq, d)`, key `(..., Tv, d)` (defaults to value), value
    `(..., Tv, dv)` → context `(..., Tq, dv)` and weights `(..., Tq, Tv)`.

    Example:
    >>> from keras import ops
    >>> from keras_s2s.layers import ScaledDotProductAttention
    >>> context, weights = ScaledDotProductAttention()(
    ...     ops.ones((2, 3, 4)), ops.ones((2, 5, 4)), use_causal_mask=True,
    ...     return_attention_scores=True)
    >>> [round(float(w), 2) for w in weights[0, 1]]  # query 1 sees keys 0 and 1
    [0.5, 0.5, 0.0, 0.0, 0.0]

    Reference: Vaswani et al. [Attention Is All You Need](https://arxiv.org/abs/1706.03762).
    NeurIPS 2017, §3.2.1.
    """

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        if query_shape[-1] != key_shape[-1]:
            raise ValueError(
                f"query and key must have the same last dimension, got {query_shape[-1]} and "
                f"{key_shape[-1]}"
            )

    def score(self, query, key):
        scores = ops.matmul(query, ops.swapaxes(key, -1, -2))  # (..., Tq, Tv)
        return scores * (1.0 / math.sqrt(key.shape[-1]))
