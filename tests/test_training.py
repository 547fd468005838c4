import numpy as np
import pytest

from keras_s2s.training.objectives import (LinearDecay, MaskedAccuracy, MaskedSparseCrossentropy,
                                  TransformerSchedule)


def numpy_smoothed_loss(y_true, logits, smoothing):
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    vocab = logits.shape[-1]
    target = np.full(logits.shape, smoothing / vocab)
    np.put_along_axis(target, y_true[..., None], 1 - smoothing + smoothing / vocab, axis=-1)
    losses = -(target * log_probs).sum(-1)
    mask = y_true != 0
    return losses[mask].mean()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_masked_label_smoothed_loss_matches_numpy(rng, smoothing):
    y_true = np.array([[4, 5, 3, 0, 0], [6, 7, 8, 9, 3]])
    logits = rng.normal(size=(2, 5, 11)).astype("float32")
    loss = float(MaskedSparseCrossentropy(label_smoothing=smoothing)(y_true, logits))
    assert loss == pytest.approx(numpy_smoothed_loss(y_true, logits, smoothing), rel=1e-5)
    # Changing logits at padded positions changes nothing.
    logits[0, 3:] = 100.0
    assert float(MaskedSparseCrossentropy(label_smoothing=smoothing)(y_true, logits)) == (
        pytest.approx(loss, rel=1e-5))


def test_masked_accuracy_counts_real_tokens_only():
    y_true = np.array([[4, 5, 0, 0], [6, 7, 8, 0]])
    predicted = np.array([[4, 9, 1, 1], [6, 7, 2, 0]])
    metric = MaskedAccuracy()
    metric.update_state(y_true, np.eye(10)[predicted])
    assert float(metric.result()) == pytest.approx(3 / 5)


def test_transformer_schedule_is_the_papers_formula():
    schedule = TransformerSchedule(d_model=512, warmup_steps=4000)
    for step in (1, 100, 4000, 20000):
        expected = 512 ** -0.5 * min(step ** -0.5, step * 4000 ** -1.5)
        assert float(schedule(step - 1)) == pytest.approx(expected, rel=1e-5)


def test_transformer_schedule_peaks_at_its_peak():
    schedule = TransformerSchedule(d_model=256, warmup_steps=400, scale=0.3)
    rates = [float(schedule(step)) for step in range(2000)]
    assert max(rates) == pytest.approx(schedule.peak, rel=1e-6)
    assert int(np.argmax(rates)) == 400 - 1


def test_linear_decay_follows_whichever_budget_runs_out_first():
    """Warm-up, then linear decay to zero (Li et al., 2020): of 10 epochs × 100 steps and an
    hour, the larger fraction spent sets the rate."""
    decay = LinearDecay(0.01, warmup_steps=50, epochs=10, steps_per_epoch=100, seconds=3600)
    assert decay.rate(0, 0.0) == pytest.approx(0.01 * 1 / 50 * (1 - 0 / 1000))
    assert decay.rate(49, 0.0) == pytest.approx(0.01 * (1 - 49 / 1000))
    assert decay.rate(500, 60.0) == pytest.approx(0.01 * 0.5)  # steps ahead of the clock
    assert decay.rate(500, 2700.0) == pytest.approx(0.01 * 0.25)  # the clock ahead
    assert decay.rate(999, 3600.0) == 0.0 and decay.rate(1000, 0.0) == 0.0
    assert LinearDecay(0.01, 1, seconds=100).rate(10 ** 6, 25.0) == pytest.approx(0.0075)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="needs the budget's end"):
        LinearDecay(0.01, 10)
    with pytest.raises(ValueError, match="both epochs and steps_per_epoch"):
        LinearDecay(0.01, 10, epochs=3)
    with pytest.raises(ValueError, match="label_smoothing"):
        MaskedSparseCrossentropy(label_smoothing=1.2)
    with pytest.raises(ValueError, match="warmup_steps"):
        TransformerSchedule(512, warmup_steps=0)


