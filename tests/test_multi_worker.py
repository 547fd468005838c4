"""Multi-worker training (`keras-s2s train --distribute multi-worker`), through the CLI.

Worker processes on 127.0.0.1, each with its `TF_CONFIG`, as a cluster would start them. The
reference for the loss curve is the one-process run (`model.fit`) with the same global batch.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from keras_s2s import cli
from keras_s2s.translator import Translator

#: A small Transformer on the dates task, without dropout (whose masks are drawn per replica,
#: so they could not match one process's).
TRAIN_ARGS = ["--arch", "transformer", "--data", "dates", "--num-pairs", "2000",
              "--model-arg", "num_layers=1", "--model-arg", "d_model=64",
              "--model-arg", "d_ff=128", "--model-arg", "num_heads=2",
              "--model-arg", "dropout=0.0"]
TIMEOUT = 300


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _start_workers(args, count=2, extra_args=()):
    """`count` worker processes of `keras-s2s train --distribute multi-worker args`."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(count)]
    return [subprocess.Popen(
        [sys.executable, "-m", "keras_s2s.cli", "train", "--distribute", "multi-worker",
         *args, *(extra_args[index] if extra_args else ())],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})))
        for index in range(count)]


def _finish(processes):
    """`[(returncode, stdout, stderr)]` of every process, each killed after TIMEOUT."""
    results = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        results.append((process.returncode, out, err))
    return results


def _assert_succeeded(results):
    for index, (code, out, err) in enumerate(results):
        assert code == 0, f"worker {index}: exit {code}\n{out[-2000:]}\n{err[-3000:]}"


def _history(run_dir):
    return json.loads((run_dir / "history.json").read_text())


@pytest.mark.slow
def test_two_workers_train_the_curve_of_one_process(tmp_path):
    multi, single = tmp_path / "multi", tmp_path / "single"
    args = [*TRAIN_ARGS, "--epochs", "3"]
    _assert_succeeded(_finish(_start_workers([*args, "--out", str(multi)])))
    _assert_succeeded(_finish([subprocess.Popen(
        [sys.executable, "-m", "keras_s2s.cli", "train", *args, "--out", str(single),
         "--distribute", "off"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]))

    ours, reference = _history(multi), _history(single)
    for name in ("loss", "val_loss"):
        assert len(ours[name]) == len(reference[name]) == 3
        # The same global batches and the same loss: the curves differ only by float rounding
        # (amplified by Adam, whose first steps move by ±lr whatever the gradient's size; a
        # key bias, whose gradient is zero but for rounding, moves at random). Measured:
        # within 0.4 % (epoch 1 equal to 6 digits).
        for epoch, (mine, theirs) in enumerate(zip(ours[name], reference[name])):
            assert abs(mine - theirs) <= 0.01 * theirs, (name, epoch, ours, reference)
    assert ours["loss"][-1] < 0.7 * ours["loss"][0]  # it learned

    # Only the chief wrote the run directory, and it is a run like any other.
    assert sorted(os.listdir(multi)) == sorted(os.listdir(single))
    assert not (multi / "backup").exists()  # removed once the run finished
    translator = Translator.load(str(multi))
    assert translator.translate(["March 4th, 2021"])[0]


@pytest.mark.slow
def test_a_killed_worker_restarted_resumes_from_the_last_backup(tmp_path):
    run_dir = tmp_path / "run"
    args = [*TRAIN_ARGS, "--num-pairs", "6000", "--epochs", "3", "--out", str(run_dir)]
    processes = _start_workers(args)
    backup = run_dir / "backup" / "checkpoint"
    deadline = time.monotonic() + TIMEOUT
    while not backup.exists() and time.monotonic() < deadline:
        assert all(process.poll() is None for process in processes), _finish(processes)
        time.sleep(0.2)
    assert backup.exists(), "no backup was written"
    time.sleep(1.0)  # into the second epoch
    processes[1].send_signal(signal.SIGKILL)
    (chief_code, _, chief_err), _ = _finish(processes)
    # The chief's collectives fail: it stops with one line saying what to do.
    assert chief_code == 2, chief_err[-3000:]
    message = chief_err.strip().splitlines()[-1]
    assert "a worker left the cluster" in message and "resumes from the last backup" in message
    assert not (run_dir / "model.keras").exists()
    before = _history(run_dir)
    assert len(before["loss"]) == 1

    results = _finish(_start_workers(args))  # the cluster starts again (new ports)
    _assert_succeeded(results)
    history = _history(run_dir)
    assert len(history["loss"]) == 3 and history["loss"][:1] == before["loss"]
    assert "epoch 1/3" not in results[0][1] and "epoch 2/3" in results[0][1]
    assert (run_dir / "model.keras").exists()


@pytest.mark.slow
def test_workers_with_different_vocabularies_refuse_to_train(tmp_path):
    run_dir = tmp_path / "run"
    results = _finish(_start_workers(
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


def test_multi_worker_training_refuses_float16(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": [f"127.0.0.1:{_free_ports(1)[0]}"]},
         "task": {"type": "worker", "index": 0}}))
    code = cli.main(["train", "--distribute", "multi-worker", "--mixed-precision", "on",
                     "--out", str(tmp_path / "run")])
    assert code == 2 and "pass --mixed-precision off" in capsys.readouterr().err
