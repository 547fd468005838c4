import numpy as np
import pytest
from keras import ops

from keras_s2s.tensor_ops import write_at


def _numpy_write_at(buffer, values, index, axis):
    expected = buffer.copy()
    region = [slice(None)] * buffer.ndim
    region[axis] = slice(index, index + values.shape[axis])
    expected[tuple(region)] = values
    return expected


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("count", [1, 2, 3])  # 1 takes the broadcasting path
@pytest.mark.parametrize("index", [0, 2])
def test_write_at_matches_numpy_slice_assignment(axis, count, index):
    rng = np.random.default_rng(0)
    buffer = rng.normal(size=(5, 6, 7)).astype("float32")
    values_shape = list(buffer.shape)
    values_shape[axis] = count
    values = rng.normal(size=values_shape).astype("float32")
    result = write_at(ops.convert_to_tensor(buffer), ops.convert_to_tensor(values),
                      ops.convert_to_tensor(index), axis=axis)
    np.testing.assert_array_equal(ops.convert_to_numpy(result),
                                  _numpy_write_at(buffer, values, index, axis))


def test_write_at_leaves_the_buffer_unchanged_past_its_end():
    buffer = np.zeros((2, 4), "int32")
    result = write_at(ops.convert_to_tensor(buffer), ops.ones((2, 1), "int32"), 4, axis=1)
    np.testing.assert_array_equal(ops.convert_to_numpy(result), buffer)
