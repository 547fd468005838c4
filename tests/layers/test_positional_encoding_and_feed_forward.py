import numpy as np
import pytest

from keras_s2s.layers import PositionwiseFeedForward, SinusoidalPositionalEncoding
from tests.layers.numpy_reference import positional_encoding


def test_positional_encoding_is_the_papers_formula():
    inputs = np.zeros((2, 7, 10), "float32")
    encoding = np.asarray(SinusoidalPositionalEncoding(max_length=32)(inputs))
    assert encoding.shape == (2, 7, 10)
    np.testing.assert_allclose(encoding[1], positional_encoding(7, 10), atol=1e-5)


def test_positional_encoding_start_offset_for_step_by_step_decoding():
    layer = SinusoidalPositionalEncoding(max_length=32)
    full = np.asarray(layer(np.zeros((1, 9, 6), "float32")))
    step = np.asarray(layer(np.zeros((1, 1, 6), "float32"), start_index=5))
    np.testing.assert_allclose(step[0, 0], full[0, 5], atol=1e-6)
    np.testing.assert_allclose(step[0, 0], positional_encoding(1, 6, start=5)[0], atol=1e-5)


def test_positional_encoding_errors():
    with pytest.raises(ValueError, match="max_length"):
        SinusoidalPositionalEncoding(max_length=0)
    with pytest.raises(ValueError, match="exceed max_length=4"):
        SinusoidalPositionalEncoding(max_length=4)(np.zeros((1, 5, 6), "float32"))
    with pytest.raises(ValueError, match="even"):
        SinusoidalPositionalEncoding(max_length=4)(np.zeros((1, 2, 5), "float32"))


def test_feed_forward_matches_numpy(rng):
    x = rng.normal(size=(2, 3, 4)).astype("float32")
    layer = PositionwiseFeedForward(d_model=4, d_ff=16)
    output = np.asarray(layer(x))
    w1, b1, w2, b2 = (np.asarray(w) for w in layer.weights)
    expected = np.maximum(x @ w1 + b1, 0) @ w2 + b2  # FFN(x) = max(0, xW1 + b1)W2 + b2
    np.testing.assert_allclose(output, expected, atol=1e-5)
    with pytest.raises(ValueError, match="d_ff"):
        PositionwiseFeedForward(4, -1)
