"""Small backend-agnostic tensor operations shared by the layers and the decoding loops."""

import keras
from keras import ops


def write_at(buffer, values, index, axis):
    """`buffer` with `values` written at positions `[index, index + n)` along `axis`.

    `values` has the shape of `buffer` except for size `n` along `axis`; `index` may be a
    tensor. `buffer` and `values` may also be matching structures of such tensors (a layer's
    keys and values), all of one length along `axis`: they share one position mask. Built from
    a gather and a select rather than `ops.slice_update`, whose TensorFlow lowering is an
    XLA-only op (XlaDynamicUpdateSlice) that TensorFlow Serving runs only with XLA JIT enabled;
    these two ops export everywhere, TFLite builtins included. One position (`n == 1`, every
    decoding step) needs no gather: the select broadcasts `values`.
    """
    buffers, updates = keras.tree.flatten(buffer), keras.tree.flatten(values)
    length, count = ops.shape(buffers[0])[axis], ops.shape(updates[0])[axis]
    offsets = ops.arange(length) - ops.cast(index, "int32")  # position relative to index
    mask_shape = [1] * len(buffers[0].shape)
    mask_shape[axis] = -1
    if updates[0].shape[axis] == 1:
        written = ops.reshape(offsets == 0, mask_shape)
        results = [ops.where(written, update, old) for old, update in zip(buffers, updates)]
    else:
        inside = ops.reshape(ops.logical_and(offsets >= 0, offsets < count), mask_shape)
        positions = ops.clip(offsets, 0, count - 1)
        results = [ops.where(inside, ops.take(update, positions, axis=axis), old)  # gathered
                   for old, update in zip(buffers, updates)]
    return keras.tree.pack_sequence_as(buffer, results)
