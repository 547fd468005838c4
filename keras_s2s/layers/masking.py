"""Mask helpers shared by every attention layer.

Masks in this package are boolean (or 0/1) tensors where True means "may attend". A padding mask
has shape `(batch, length)`; an attention mask has shape `(batch, query_length, value_length)`.
"""

from keras import ops


def merge_masks(query_mask=None, value_mask=None, attention_mask=None, causal=False,
                query_length=None, value_length=None, query_offset=0):
    """Combine padding, attention and causal masks into one `(B, Tq, Tv)` boolean mask.

    Args:
        query_mask: `(B, Tq)` padding mask of the queries, or None.
        value_mask: `(B, Tv)` padding mask of the values (and keys), or None.
        attention_mask: `(B, Tq, Tv)` mask, or None.
        causal: whether query position `i` may only see value positions `<= i + query_offset`.
        query_length, value_length: needed only when `causal` is set.
        query_offset: position of the first query (cached step-by-step decoding).

    Returns:
        A boolean mask broadcastable to `(B, Tq, Tv)`, or None when no mask applies.
    """
    mask = None

    def combine(current, new):
        new = ops.cast(new, "bool")
        return new if current is None else ops.logical_and(current, new)

    if value_mask is not None:
        mask = combine(mask, ops.expand_dims(value_mask, 1))  # (B, 1, Tv)
    if query_mask is not None:
        mask = combine(mask, ops.expand_dims(query_mask, 2))  # (B, Tq, 1)
    if attention_mask is not None:
        mask = combine(mask, attention_mask)  # (B, Tq, Tv)
    if causal:
        mask = combine(mask, causal_mask(query_length, value_length, query_offset))
    return mask


def causal_mask(query_length, value_length, query_offset=0):
    """`(1, Tq, Tv)` mask letting query `i` see values `0 .. i + query_offset`."""
    query_positions = ops.arange(query_length) + ops.cast(query_offset, "int32")
    value_positions = ops.arange(value_length)
    return ops.expand_dims(ops.expand_dims(query_positions, 1) >= value_positions, 0)


def masked_softmax(scores, mask=None, axis=-1):
    """Softmax over `axis` that gives exactly 0 weight where `mask` is False.

    Computed in float32 (stable under mixed precision) and cast back. Rows with no allowed
    position get all-zero weights instead of a uniform distribution.
    """
    dtype = scores.dtype
    scores = ops.cast(scores, "float32")
    if mask is None:
        return ops.cast(ops.softmax(scores, axis=axis), dtype)
    mask = ops.broadcast_to(ops.cast(mask, "bool"), ops.shape(scores))
    scores = ops.where(mask, scores, -1e9)
    weights = ops.where(mask, ops.softmax(scores, axis=axis), 0.0)
    return ops.cast(weights, dtype)
