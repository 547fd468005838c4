import keras
import numpy as np
import pytest

from keras_s2s import layers

QUERY = np.random.default_rng(0).normal(size=(2, 3, 8)).astype("float32")
VALUE = np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32")

CASES = {
    "bahdanau": (lambda: layers.BahdanauAttention(4, dropout=0.1), (QUERY, VALUE)),
    "luong": (lambda: layers.LuongAttention("concat", scale=True, units=5), (QUERY, VALUE)),
    "scaled_dot_product": (lambda: layers.ScaledDotProductAttention(), (QUERY, VALUE)),
    "multi_head": (lambda: layers.MultiHeadAttention(2, 4, value_dim=3, output_dim=6),
                   (QUERY, VALUE)),
    "positional_encoding": (lambda: layers.SinusoidalPositionalEncoding(16), (QUERY,)),
    "feed_forward": (lambda: layers.PositionwiseFeedForward(8, 16, activation="gelu"),
                     (QUERY,)),
    "encoder_layer": (lambda: layers.TransformerEncoderLayer(8, 2, 16, normalize_first=True),
                      (QUERY,)),
    "decoder_layer": (lambda: layers.TransformerDecoderLayer(8, 2, 16, dropout=0.1),
                      (QUERY, VALUE)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_round_trips_through_keras_serialization(name):
    make_layer, inputs = CASES[name]
    layer = make_layer()
    expected = keras.tree.map_structure(np.asarray, layer(*inputs))
    config = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()
    restored(*inputs)
    restored.set_weights(layer.get_weights())
    keras.tree.map_structure(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), b, atol=1e-6),
        restored(*inputs), expected)
