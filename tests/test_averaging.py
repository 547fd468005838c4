"""Checkpoint averaging through the `keras-s2s` command: `train --average-last N` and
`average RUN --last N` save the numpy mean of the kept epochs' weight files."""

import json

import numpy as np
import pytest

from keras_s2s import run as run_files
from keras_s2s.training.config import TrainConfig
from tests.test_cli import train_tiny
from tests.test_cli_errors import assert_one_line_error, run_main

EPOCHS = 4


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "averaged"
    assert train_tiny("bahdanau", out, extra=["--epochs", str(EPOCHS), "--average-last", "2",
                                              "--patience", "2"]) == 0
    return out


def saved_weights(run):
    return run_files.Run.open(run).model.get_weights()


def file_weights(run, epoch):
    """The weights of epoch `epoch`'s file, read into a fresh copy of the run's model."""
    model = run_files.Run.open(run).model
    model.load_weights(run / "checkpoints" / f"epoch-{epoch:04d}.weights.h5")
    return model.get_weights()


def window(run, last):
    """The `last` epochs ending at the epoch of lowest validation loss in history.json."""
    losses = json.loads((run / "history.json").read_text())["val_loss"]
    best = int(np.argmin(losses)) + 1
    return list(range(best - last + 1, best + 1))


def assert_mean_of(run, epochs):
    expected = [np.mean([file_weights(run, e)[i] for e in epochs], axis=0)
                for i in range(len(saved_weights(run)))]
    for saved, mean in zip(saved_weights(run), expected):
        np.testing.assert_allclose(saved, mean, rtol=1e-6, atol=1e-7)


def test_train_saves_the_mean_of_the_last_epochs_up_to_the_best(averaged_run):
    kept = sorted(p.name for p in (averaged_run / "checkpoints").glob("epoch-*.weights.h5"))
    assert kept == [f"epoch-{e:04d}.weights.h5" for e in range(1, EPOCHS + 1)]  # keep 2 + 2
    epochs = window(averaged_run, 2)
    assert_mean_of(averaged_run, epochs)
    # the mean differs from either epoch alone, and the best epoch's weights are still there
    assert not np.allclose(saved_weights(averaged_run)[0], file_weights(averaged_run,
                                                                         epochs[-1])[0])
    assert (averaged_run / "checkpoints" / "best.weights.h5").exists()
    report = json.loads((averaged_run / "checkpoints" / "average.json").read_text())
    assert report["epochs"] == epochs and np.isfinite(report["val_loss"])


def test_average_command_averages_again_with_another_n(averaged_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for path in averaged_run.rglob("*"):
        if path.is_file():
            (run / path.relative_to(averaged_run)).parent.mkdir(parents=True, exist_ok=True)
            (run / path.relative_to(averaged_run)).write_bytes(path.read_bytes())
    last = min(3, window(run, 1)[0])  # as many as the best epoch allows, up to 3
    epochs = window(run, last)
    status, out, err = run_main(["average", str(run), "--last", str(last)], capsys)
    assert status == 0, err
    assert out.startswith(f"averaged epochs {epochs[0]}-{epochs[-1]} of {run}: val_loss ")
    assert_mean_of(run, epochs)
    assert TrainConfig.load(run / "config.json").average_last == last
    # the averaged model still translates
    status, out, err = run_main(["translate", str(run), "a b c"], capsys)
    assert status == 0, err


def test_average_needs_the_kept_epochs(averaged_run, tmp_path, capsys):
    before = saved_weights(averaged_run)
    status, _, err = run_main(["average", str(averaged_run), "--last", str(EPOCHS + 3)],
                              capsys)
    assert status == 2
    assert_one_line_error(err, "too few epochs to average the last")
    for now, then in zip(saved_weights(averaged_run), before):  # nothing written
        np.testing.assert_array_equal(now, then)


def test_average_of_a_run_without_epoch_weights_says_how_to_keep_them(tmp_path, capsys):
    run = tmp_path / "plain"
    assert train_tiny("bahdanau", run) == 0
    status, _, err = run_main(["average", str(run), "--last", "2"], capsys)
    assert status == 2
    assert_one_line_error(err, "kept no epoch weights", "train with --average-last 2")


def test_average_last_one_is_the_best_epoch(tmp_path):
    run = tmp_path / "best"
    assert train_tiny("bahdanau", run, extra=["--epochs", "2"]) == 0
    model = run_files.Run.open(run).model
    model.load_weights(run / "checkpoints" / "best.weights.h5")
    for saved, best in zip(saved_weights(run), model.get_weights()):
        np.testing.assert_array_equal(saved, best)
    assert not list((run / "checkpoints").glob("epoch-*"))


def test_a_run_that_ends_before_n_epochs_averages_the_epochs_it_has(tmp_path, caplog):
    """A time budget or early stopping can end a run before `--average-last N` epochs: the
    run is saved with the mean of its epochs up to the best (it failed once training was done,
    leaving no model)."""
    run = tmp_path / "short"
    with caplog.at_level("WARNING", logger="keras_s2s.training.averaging"):
        assert train_tiny("bahdanau", run, extra=["--epochs", "2", "--average-last", "5"]) == 0
    epochs = window(run, 1)[0]  # the best epoch: every epoch up to it is averaged
    assert_mean_of(run, list(range(1, epochs + 1)))
    report = json.loads((run / "checkpoints" / "average.json").read_text())
    assert report["epochs"] == list(range(1, epochs + 1)) and report["asked_for"] == 5
    assert f"averaging its {epochs} epochs instead of the last 5" in caplog.text
