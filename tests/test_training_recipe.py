"""The whole recipe (`keras_s2s.training.loop.train`): resuming, distribution, run directory."""

import json
import logging
import subprocess
import sys
import textwrap

import keras
import pytest

from keras_s2s.training.config import TrainConfig
from keras_s2s.training.loop import train
from tests.test_cli_errors import run_main

TINY = dict(data="reverse", num_pairs=200, batch_size=32, vocab_size=60,
            task_options={"max_length": 5}, model={"embedding_dim": 16, "units": 32})


@pytest.mark.slow
def test_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    config = TrainConfig(arch="luong", out=str(run_dir), epochs=3, **TINY)
    finish_epoch = keras.callbacks.TensorBoard.on_epoch_end

    def crash_after_first_epoch(self, epoch, logs=None):
        finish_epoch(self, epoch, logs)
        if epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(keras.callbacks.TensorBoard, "on_epoch_end", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(config, verbose=0)
    assert (run_dir / "backup").exists() and not (run_dir / "model.keras").exists()
    monkeypatch.undo()

    first_epoch = json.loads((run_dir / "history.json").read_text())["loss"]
    assert len(first_epoch) == 1
    history = train(config, verbose=0)
    # The resumed run trains the remaining two epochs and keeps the first one's figures.
    assert len(history["loss"]) == 3 and history["loss"][:1] == first_epoch
    assert (run_dir / "model.keras").exists()
    saved = json.loads((run_dir / "history.json").read_text())
    assert saved == history and len(saved["val_loss"]) == 3


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    """Two replicas train what one device does: the loss is the batch's token mean, not the sum
    of each replica's mean (which doubled it)."""
    script = textwrap.dedent(f"""
        import dataclasses
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from keras_s2s.training.config import TrainConfig
        from keras_s2s.training.loop import _strategy, train
        config = TrainConfig(arch="transformer", out={str(tmp_path / "run")!r}, epochs=1,
                             distribute="mirrored", data="reverse", num_pairs=200,
                             batch_size=32, vocab_size=60, task_options={{"max_length": 5}},
                             model={{"num_layers": 1, "d_model": 16, "num_heads": 2,
                                     "d_ff": 32, "dropout": 0.0}})
        print("replicas", _strategy(config).num_replicas_in_sync)
        print("loss", train(config, verbose=0)["loss"][0])
        one_device = dataclasses.replace(config, out={str(tmp_path / "one")!r},
                                         distribute="off")
        print("one_device_loss", train(one_device, verbose=0)["loss"][0])
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2" in result.stdout
    assert (tmp_path / "run" / "model.keras").exists()
    losses = dict(line.split() for line in result.stdout.splitlines()
                  if line.startswith(("loss", "one_device_loss")))
    assert float(losses["loss"]) == pytest.approx(float(losses["one_device_loss"]), rel=0.05)


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="unknown architecture 'gpt'; known: seq2seq, "):
        TrainConfig(arch="gpt")
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="yes")
    with pytest.raises(ValueError, match=r"time_budget_minutes must be a number > 0.0 or None, "
                                         r"got -1"):
        TrainConfig(time_budget_minutes=-1)


@pytest.mark.parametrize("flags, warned", [
    ([], False),  # no size asked: as many subwords as the corpus holds, up to 2,000, quietly
    (["--vocab-size", "20"], False),
    (["--vocab-size", "400"], True),
])
def test_train_warns_when_the_corpus_caps_the_vocabulary_asked_for(flags, warned, tmp_path,
                                                                   capsys, caplog):
    """A corpus too small for `--vocab-size N` subwords gives a smaller vocabulary, and the log
    says so."""
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"the cat {i % 7} sat\tdie katze {i % 5} sass\n" for i in range(60)),
                    encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="keras_s2s.training.loop"):
        status, _, err = run_main(
            ["train", "--arch", "transformer", "--data", str(data), "--out", str(tmp_path / "r"),
             "--epochs", "1", *flags, "--model-arg", "num_layers=1", "--model-arg", "d_model=8",
             "--model-arg", "num_heads=1", "--model-arg", "d_ff=8"], capsys)
    assert status == 0, err
    learned = max(len((tmp_path / "r" / f"{side}_vocab.txt").read_text(encoding="utf-8")
                      .splitlines()) for side in ("source", "target"))
    shortfall = [r.getMessage() for r in caplog.records if "changes nothing" in r.getMessage()]
    assert shortfall == ([f"--vocab-size 400 was asked, but the vocabulary learned from the "
                          f"training pairs has {learned} tokens: they hold no more frequent "
                          f"subwords, so a larger --vocab-size changes nothing."] if warned else [])
