"""Worker processes of `keras-s2s train --distribute multi-worker` on 127.0.0.1, each with its
`TF_CONFIG`, as a cluster would start them (for tests/test_multi_worker*.py)."""

import json
import os
import socket
import subprocess
import sys

#: Small models on the dates task, without dropout (whose masks are drawn per replica, so they
#: could not match one process's): a Transformer, and an RNN family (its optimizer clips).
FAMILY_ARGS = {
    "transformer": ["--model-arg", "num_layers=1", "--model-arg", "d_model=64",
                    "--model-arg", "d_ff=128", "--model-arg", "num_heads=2"],
    "luong": ["--model-arg", "embedding_dim=32", "--model-arg", "units=64"],
}
TRAIN_ARGS = ["--arch", "transformer", "--data", "dates", "--num-pairs", "2000",
              *FAMILY_ARGS["transformer"], "--model-arg", "dropout=0.0"]
TIMEOUT = 600  # a guard against a hung cluster: a loaded 2-core machine takes 300 s


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def start_workers(args, count=2, extra_args=()):
    """`count` worker processes of `keras-s2s train --distribute multi-worker args`."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(count)]
    return [subprocess.Popen(
        [sys.executable, "-m", "keras_s2s.cli", "train", "--distribute", "multi-worker",
         *args, *(extra_args[index] if extra_args else ())],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})))
        for index in range(count)]


def finish(processes):
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


def assert_succeeded(results):
    for index, (code, out, err) in enumerate(results):
        assert code == 0, f"worker {index}: exit {code}\n{out[-2000:]}\n{err[-3000:]}"


def run_history(run_dir):
    return json.loads((run_dir / "history.json").read_text())
