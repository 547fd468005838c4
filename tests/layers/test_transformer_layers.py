import keras_hub
import numpy as np
import pytest

from keras_s2s.layers import TransformerDecoderLayer, TransformerEncoderLayer

B, S, T, D, HEADS, FF = 2, 6, 5, 8, 2, 16


def copy_common(ours, hub):
    ours.self_attention.set_weights(hub._self_attention_layer.get_weights())
    ours.self_attention_norm.set_weights(hub._self_attention_layer_norm.get_weights())
    ours.feed_forward.inner_dense.set_weights(hub._feedforward_intermediate_dense.get_weights())
    ours.feed_forward.output_dense.set_weights(hub._feedforward_output_dense.get_weights())
    ours.feed_forward_norm.set_weights(hub._feedforward_layer_norm.get_weights())


@pytest.fixture
def sequences(rng):
    encoder_sequence = rng.normal(size=(B, S, D)).astype("float32")
    decoder_sequence = rng.normal(size=(B, T, D)).astype("float32")
    encoder_mask = np.ones((B, S), bool)
    encoder_mask[0, 4:] = False
    decoder_mask = np.ones((B, T), bool)
    decoder_mask[1, 3:] = False
    return encoder_sequence, decoder_sequence, encoder_mask, decoder_mask


def randomize_norms(layer, rng):
    for weight in layer.weights:  # layer norms start at 1/0: make the test see them
        if "norm" in weight.path:
            weight.assign(rng.normal(size=weight.shape).astype("float32"))


@pytest.mark.parametrize("normalize_first", [False, True])
def test_encoder_layer_matches_keras_hub(sequences, normalize_first, rng):
    x, _, mask, _ = sequences
    hub = keras_hub.layers.TransformerEncoder(FF, HEADS, normalize_first=normalize_first)
    hub(x)
    randomize_norms(hub, rng)
    ours = TransformerEncoderLayer(D, HEADS, FF, normalize_first=normalize_first)
    ours(x)
    copy_common(ours, hub)
    np.testing.assert_allclose(np.asarray(ours(x, padding_mask=mask)),
                               np.asarray(hub(x, padding_mask=mask)), atol=1e-5)


def make_decoder_pair(sequences, normalize_first, rng):
    encoder_sequence, decoder_sequence, _, _ = sequences
    hub = keras_hub.layers.TransformerDecoder(FF, HEADS, normalize_first=normalize_first)
    hub(decoder_sequence, encoder_sequence)
    randomize_norms(hub, rng)
    ours = TransformerDecoderLayer(D, HEADS, FF, normalize_first=normalize_first)
    ours(decoder_sequence, encoder_sequence)
    copy_common(ours, hub)
    ours.cross_attention.set_weights(hub._cross_attention_layer.get_weights())
    ours.cross_attention_norm.set_weights(hub._cross_attention_layer_norm.get_weights())
    return ours, hub


@pytest.mark.parametrize("normalize_first", [False, True])
def test_decoder_layer_matches_keras_hub(sequences, normalize_first, rng):
    encoder_sequence, decoder_sequence, encoder_mask, decoder_mask = sequences
    ours, hub = make_decoder_pair(sequences, normalize_first, rng)
    expected = hub(decoder_sequence, encoder_sequence, decoder_padding_mask=decoder_mask,
                   encoder_padding_mask=encoder_mask)
    output, cross_weights = ours(decoder_sequence, encoder_sequence,
                                 decoder_padding_mask=decoder_mask,
                                 encoder_padding_mask=encoder_mask,
                                 return_attention_scores=True)
    np.testing.assert_allclose(np.asarray(output), np.asarray(expected), atol=1e-5)
    cross_weights = np.asarray(cross_weights)
    assert cross_weights.shape == (B, HEADS, T, S)
    assert np.all(cross_weights[0, :, :, 4:] == 0.0)


def test_decoder_is_causal(sequences, rng):
    encoder_sequence, decoder_sequence, _, _ = sequences
    layer = TransformerDecoderLayer(D, HEADS, FF)
    changed = decoder_sequence.copy()
    changed[:, 3:] = rng.normal(size=changed[:, 3:].shape)
    before = layer(decoder_sequence, encoder_sequence)
    after = layer(changed, encoder_sequence)
    np.testing.assert_allclose(np.asarray(before)[:, :3], np.asarray(after)[:, :3], atol=1e-6)


@pytest.mark.parametrize("normalize_first", [False, True])
def test_decoder_cached_steps_reproduce_full_pass(sequences, normalize_first):
    encoder_sequence, decoder_sequence, encoder_mask, _ = sequences
    layer = TransformerDecoderLayer(D, HEADS, FF, normalize_first=normalize_first)
    full = layer(decoder_sequence, encoder_sequence, encoder_padding_mask=encoder_mask)
    cross_cache = layer.compute_cross_attention_cache(encoder_sequence)
    cache = (np.zeros((B, HEADS, T, D // HEADS), "float32"),) * 2  # keys, values
    steps = []
    for t in range(T):
        output, cache = layer(
            decoder_sequence[:, t:t + 1], encoder_padding_mask=encoder_mask,
            self_attention_cache=cache, self_attention_cache_update_index=t,
            cross_attention_cache=cross_cache)
        steps.append(np.asarray(output))
    np.testing.assert_allclose(np.concatenate(steps, 1), np.asarray(full), atol=1e-5)


def test_bad_arguments_raise(sequences):
    with pytest.raises(ValueError, match="divisible"):
        TransformerEncoderLayer(10, 3, 16)
    with pytest.raises(ValueError, match="d_model=16"):
        TransformerEncoderLayer(16, 2, 32)(sequences[0])
    with pytest.raises(ValueError, match="encoder_sequence or cross_attention_cache"):
        TransformerDecoderLayer(D, HEADS, FF)(sequences[1])
