"""The Transformer's options for Marian-style checkpoints: saved, validated, and the
concatenated sinusoids against Hugging Face's documented formula."""

import keras
import numpy as np
import pytest

from keras_s2s.layers import SinusoidalPositionalEncoding
from keras_s2s.models import Transformer

MARIAN_OPTIONS = dict(activation="silu", scale_embeddings=False,
                      positional_layout="concatenated", tie_embeddings=True,
                      share_embeddings=True, tied_output_bias=True, pad_id=29, start_id=29,
                      end_id=0)


def test_concatenated_layout_is_marians_formula():
    """`MarianSinusoidalPositionalEmbedding.create_weight`: sin of the even columns' angles
    first, then cos of the odd columns' angles."""
    n_pos, dim = 12, 8
    angles = np.array([[pos / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)]
                       for pos in range(n_pos)])
    expected = np.concatenate([np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])], axis=1)
    layer = SinusoidalPositionalEncoding(n_pos, layout="concatenated")
    np.testing.assert_allclose(layer(np.zeros((1, n_pos, dim), "float32"))[0], expected,
                               atol=1e-6)


def test_options_round_trip_through_config(tmp_path):
    model = Transformer(30, 30, num_layers=1, d_model=8, num_heads=2, d_ff=16, max_length=16,
                        **MARIAN_OPTIONS)
    source = np.array([[5, 6, 0, 29]], "int32")
    target = np.array([[29, 7, 8]], "int32")
    model.build()
    model.output_bias.assign(np.arange(30, dtype="float32"))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert {name: loaded.get_config()[name] for name in MARIAN_OPTIONS} == MARIAN_OPTIONS
    np.testing.assert_allclose(loaded((source, target)), model((source, target)), atol=1e-6)


def test_start_equal_to_pad_is_attended():
    """Marian starts the decoder from its padding id: teacher forcing attends to that first
    position as step-by-step decoding does, so both give the same logits."""
    model = Transformer(30, 30, num_layers=1, d_model=8, num_heads=2, d_ff=16, max_length=16,
                        **MARIAN_OPTIONS)
    source = np.array([[5, 6, 0]], "int32")
    target = np.array([[29, 7, 8]], "int32")
    teacher_forced = np.asarray(model((source, target)))
    memory = model.encode(source)
    state = model.initial_state(memory, 4)
    for step in range(target.shape[1]):
        logits, state, _ = model.decode_step(target[:, step], memory, state, step)
        np.testing.assert_allclose(logits, teacher_forced[:, step], atol=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"activation": "tanh"}, "activation must be one of"),
    ({"positional_layout": "split"}, "positional_layout must be one of"),
    ({"scale_embeddings": 1}, "scale_embeddings must be True or False"),
    ({"tied_output_bias": True}, "tied_output_bias=True needs tie_embeddings=True"),
    ({"pad_id": -1}, "pad_id must be"),
    ({"pad_id": 3, "end_id": 3}, "end_id and pad_id must differ"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ValueError, match=message) as error:
        Transformer(30, 30, num_layers=1, d_model=8, num_heads=2, d_ff=16, **options)
    assert "\n" not in str(error.value)
