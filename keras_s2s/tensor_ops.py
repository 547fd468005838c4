"""Small backend-agnostic tensor operations shared by the layers and the decoding loops."""

from keras import ops


def write_at(buffer, values, index, axis):
    """`buffer` with `values` written at positions `[index, index + n)` along `axis`.

    `values` has the shape of `buffer` except for size `n` along `axis`; `index` may be a
    tensor. Built from a gather and a select rather than `ops.slice_update`, whose TensorFlow
    lowering is an XLA-only op (XlaDynamicUpdateSlice) that TensorFlow Serving runs only with
    XLA JIT enabled; these two ops export everywhere, TFLite builtins included. One position
    (`n == 1`, every decoding step) needs no gather: the select broadcasts `values`.
    """
    length, count = ops.shape(buffer)[axis], ops.shape(values)[axis]
    offsets = ops.arange(length) - ops.cast(index, "int32")  # position relative to index
    mask_shape = [1] * len(buffer.shape)
    mask_shape[axis] = -1
    if values.shape[axis] == 1:
        return ops.where(ops.reshape(offsets == 0, mask_shape), values, buffer)
    inside = ops.logical_and(offsets >= 0, offsets < count)  # (L,)
    gathered = ops.take(values, ops.clip(offsets, 0, count - 1), axis=axis)  # buffer's shape
    return ops.where(ops.reshape(inside, mask_shape), gathered, buffer)