@pytest.mark.parametrize("stream", [False, True])
def test_load_pairs_reads_every_file_of_a_glob(tmp_path, stream):
    from keras_s2s.training.config import TrainConfig
    from keras_s2s.data.corpus import load_pairs
    expected = {(f"s{i}", f"t{i}") for i in range(400)}
    for name, part in (("a.tsv", range(0, 200)), ("b.tsv", range(200, 400))):
        (tmp_path / name).write_text("".join(f"s{i}\tt{i}\n" for i in part))
    config = TrainConfig(data=str(tmp_path / "*.tsv"), stream=stream, validation_fraction=0.1)
    train, validation = load_pairs(config)
    if stream:
        train, validation = ([(s.decode(), t.decode()) for s, t in part.as_numpy_iterator()]
                             for part in (train, validation))
    assert set(train) | set(validation) == expected and not set(train) & set(validation)
    assert 10 < len(validation) < 80


def test_stream_refuses_a_built_in_task():
    from keras_s2s.training.config import TrainConfig
    from keras_s2s.data.corpus import load_pairs
    with pytest.raises(ValueError, match="--stream reads TSV files; 'dates' is a built-in task"):
        load_pairs(TrainConfig(data="dates", stream=True))


@pytest.mark.parametrize("arch", ["luong", "transformer"])
def test_fit_trains_embeddings_with_the_adam_of_their_dense_gradients(arch):
    """Keras 3.15's Adam squares an embedding's `IndexedSlices` gradient slice by slice (one per
    token occurrence): the second moment of a row seen k times is then wrong, and its steps up to
    √k times too long. The reference is Keras's Adam given the dense gradient of the same batch."""
    import keras
    import tensorflow as tf

    from keras_s2s import architectures
    from keras_s2s.training.config import TrainConfig
    from keras_s2s.training.objectives import compile_for_training

    config = TrainConfig(arch=arch, model={"transformer": dict(
        num_layers=1, d_model=16, num_heads=2, d_ff=32, dropout=0.0)}.get(
        arch, dict(embedding_dim=8, units=16, dropout=0.0)))
    family = architectures.get(arch)

    def built():
        keras.utils.set_random_seed(0)
        model = config.build_model(20, 20)
        model.build()
        return model

    model, reference = built(), built()
    compile_for_training(model, family.make_optimizer(model, config), jit_compile=False)
    optimizer = keras.optimizers.Adam.from_config(family.make_optimizer(reference, config)
                                                  .get_config())
    # Token 5 is seen seven times in the batch, with gradients that mostly share their sign.
    source = np.array([[5, 5, 5, 5, 6, 2], [5, 5, 5, 7, 2, 0]], "int32")
    target_in = np.array([[1, 8, 8, 9], [1, 8, 9, 0]], "int32")
    target_out = np.array([[8, 8, 9, 2], [8, 9, 2, 0]], "int32")
    initial = [v.numpy() for v in model.trainable_variables]
    for _ in range(3):
        model.train_on_batch((source, target_in), target_out)
        with tf.GradientTape() as tape:
            loss = model.loss(target_out, reference((source, target_in), training=True))
        gradients = tape.gradient(loss, reference.trainable_variables)
        optimizer.apply([tf.convert_to_tensor(g) for g in gradients],
                        reference.trainable_variables)
    # The embeddings (other weights agree too, but for a key bias: its gradient is zero but
    # for rounding, and Adam turns rounding into steps of about ±lr).
    compared = [(start, ours.numpy(), theirs.numpy()) for start, ours, theirs in zip(
        initial, model.trainable_variables, reference.trainable_variables)
        if "embedding" in ours.path]
    assert len(compared) == 2  # source and target
    for start, ours, theirs in compared:
        moved, expected = ours - start, theirs - start
        assert np.abs(moved - expected).max() <= 1e-3 * np.abs(expected).max()
