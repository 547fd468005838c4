import keras
import numpy as np
import pytest

from keras_s2s.layers import BahdanauAttention, LuongAttention, ScaledDotProductAttention
from tests.layers.numpy_reference import attend, bahdanau_scores

B, TQ, TV, DQ, DV = 2, 3, 5, 6, 6


@pytest.fixture
def inputs(rng):
    query = rng.normal(size=(B, TQ, DQ)).astype("float32")
    value = rng.normal(size=(B, TV, DV)).astype("float32")
    mask = np.array([[True, True, True, False, False], [True] * TV])
    return query, value, mask


def run(layer, query, value, mask, **kwargs):
    context, weights = layer(query, value, value_mask=mask, return_attention_scores=True,
                             **kwargs)
    return np.asarray(context), np.asarray(weights)


def test_bahdanau_matches_equation(inputs):
    query, value, mask = inputs
    layer = BahdanauAttention(units=4)
    context, weights = run(layer, query, value, mask)
    w1, w2, v = (np.asarray(w) for w in (layer.query_dense.kernel, layer.key_dense.kernel,
                                         layer.score_dense.kernel))
    expected_context, expected_weights = attend(
        bahdanau_scores(query, value, w1, w2, v), value, mask[:, None, :])
    np.testing.assert_allclose(weights, expected_weights, atol=1e-5)
    np.testing.assert_allclose(context, expected_context, atol=1e-5)


@pytest.mark.parametrize("score", ["dot", "general", "concat"])
@pytest.mark.parametrize("scale", [False, True])
def test_luong_matches_equation(inputs, score, scale):
    query, value, mask = inputs
    layer = LuongAttention(score=score, scale=scale)
    layer.build(query.shape, value.shape)
    if scale:
        layer.scale_weight.assign(1.7)
    context, weights = run(layer, query, value, mask)
    if score == "dot":
        scores = query @ value.transpose(0, 2, 1)
    elif score == "general":
        w = np.asarray(layer.key_dense.kernel)  # h_s W maps keys into the query space
        scores = query @ (value @ w).transpose(0, 2, 1)
    else:
        scores = bahdanau_scores(query, value, np.asarray(layer.query_dense.kernel),
                                 np.asarray(layer.key_dense.kernel),
                                 np.asarray(layer.score_dense.kernel))
    if scale:
        scores = scores * 1.7
    expected_context, expected_weights = attend(scores, value, mask[:, None, :])
    np.testing.assert_allclose(weights, expected_weights, atol=1e-5)
    np.testing.assert_allclose(context, expected_context, atol=1e-5)


def test_luong_dot_equals_keras_attention(inputs):
    query, value, mask = inputs
    ours = np.asarray(LuongAttention("dot")(query, value, value_mask=mask))
    reference = np.asarray(keras.layers.Attention()([query, value], mask=[None, mask]))
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_scaled_dot_product_matches_equation(inputs, rng):
    query, value, mask = inputs
    key = rng.normal(size=(B, TV, DQ)).astype("float32")
    context, weights = ScaledDotProductAttention()(
        query, value, key=key, value_mask=mask, return_attention_scores=True)
    scores = query @ key.transpose(0, 2, 1) / np.sqrt(DQ)
    expected_context, expected_weights = attend(scores, value, mask[:, None, :])
    np.testing.assert_allclose(np.asarray(weights), expected_weights, atol=1e-5)
    np.testing.assert_allclose(np.asarray(context), expected_context, atol=1e-5)


@pytest.mark.parametrize("make_layer", [
    lambda: BahdanauAttention(8), lambda: LuongAttention("general"),
    lambda: ScaledDotProductAttention()])
def test_single_step_query_and_mask_contract(inputs, make_layer):
    query, value, mask = inputs
    layer = make_layer()
    context, weights = run(layer, query[:, 0], value, mask)
    assert context.shape == (B, DV) and weights.shape == (B, TV)
    assert np.all(weights[0, 3:] == 0.0), "masked positions must get exactly zero weight"
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    full_context, _ = run(layer, query, value, mask)
    np.testing.assert_allclose(context, full_context[:, 0], atol=1e-6)


def test_causal_mask_hides_the_future(rng):
    x = rng.normal(size=(1, 4, DQ)).astype("float32")
    _, weights = ScaledDotProductAttention()(x, x, use_causal_mask=True,
                                             return_attention_scores=True)
    assert np.all(np.triu(np.asarray(weights)[0], k=1) == 0.0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="units"):
        BahdanauAttention(0)
    with pytest.raises(ValueError, match="'cosine'"):
        LuongAttention("cosine")
    with pytest.raises(ValueError, match="same size"):
        LuongAttention("dot")(np.ones((1, 4), "float32"), np.ones((1, 3, 5), "float32"))
    with pytest.raises(ValueError, match="dropout"):
        ScaledDotProductAttention(dropout=1.5)
