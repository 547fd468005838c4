import keras
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


@pytest.mark.parametrize("count", [1, 2])
def test_write_at_writes_each_tensor_of_a_structure(count):
    """A layer's keys and values, written in one call, each get numpy's slice assignment."""
    rng = np.random.default_rng(0)
    keys, values = (rng.normal(size=(2, 3, 6, 4)).astype("float32") for _ in range(2))
    new_keys, new_values = (rng.normal(size=(2, 3, count, 4)).astype("float32")
                            for _ in range(2))
    written = write_at((ops.convert_to_tensor(keys), ops.convert_to_tensor(values)),
                       (ops.convert_to_tensor(new_keys), ops.convert_to_tensor(new_values)),
                       3, axis=2)
    assert isinstance(written, tuple) and len(written) == 2
    for result, buffer, new in zip(written, (keys, values), (new_keys, new_values)):
        np.testing.assert_array_equal(ops.convert_to_numpy(result),
                                      _numpy_write_at(buffer, new, 3, axis=2))


def test_write_at_runs_on_core_tensorflow_ops_and_tflite_builtins_with_numpys_result():
    """The self-attention cache's write, keys and values `(B, H, L, d)` at one position, is
    built of core TensorFlow ops (no XLA-only op such as `ops.slice_update`'s
    XlaDynamicUpdateSlice, which runs only where XLA compiles it, so not in TensorFlow Serving
    builds without XLA) and of TFLite builtins (what `keras-s2s tflite` allows), and LiteRT
    computes it."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("SavedModels and TFLite are TensorFlow graphs")
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(0)
    keys, values = (rng.normal(size=(3, 2, 7, 4)).astype("float32") for _ in range(2))
    new_keys, new_values = (rng.normal(size=(3, 2, 1, 4)).astype("float32") for _ in range(2))
    write = tf.function(
        lambda keys, values, new_keys, new_values, index: write_at(
            (keys, values), (new_keys, new_values), index, axis=2),
        input_signature=[tf.TensorSpec(keys.shape)] * 2 + [tf.TensorSpec(new_keys.shape)] * 2
        + [tf.TensorSpec([], tf.int32)])
    graph_ops = {op.type for op in write.get_concrete_function().graph.get_operations()}
    assert graph_ops <= set(dir(tf.raw_ops)), graph_ops - set(dir(tf.raw_ops))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [write.get_concrete_function()], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    runner = Interpreter(model_content=converter.convert()).get_signature_runner()
    results = runner(keys=keys, values=values, new_keys=new_keys, new_values=new_values,
                     index=np.int32(4))
    np.testing.assert_array_equal(results["output_0"], _numpy_write_at(keys, new_keys, 4, 2))
    np.testing.assert_array_equal(results["output_1"],
                                  _numpy_write_at(values, new_values, 4, 2))
