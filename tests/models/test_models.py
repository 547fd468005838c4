import keras
import numpy as np
import pytest
from keras import ops

from keras_s2s.models import AttentionSeq2Seq, Seq2Seq, Transformer

from tests.models.families import FAMILIES, SOURCE_VOCAB, TARGET_VOCAB


@pytest.fixture
def batch(rng):
    source = rng.integers(1, SOURCE_VOCAB, size=(3, 7)).astype("int32")
    source[0, 4:] = 0  # padding
    target_in = rng.integers(1, TARGET_VOCAB, size=(3, 6)).astype("int32")
    return source, target_in


def decode_steps(model, source, target_in, logits):
    """Decode `target_in` step by step, checking each step's logits against the teacher-forced
    `logits`; yields each step's attention."""
    memory = model.encode(source)
    state = model.initial_state(memory, max_length=target_in.shape[1])
    for step in range(target_in.shape[1]):
        step_logits, state, attention = model.decode_step(
            ops.convert_to_tensor(target_in[:, step]), memory, state, step)
        np.testing.assert_allclose(np.asarray(step_logits), logits[:, step], atol=1e-5)
        yield attention


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_decode_step_reproduces_teacher_forced_logits(family, batch):
    model = FAMILIES[family]()
    source, target_in = batch
    logits = np.asarray(model((source, target_in)))
    assert logits.shape == (3, 6, TARGET_VOCAB)
    for attention in decode_steps(model, source, target_in, logits):
        if model.has_attention:
            attention = np.asarray(attention)
            assert attention.shape == (3, 7)
            np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)
            assert np.all(attention[0, 4:] == 0.0), "padding must get no attention"
        else:
            assert attention is None


