import keras
import numpy as np
import pytest

from keras_s2s.layers import MultiHeadAttention
from keras_s2s.layers.masking import causal_mask

B, TQ, TV, D, HEADS, KEY_DIM = 2, 4, 6, 8, 2, 3


@pytest.fixture
def tensors(rng):
    query = rng.normal(size=(B, TQ, D)).astype("float32")
    value = rng.normal(size=(B, TV, D)).astype("float32")
    padding = np.ones((B, TV), bool)
    padding[0, 4:] = False
    return query, value, padding


def twin_layers(query, value, **kwargs):
    reference = keras.layers.MultiHeadAttention(HEADS, KEY_DIM, **kwargs)
    reference(query, value)
    ours = MultiHeadAttention(HEADS, KEY_DIM, **kwargs)
    ours(query, value)
    ours.set_weights(reference.get_weights())
    return ours, reference


@pytest.mark.parametrize("use_bias", [True, False])
def test_matches_keras_with_padding_mask(tensors, use_bias):
    query, value, padding = tensors
    ours, reference = twin_layers(query, value, use_bias=use_bias)
    attention_mask = np.broadcast_to(padding[:, None, :], (B, TQ, TV))
    expected, expected_scores = reference(query, value, attention_mask=attention_mask,
                                          return_attention_scores=True)
    output, scores = ours(query, value, value_mask=padding, return_attention_scores=True)
    np.testing.assert_allclose(np.asarray(output), np.asarray(expected), atol=1e-5)
    np.testing.assert_allclose(np.asarray(scores), np.asarray(expected_scores), atol=1e-6)
    assert np.all(np.asarray(scores)[0, :, :, 4:] == 0.0)
    # The same mask given as keras' attention_mask argument.
    output = ours(query, value, attention_mask=attention_mask)
    np.testing.assert_allclose(np.asarray(output), np.asarray(expected), atol=1e-5)


@pytest.mark.parametrize("value_dim", [KEY_DIM, 5])
def test_matches_keras_with_causal_mask(tensors, value_dim):
    if value_dim != KEY_DIM and keras.backend.backend() == "jax":
        pytest.skip("the reference, keras.layers.MultiHeadAttention, fails on JAX when "
                    "value_dim != key_dim (Keras 3.15's jax.nn.dot_product_attention path)")
    query, _, _ = tensors
    ours, reference = twin_layers(query, query, value_dim=value_dim)
    expected, expected_scores = reference(query, query, use_causal_mask=True,
                                          return_attention_scores=True)
    output, scores = ours(query, query, use_causal_mask=True, return_attention_scores=True)
    np.testing.assert_allclose(np.asarray(output), np.asarray(expected), atol=1e-5)
    np.testing.assert_allclose(np.asarray(scores), np.asarray(expected_scores), atol=1e-6)


def test_causal_outputs_do_not_depend_on_later_tokens(tensors, rng):
    query, _, _ = tensors
    layer = MultiHeadAttention(HEADS, KEY_DIM)
    changed = query.copy()
    changed[:, 2:] = rng.normal(size=changed[:, 2:].shape)
    before = np.asarray(layer(query, query, use_causal_mask=True))
    after = np.asarray(layer(changed, changed, use_causal_mask=True))
    np.testing.assert_allclose(before[:, :2], after[:, :2], atol=1e-6)
    assert not np.allclose(before[:, 2:], after[:, 2:])


def test_incremental_cache_reproduces_full_causal_attention(tensors):
    query, _, _ = tensors
    layer = MultiHeadAttention(HEADS, KEY_DIM)
    full = np.asarray(layer(query, query, use_causal_mask=True))
    cache = (np.zeros((B, HEADS, TQ, KEY_DIM), "float32"),) * 2  # keys, values
    steps = []
    for t in range(TQ):
        x = query[:, t:t + 1]
        output, cache = layer(x, x, cache=cache, cache_update_index=t, use_causal_mask=True)
        steps.append(np.asarray(output))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)


def test_precomputed_cross_attention_cache(tensors):
    query, value, padding = tensors
    layer = MultiHeadAttention(HEADS, KEY_DIM)
    expected = np.asarray(layer(query, value, value_mask=padding))
    cache = layer.compute_cache(value)
    output, _ = layer(query, None, value_mask=padding, cache=cache)
    np.testing.assert_allclose(np.asarray(output), expected, atol=1e-6)


def test_causal_mask_helper_offsets_queries():
    mask = np.asarray(causal_mask(1, 5, query_offset=2))
    np.testing.assert_array_equal(mask, [[[True, True, True, False, False]]])


def test_bad_arguments_raise(tensors):
    query, value, _ = tensors
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadAttention(0, 4)
    with pytest.raises(ValueError, match="value_dim == key_dim"):
        MultiHeadAttention(2, 4, value_dim=3).compute_cache(value)
    with pytest.raises(ValueError, match="without a cache"):
        MultiHeadAttention(2, 4)(query, value, cache_update_index=0)
    stacked = np.zeros((B, 2, TV, 2, 4), "float32")  # keras-hub's layout, not this layer's
    with pytest.raises(ValueError, match=r"cache must be a \(keys, values\) pair .* got "
                                         r"1 of shape \(2, 2, 6, 2, 4\)"):
        MultiHeadAttention(2, 4)(query, value, cache=stacked, cache_update_index=0)


@pytest.mark.parametrize("masks", ["padding", "causal", "none"])
def test_output_is_the_same_whether_or_not_the_weights_are_asked_for(tensors, masks):
    """Asking for the weights does not change the output."""
    query, value, padding = tensors
    if masks == "causal":
        value = query
    layer = MultiHeadAttention(HEADS, KEY_DIM)
    arguments = {"padding": dict(value_mask=padding), "causal": dict(use_causal_mask=True),
                 "none": {}}[masks]
    with_weights, _ = layer(query, value, return_attention_scores=True, **arguments)
    np.testing.assert_allclose(np.asarray(layer(query, value, **arguments)),
                               np.asarray(with_weights), atol=1e-5)


def test_compute_attention_is_the_hook_that_runs(tensors):
    """A subclass overriding `_compute_attention` (scores × 2) equals the plain layer whose
    query projection is doubled — in training, decoding with a cache, and after a reload."""
    from tests.layers.custom_attention import SharpenedAttention

    query, value, padding = tensors
    sharpened = SharpenedAttention(HEADS, KEY_DIM)
    sharpened(query, value)
    plain = MultiHeadAttention(HEADS, KEY_DIM)
    plain(query, value)
    weights = sharpened.get_weights()
    plain.set_weights([w * 2 if index < 2 else w for index, w in enumerate(weights)])
    expected = np.asarray(plain(query, value, value_mask=padding))
    np.testing.assert_allclose(np.asarray(sharpened(query, value, value_mask=padding)),
                               expected, atol=1e-5)
    cache = sharpened.compute_cache(value)
    np.testing.assert_allclose(
        np.asarray(sharpened(query, None, value_mask=padding, cache=cache)[0]), expected,
        atol=1e-5)
    restored = keras.layers.deserialize(keras.layers.serialize(sharpened))
    restored(query, value)
    restored.set_weights(weights)
    np.testing.assert_allclose(np.asarray(restored(query, value, value_mask=padding)),
                               expected, atol=1e-5)
