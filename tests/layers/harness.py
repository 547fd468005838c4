"""A keras-hub-style layer test (`TestCase.run_layer_test`): config JSON round trip, symbolic
call through `keras.Input` (the functional API), eager call, `fit`, mixed precision.

Backend-neutral: only `keras` and numpy, so it runs under TensorFlow and JAX alike.
"""

import json

import keras
import numpy as np
from keras import ops


def _numpy(structure):
    return keras.tree.map_structure(ops.convert_to_numpy, structure)


def _first(outputs):
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def run_layer_test(make_layer, inputs, call_kwargs=None, expected_shapes=None):
    """Check one layer made by `make_layer(**extra)` on the numpy `inputs` (a tuple).

    `expected_shapes`: the shapes of the eager outputs (a tuple of shapes for tuple outputs).
    """
    call_kwargs = call_kwargs or {}
    layer = make_layer()
    eager = _numpy(layer(*inputs, **call_kwargs))
    if expected_shapes is not None:
        shapes = keras.tree.map_structure(lambda array: array.shape, eager)
        assert shapes == expected_shapes, shapes

    # Config: through JSON, a new layer with the same config and, given the weights, the same
    # outputs.
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(layer) and restored.get_config() == layer.get_config()
    restored(*inputs, **call_kwargs)
    restored.set_weights(layer.get_weights())
    keras.tree.map_structure(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                             _numpy(restored(*inputs, **call_kwargs)), eager)

    # Symbolic: the functional API gives the eager outputs, structure and all.
    symbolic_inputs = [keras.Input(shape=array.shape[1:], batch_size=array.shape[0],
                                   dtype=str(array.dtype)) for array in inputs]
    functional = keras.Model(symbolic_inputs, layer(*symbolic_inputs, **call_kwargs))
    keras.tree.map_structure(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                             _numpy(functional(list(inputs))), eager)

    # fit: gradients reach the weights through the first output.
    if layer.trainable_weights:
        head = keras.Model(symbolic_inputs, _first(layer(*symbolic_inputs, **call_kwargs)))
        head.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        before = _numpy(layer.trainable_weights)
        target = np.zeros_like(_first(eager))
        head.fit(list(inputs), target, batch_size=inputs[0].shape[0], epochs=1, verbose=0)
        after = _numpy(layer.trainable_weights)
        assert any(not np.allclose(a, b) for a, b in zip(before, after)), "no weight moved"

    # Mixed precision: the policy reaches every sublayer, variables stay float32, outputs
    # are float16.
    mixed = make_layer(dtype="mixed_float16")
    outputs = mixed(*inputs, **call_kwargs)
    for sublayer in mixed._flatten_layers(include_self=True):
        assert sublayer.dtype_policy.name == "mixed_float16", sublayer.name
    assert all(variable.dtype == "float32" for variable in mixed.weights)
    assert ops.convert_to_numpy(_first(outputs)).dtype == np.float16
