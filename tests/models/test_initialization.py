"""Fresh weights are independent draws: no kernel starts as a (rescaled) copy of another.

One unseeded Keras initializer instance returns the same values at every call, so a layer that
hands one instance to several weights starts them equal (Q = K = V in every Transformer,
W₂ = W₁ reshaped in the feed-forward network). The reference is `keras.layers.MultiHeadAttention`,
whose fresh kernels are independent.
"""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

from keras_s2s import architectures
from keras_s2s.training.config import TrainConfig
from keras_s2s.layers import MultiHeadAttention, PositionwiseFeedForward


def copies(weights):
    """Names of weight pairs whose values, flattened and standardised, are equal."""
    arrays = {}
    for weight in weights:
        values = ops.convert_to_numpy(weight).ravel().astype("float64")
        if len(np.unique(values)) > values.size // 2:  # random draws, not set patterns
            arrays[weight.path] = (values - values.mean()) / values.std()
    return [(a, b) for a, b in itertools.combinations(arrays, 2)
            if arrays[a].size == arrays[b].size and np.allclose(arrays[a], arrays[b])]


@pytest.mark.parametrize("arch", architectures.names())
def test_models_built_for_training_start_with_independent_weights(arch):
    model = TrainConfig(arch=arch, data="dates").build_model(37, 41)
    model.build()
    assert copies(model.weights) == []


def test_multi_head_attention_kernels_are_independent_like_keras():
    query = np.ones((1, 3, 8), "float32")
    reference = keras.layers.MultiHeadAttention(2, 4)
    reference(query, query)
    ours = MultiHeadAttention(2, 4, kernel_initializer=keras.initializers.GlorotUniform())
    ours(query, query)
    assert copies(reference.weights) == []
    assert copies(ours.weights) == []


def test_feed_forward_kernels_are_independent():
    layer = PositionwiseFeedForward(8, 16, kernel_initializer=keras.initializers.HeNormal())
    layer(np.ones((1, 2, 8), "float32"))
    assert copies(layer.weights) == []
