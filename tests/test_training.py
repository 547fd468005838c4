import numpy as np
import pytest

from keras_s2s.training import MaskedAccuracy, MaskedSparseCrossentropy, TransformerSchedule


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


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="label_smoothing"):
        MaskedSparseCrossentropy(label_smoothing=1.2)
    with pytest.raises(ValueError, match="warmup_steps"):
        TransformerSchedule(512, warmup_steps=0)


@pytest.mark.parametrize("stream", [False, True])
def test_load_pairs_reads_every_file_of_a_glob(tmp_path, stream):
    from keras_s2s.config import TrainConfig
    from keras_s2s.training import load_pairs
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
    from keras_s2s.config import TrainConfig
    from keras_s2s.training import load_pairs
    with pytest.raises(ValueError, match="--stream reads TSV files; 'dates' is a built-in task"):
        load_pairs(TrainConfig(data="dates", stream=True))