def test_padding_of_source_does_not_change_outputs(batch):
    """Extra padding columns are invisible: the mask removes them from every family."""
    source, target_in = batch
    padded = np.pad(source, ((0, 0), (0, 3)))
    for make in FAMILIES.values():
        model = make()
        np.testing.assert_allclose(np.asarray(model((padded, target_in))),
                                   np.asarray(model((source, target_in))), atol=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_keras_file_round_trip_gives_identical_outputs(family, batch, tmp_path):
    model = FAMILIES[family]()
    source, target_in = batch
    expected = np.asarray(model((source, target_in)))
    path = tmp_path / f"{family}.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is type(model)
    assert restored.get_config() == model.get_config()
    np.testing.assert_array_equal(np.asarray(restored((source, target_in))), expected)


def test_transformer_base_configuration_is_reachable():
    model = Transformer(37000, 37000)
    assert (model.num_layers, model.d_model, model.num_heads, model.d_ff, model.dropout) == (
        6, 512, 8, 2048, 0.1)


@pytest.mark.parametrize("make, message", [
    (lambda: Seq2Seq(0, 10), "source_vocab_size must be a positive int, got 0"),
    (lambda: Seq2Seq(10, -3), "target_vocab_size must be a positive int, got -3"),
    (lambda: Seq2Seq(10, 10, cell="rnn"), "cell must be one of .*'rnn'"),
    (lambda: Seq2Seq(10, 10, dropout=1.0), "dropout"),
    (lambda: Seq2Seq(10, 10, units=15, bidirectional_encoder=True), "units must be even"),
    (lambda: AttentionSeq2Seq(10, 10, attention="additive"),
     "attention must be a keras_s2s.layers.ScoredAttention"),
    (lambda: AttentionSeq2Seq(10, 10, input_feeding=True), "needs step_order="),
    (lambda: Transformer(10, 10, attention_class="nobody>Attention"), "not a registered"),
    (lambda: Transformer(10, 10, attention_class=keras.layers.MultiHeadAttention),
     "subclass of keras_s2s.layers.MultiHeadAttention"),
    (lambda: Transformer(10, 10, d_model=30, num_heads=4),
     "d_model must be divisible by num_heads, got d_model=30 and num_heads=4"),
    (lambda: Transformer(10, 10, num_layers=0), "num_layers"),
])
def test_bad_arguments_raise_value_errors_naming_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_transformer_state_longer_than_max_length_is_refused(batch):
    model = Transformer(SOURCE_VOCAB, TARGET_VOCAB, num_layers=1, d_model=8, num_heads=2,
                        d_ff=8, max_length=4)
    with pytest.raises(ValueError, match="max_length=9 exceeds the model's max_length=4"):
        model.initial_state(model.encode(batch[0][:, :3]), max_length=9)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_max_decode_length_is_the_positional_range_or_none(family):
    model = FAMILIES[family]()
    assert model.max_decode_length == (model.max_length if isinstance(model, Transformer)
                                       else None)


def test_input_feeding_feeds_the_attentional_vector_into_the_next_step(batch):
    """Luong §3.3: h̃ₜ₋₁ joins the next input. The state carries exactly the features that
    made the step's logits, and the next logits depend on it."""
    model = FAMILIES["luong_dot_input_feeding"]()
    source, target_in = batch
    model((source, target_in))
    assert model.decoder_layers[0].cell.kernel.shape[0] == 8 + 16  # [yₜ₋₁; h̃ₜ₋₁]
    memory = model.encode(source)
    state = model.initial_state(memory, max_length=2)
    np.testing.assert_array_equal(np.asarray(state["feed"]), 0.0)
    logits, state, _ = model.decode_step(ops.convert_to_tensor(target_in[:, 0]), memory, state,
                                         0)
    np.testing.assert_allclose(np.asarray(model.output_projection(state["feed"])),
                               np.asarray(logits), atol=1e-6)
    token = ops.convert_to_tensor(target_in[:, 1])
    fed, _, _ = model.decode_step(token, memory, state, 1)
    unfed, _, _ = model.decode_step(token, memory, {**state, "feed": ops.zeros_like(
        state["feed"])}, 1)
    assert np.abs(np.asarray(fed) - np.asarray(unfed)).max() > 1e-4


def test_attention_layers_are_arguments(batch):
    """The family's attention is the layer given (ours or a user's), kept through saving."""
    source, target_in = batch
    model = FAMILIES["user_score_attend_first"]()
    model((source, target_in))
    assert type(model.attention).__name__ == "CosineAttention"
    transformer = FAMILIES["transformer_user_attention"]()
    transformer((source, target_in))
    assert {type(layer.cross_attention).__name__ for layer in transformer.decoder_layers} == {
        "SharpenedAttention"}
    assert transformer.get_config()["attention_class"] == "tests>SharpenedAttention"


def test_share_embeddings_ties_source_target_and_output_to_one_matrix(batch, tmp_path):
    """Three-way tying equals the untied model whose source and target embeddings (and so its
    tied output projection) hold the same matrix, survives `.keras`, and stays one variable."""
    source, target_in = batch
    vocab = SOURCE_VOCAB  # one vocabulary for both sides
    config = dict(num_layers=2, d_model=16, num_heads=2, d_ff=32, max_length=12,
                  normalize_first=True, tie_embeddings=True)
    shared = Transformer(vocab, vocab, share_embeddings=True, **config)
    logits = np.asarray(shared((source, target_in)))
    embeddings = [w for w in shared.weights if "embeddings" in w.path]
    assert [tuple(w.shape) for w in embeddings] == [(vocab, 16)]

    reference = Transformer(vocab, vocab, **config)
    reference((source, target_in))
    def key(weight):  # the path inside the model, the source embedding read as the target's
        return weight.path.split("/", 1)[1].replace("source_embedding", "target_embedding")

    values = {key(weight): weight.numpy() for weight in shared.weights}
    for weight in reference.weights:
        weight.assign(values[key(weight)])
    np.testing.assert_allclose(np.asarray(reference((source, target_in))), logits, atol=1e-5)

    for _ in decode_steps(shared, source, target_in, logits):
        pass

    shared.save(tmp_path / "shared.keras")
    restored = keras.models.load_model(tmp_path / "shared.keras")
    assert restored.source_embedding is restored.target_embedding
    np.testing.assert_array_equal(np.asarray(restored((source, target_in))), logits)


def test_share_embeddings_needs_one_vocabulary():
    with pytest.raises(ValueError, match="share_embeddings needs one vocabulary for source and "
                                         "target, got source_vocab_size=10 and "
                                         "target_vocab_size=12 \\(train with --shared-vocab\\)"):
        Transformer(10, 12, share_embeddings=True)


def test_transformer_weights_keep_their_saved_order():
    """Saved runs (`model.keras`, `best.weights.h5`) load their weights in creation order, so
    the source embedding is created before the target embedding, the order of every saved run
    (the other order would load the two swapped)."""
    model = Transformer(SOURCE_VOCAB, TARGET_VOCAB, num_layers=1, d_model=8, num_heads=2,
                        d_ff=8)
    model.build()
    assert [tuple(w.shape) for w in model.weights[:2]] == [(SOURCE_VOCAB, 8), (TARGET_VOCAB, 8)]
    assert "source_embedding" in model.weights[0].path
