"""Multi-head attention with an incremental-decoding key/value cache."""

import functools
import math

import keras
from keras import ops

from keras_s2s.checks import check_bool, check_dropout, check_positive_int
from keras_s2s.layers.common import clone_initializer
from keras_s2s.layers.masking import masked_softmax, merge_masks
from keras_s2s.tensor_ops import write_at


@keras.saving.register_keras_serializable(package="keras_s2s")
class MultiHeadAttention(keras.layers.Layer):
    """MultiHead(Q, K, V) = Concat(head₁ … head_h) Wᴼ, headᵢ = Attention(Q Wᵢᑫ, K Wᵢᴷ, V Wᵢⱽ).

    Call-compatible with `keras.layers.MultiHeadAttention` and with the same weight layout
    (kernels `(D, H, key_dim)`, biases `(H, key_dim)`, output kernel `(H, value_dim, D)`), so
    `set_weights(keras_mha.get_weights())` gives identical outputs.

    Args:
        num_heads: int. Number of heads H.
        key_dim: int. Size of each query/key head.
        value_dim: int or None, default None (`key_dim`). Size of each value head.
        dropout: float, default 0.0. Dropout on the attention weights.
        use_bias: bool, default True. Whether the projections have biases.
        output_dim: int or None, default None (the query's last dimension). Output size.
        kernel_initializer: initializer, default "glorot_uniform". Of the four kernels (each
            gets its own copy, so the query, key, value and output projections start
            different).

    Call arguments:
        query: `(B, Tq, Dq)`. value: `(B, Tv, Dv)`. key: `(B, Tv, Dk)`, defaults to value.
        query_mask / value_mask / key_mask: `(B, Tq)` / `(B, Tv)` padding masks (True = keep).
        attention_mask: `(B, Tq, Tv)` boolean, True where attention is allowed.
        use_causal_mask: query `i` attends only to positions `<= i` (+ `cache_update_index`).
        return_attention_scores: also return the weights `(B, H, Tq, Tv)`.
        cache: `(keys, values)`, two `(B, H, T_cache, key_dim)` tensors, heads before
            positions: the layout both attention products read as they lie, so a step copies
            neither (a stacked `(B, 2, T, H, d)` cache, keras-hub's, costs a slice copy of each
            half and a transpose inside each product). With `cache_update_index`, the new
            keys/values of `query`'s positions are written at that index (self-attention, one
            step at a time) and attention runs over the whole cache — mask the unwritten tail
            with `attention_mask` or `use_causal_mask`. Without it the cache is used as
            precomputed keys/values (cross-attention; see `compute_cache`).
        cache_ancestry: `(B, T_cache, k)` 0/1, with `cache_update_index` and one query
            position: the queries are beams of k consecutive rows, and row r reads cache
            position t from the row of its beam that `cache_ancestry[r, t]` picks, its
            ancestor's (a beam search that leaves each cache row in place instead of copying
            the whole cache to the surviving hypotheses every step). Plain scaled dot-product
            attention computes it, never an overriding `_compute_attention`.

    Returns:
        `output (B, Tq, output_dim)`, then the scores if asked for, then the updated cache if a
        cache was given.

    To change how the heads attend (relative positions, ALiBi, a local window, another
    score), subclass and override `_compute_attention`, the hook Keras's own
    `MultiHeadAttention` has; the projections, masks and cache stay as they are. The
    Transformer layers and model take such a subclass as `attention_class`.

    Example:
    >>> from keras import ops
    >>> from keras_s2s.layers import MultiHeadAttention
    >>> layer = MultiHeadAttention(num_heads=2, key_dim=4)
    >>> output, scores = layer(ops.ones((1, 3, 8)), ops.ones((1, 5, 8)),
    ...                        return_attention_scores=True)
    >>> tuple(output.shape), tuple(scores.shape)
    ((1, 3, 8), (1, 2, 3, 5))

    Reference: Vaswani et al. [Attention Is All You Need](https://arxiv.org/abs/1706.03762).
    NeurIPS 2017, §3.2.2.
    """

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True,
                 output_dim=None, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        check_positive_int("key_dim", key_dim)
        check_positive_int("value_dim", value_dim, optional=True)
        check_positive_int("output_dim", output_dim, optional=True)
        check_dropout(dropout)
        check_bool("use_bias", use_bias)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = value_dim or key_dim
        self.dropout = dropout
        self.use_bias = use_bias
        self.output_dim = output_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self._dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        output_dim = self.output_dim or query_shape[-1]
        heads = self.num_heads
        # Weights are created in keras.layers.MultiHeadAttention's order (kernel, bias for
        # query, key, value, output) so that get_weights/set_weights line up.
        specs = (
            ("query", (query_shape[-1], heads, self.key_dim), (heads, self.key_dim)),
            ("key", (key_shape[-1], heads, self.key_dim), (heads, self.key_dim)),
            ("value", (value_shape[-1], heads, self.value_dim), (heads, self.value_dim)),
            ("output", (heads, self.value_dim, output_dim), (output_dim,)),
        )
        for name, kernel_shape, bias_shape in specs:
            setattr(self, f"{name}_kernel", self.add_weight(
                name=f"{name}_kernel", shape=kernel_shape,
                initializer=clone_initializer(self.kernel_initializer)))
            if self.use_bias:
                setattr(self, f"{name}_bias", self.add_weight(
                    name=f"{name}_bias", shape=bias_shape, initializer="zeros"))

    @property
    def _scale(self):
        """1/√d_k, a constant (left to Keras, it is recomputed from the key's shape each call)."""
        return 1.0 / math.sqrt(self.key_dim)

    def _project(self, inputs, name):
        """(B, T, D) → (B, H, T, d) with the `name` projection (heads before positions)."""
        outputs = ops.einsum("btd,dhk->bhtk", inputs, getattr(self, f"{name}_kernel"))
        if self.use_bias:
            outputs = outputs + ops.expand_dims(getattr(self, f"{name}_bias"), 1)  # (H, 1, d)
        return outputs

    def compute_cache(self, value, key=None):
        """Precompute `(keys, values)`, each `(B, H, Tv, key_dim)`, e.g. of an encoder output."""
        self._check_cacheable()
        key = value if key is None else key
        return self._project(key, "key"), self._project(value, "value")

    def _check_cacheable(self):
        if self.value_dim != self.key_dim:
            raise ValueError(
                f"a key/value cache needs value_dim == key_dim, got value_dim={self.value_dim} "
                f"and key_dim={self.key_dim}"
            )

    def call(self, query, value, key=None, query_mask=None, value_mask=None, key_mask=None,
             attention_mask=None, return_attention_scores=False, training=None,
             use_causal_mask=False, cache=None, cache_update_index=None, cache_ancestry=None):
        key = value if key is None else key
        query_heads = self._project(query, "query")  # (B, H, Tq, dk)
        if cache is None:
            if cache_update_index is not None:
                raise ValueError("cache_update_index was given without a cache")
            key_heads = self._project(key, "key")  # (B, H, Tv, dk)
            value_heads = self._project(value, "value")  # (B, H, Tv, dv)
        else:
            key_heads, value_heads = _keys_and_values(cache)
            if cache_update_index is not None:
                self._check_cacheable()
                cache = write_at((key_heads, value_heads), (
                    self._project(key, "key"), self._project(value, "value")),
                    cache_update_index, axis=2)  # one position mask for both
                key_heads, value_heads = cache

        if key_mask is not None:
            value_mask = key_mask if value_mask is None else ops.logical_and(
                ops.cast(value_mask, "bool"), ops.cast(key_mask, "bool"))
        mask = merge_masks(
            query_mask=query_mask, value_mask=value_mask, attention_mask=attention_mask,
            causal=use_causal_mask, query_length=ops.shape(query)[1],
            value_length=ops.shape(key_heads)[2],
            query_offset=0 if cache_update_index is None else cache_update_index,
        )
        if mask is not None:
            mask = ops.expand_dims(mask, 1)  # (B, 1, Tq, Tv), broadcast over heads

        attend = self._compute_attention if cache_ancestry is None else functools.partial(
            self._attend_through_ancestry, cache_ancestry)
        context, scores = attend(
            query_heads, key_heads, value_heads, attention_mask=mask, training=training,
            return_attention_scores=return_attention_scores)  # (B, H, Tq, dv), (B, H, Tq, Tv)
        output = ops.einsum("bhtv,hvo->bto", context, self.output_kernel)
        if self.use_bias:
            output = output + self.output_bias

        results = (output,)
        if return_attention_scores:
            results += (scores,)
        if cache is not None:
            results += (cache,)
        return results[0] if len(results) == 1 else results

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False):
        """softmax(Q Kᵀ / √d_k) V over every head: the hook to override.

        Args:
            query: `(B, H, Tq, dk)`, key: `(B, H, Tv, dk)`, value: `(B, H, Tv, dv)` — the
                projected heads, heads before positions (the cache's layout, and
                `torch.nn.functional.scaled_dot_product_attention`'s): both products are
                matmuls batched over `(B, H)` that read the keys and values as they lie.
            attention_mask: boolean, broadcastable to `(B, H, Tq, Tv)`, True where a query may
                attend; None for no mask.
            training: whether attention dropout applies.
            return_attention_scores: whether the caller needs the weights.

        Returns:
            `(context (B, H, Tq, dv), weights (B, H, Tq, Tv) or None)`; the weights are 0
            where masked.
        """
        scores = ops.einsum("bhqd,bhkd->bhqk", query, key) * self._scale
        if return_attention_scores or (training and self.dropout):
            weights = masked_softmax(scores, attention_mask)
        else:
            weights = _softmax_where_attending(scores, attention_mask)
        context = ops.einsum("bhqk,bhkd->bhqd",
                             self._dropout_layer(weights, training=training), value)
        return context, weights if return_attention_scores else None

    def _attend_through_ancestry(self, ancestry, query, key, value, attention_mask=None,
                                 training=None, return_attention_scores=False):
        """`_compute_attention` of one query position per row, row r reading cache position t
        from the row of its beam that `ancestry` `(B, Tv, k)` picks (see `call`).

        Each cache row is read where it lies, by the queries of its whole beam: a `(k, Tv)`
        product per row and head, k times the scores one row needs (a step's attention is a
        small part of it), and the 0/1 ancestry keeps each query's own (an exact selection).
        """
        width = ops.shape(ancestry)[-1]
        rows, heads, length = ops.shape(key)[0], ops.shape(key)[1], ops.shape(key)[2]
        beams = rows // width

        def by_beam(tensor):  # (B, H, 1, x) → (B / k, H, k, x): a beam's queries side by side
            return ops.transpose(ops.reshape(tensor, (beams, width, heads, -1)), (0, 2, 1, 3))

        def per_row(tensor):  # (B / k, H, k, x) → (B, H, 1, x)
            return ops.reshape(ops.transpose(tensor, (0, 2, 1, 3)), (rows, heads, 1, -1))

        # [beam, i, 1, j, t]: query j of the beam reads position t of the beam's row i.
        picks = ops.transpose(ops.reshape(ancestry, (beams, width, length, width)),
                              (0, 3, 1, 2))[:, :, None]
        queries = ops.reshape(ops.broadcast_to(
            by_beam(query)[:, None], (beams, width, heads, width, ops.shape(query)[-1])),
            (rows, heads, width, -1))  # row (beam, i): the beam's k queries
        scores = ops.reshape(ops.einsum("rhjd,rhtd->rhjt", queries, key),
                             (beams, width, heads, width, length))
        scores = per_row(ops.sum(scores * picks, axis=1)) * self._scale  # (B, H, 1, Tv)
        weights = self._dropout_layer(_softmax_where_attending(scores, attention_mask),
                                      training=training)
        spread = ops.reshape(by_beam(weights)[:, None] * picks, (rows, heads, width, length))
        context = ops.sum(ops.reshape(ops.einsum("rhjt,rhtd->rhjd", spread, value),
                                      (beams, width, heads, width, -1)), axis=1)
        return per_row(context), weights if return_attention_scores else None

    def compute_output_spec(self, query, value, key=None, query_mask=None, value_mask=None,
                            key_mask=None, attention_mask=None, return_attention_scores=False,
                            training=None, use_causal_mask=False, cache=None,
                            cache_update_index=None, cache_ancestry=None):
        batch, query_length = query.shape[0], query.shape[1]
        results = (keras.KerasTensor((batch, query_length, self.output_dim or query.shape[-1]),
                                     dtype=self.compute_dtype),)
        if return_attention_scores:
            value_length = value.shape[1] if cache is None else cache[0].shape[2]
            results += (keras.KerasTensor((batch, self.num_heads, query_length, value_length),
                                          dtype=self.compute_dtype),)
        if cache is not None:
            results += (tuple(keras.KerasTensor(part.shape, dtype=part.dtype) for part in cache),)
        return results[0] if len(results) == 1 else results

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "output_dim": self.output_dim,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


def _softmax_where_attending(scores, attention_mask):
    """`masked_softmax`'s weights wherever a query may attend somewhere, in fewer ops (a
    decoding step's queries always may): no mask broadcast, no zeroing select."""
    logits = ops.cast(scores, "float32")
    if attention_mask is not None:
        logits = ops.where(attention_mask, logits, -1e9)
    return ops.cast(ops.softmax(logits, axis=-1), scores.dtype)


def _keys_and_values(cache):
    """The `(keys, values)` of `cache`, or a one-line error naming what it got instead."""
    parts = tuple(cache) if isinstance(cache, (tuple, list)) else (cache,)
    shapes = [tuple(part.shape) if hasattr(part, "shape") else type(part).__name__
              for part in parts]
    if len(parts) != 2 or any(not isinstance(shape, tuple) or len(shape) != 4
                              for shape in shapes):
        raise ValueError(f"cache must be a (keys, values) pair of (B, H, T, key_dim) tensors, "
                         f"got {len(parts)} of shape{'s' if len(parts) > 1 else ''} "
                         f"{', '.join(map(str, shapes))}")
    return parts
