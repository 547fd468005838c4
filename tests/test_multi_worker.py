"""Multi-worker training (`keras-s2s train --distribute multi-worker`) through the CLI: a worker
killed and restarted, streaming with a time budget, vocabularies checked, `TF_CONFIG` errors.
The loss curve is in test_multi_worker_curves.py."""

import signal
import time

import pytest

from keras_s2s import cli
from keras_s2s.data import synthetic
from keras_s2s.inference.translator import Translator
from tests.multi_worker_cluster import (TIMEOUT, TRAIN_ARGS, assert_succeeded, finish,
                                        run_history, start_workers)


@pytest.mark.slow
def test_a_killed_worker_restarted_resumes_from_the_last_backup(tmp_path):
    run_dir = tmp_path / "run"
    args = [*TRAIN_ARGS, "--num-pairs", "6000", "--epochs", "2", "--out", str(run_dir)]
    processes = start_workers(args)
    backup = run_dir / "backup" / "training_metadata.json"  # BackupAndRestore's, last
    deadline = time.monotonic() + TIMEOUT
    while not backup.exists() and time.monotonic() < deadline:
        assert all(process.poll() is None for process in processes), finish(processes)
        time.sleep(0.2)
    assert backup.exists(), "no backup was written"
    time.sleep(1.0)  # into the second (last) epoch
    processes[1].send_signal(signal.SIGKILL)
    (chief_code, _, chief_err), _ = finish(processes)
    # The chief's collectives fail: it stops with one line saying what to do.
    assert chief_code == 2, chief_err[-3000:]
    message = chief_err.strip().splitlines()[-1]
    assert "a worker left the cluster" in message and "resumes from the last backup" in message
    assert not (run_dir / "model.keras").exists()
    before = run_history(run_dir)
    assert len(before["loss"]) == 1

    results = finish(start_workers(args))  # the cluster starts again (new ports)
    assert_succeeded(results)
    history = run_history(run_dir)
    assert len(history["loss"]) == 2 and history["loss"][:1] == before["loss"]
    progress = results[0][1].lower()  # Keras's progress bar: "Epoch 2/2"
    assert "epoch 1/2" not in progress and "epoch 2/2" in progress
    assert f"as worker 0 of 2, into {run_dir}" in results[0][1]
    assert f"as worker 1 of 2, the chief writing {run_dir}" in results[1][1]
    assert (run_dir / "model.keras").exists()


@pytest.mark.slow
def test_two_workers_stream_a_corpus_and_stop_together_at_the_time_budget(tmp_path):
    corpus = tmp_path / "dates.tsv"
    corpus.write_text("".join(f"{source}\t{target}\n"
                              for source, target in synthetic.generate("dates", 3000, seed=1)),
                      encoding="utf-8")
    run_dir = tmp_path / "run"
    args = [*TRAIN_ARGS, "--data", str(corpus), "--stream", "--epochs", "200",
            "--time-budget", "0.1", "--out", str(run_dir)]
    # A worker that stopped alone would leave the other waiting in a collective until the
    # timeout kills it: both must stop after the same step and exit.
    results = finish(start_workers(args))
    assert_succeeded(results)
    epochs = len(run_history(run_dir)["loss"])
    assert 1 <= epochs < 200
    assert Translator.load(str(run_dir)).translate(["March 4th, 2021"])[0]


@pytest.mark.slow
def test_workers_with_different_vocabularies_refuse_to_train(tmp_path):
    run_dir = tmp_path / "run"
    results = finish(start_workers(
        [*TRAIN_ARGS, "--epochs", "1", "--out", str(run_dir)],
        extra_args=[["--vocab-size", "2000"], ["--vocab-size", "300"]]))
    for code, _, err in results:
        assert code == 2, err[-3000:]
        assert ("the vocabularies of worker(s) [1] differ from the chief's"
                in err.strip().splitlines()[-1])
    assert not (run_dir / "model.keras").exists()


@pytest.mark.parametrize("tf_config, expected", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {"worker": ["a:1"]}}', 'TF_CONFIG must hold a "cluster" and a "task"'),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
     "multi-worker training takes only \"chief\" and \"worker\" tasks"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
     "task.index must be an int in [0, 1)"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     "task.type must be one of the cluster's tasks ['worker']"),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}',
     "cluster.worker must be a list of host:port strings"),
])
def test_a_bad_cluster_description_is_one_line(tf_config, expected, tmp_path, monkeypatch,
                                               capsys):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    code = cli.main(["train", "--distribute", "multi-worker", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "run").exists()

