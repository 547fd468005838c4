"""The standalone server program: flags, startup, SIGTERM, startup failures."""

import os
import pathlib
import queue
import re
import signal
import socket
import subprocess
import sys
import threading

import pytest

from keras_s2s.serving import Client
from keras_s2s.serving.config import ModelConfig
from keras_s2s.serving.server import ModelServer, main
from tests.serving.conftest import make_options
from tests.serving.savedmodels import publish_version

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]


def test_main_serves_until_sigterm(tmp_path, built_models):
    publish_version(built_models["half_plus_two"], str(tmp_path), 1)
    command = [
        sys.executable,
        "-m",
        "keras_s2s.serving.server",
        "--model_name=hpt",
        f"--model_base_path={tmp_path}",
        "--rest_api_port=0",
        "--port=0",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(command, cwd=REPOSITORY, env=env, stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stderr], daemon=True
    ).start()
    try:
        port = None
        while port is None:
            match = re.search(
                r"Exporting HTTP/REST API at:127\.0\.0\.1:(\d+)", lines.get(timeout=60)
            )
            port = match and int(match.group(1))
        assert Client(f"http://127.0.0.1:{port}", "hpt").predict(instances=[1.0, 2.0, 5.0]) == [
            2.5,
            3.0,
            4.5,
        ]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_serve_prints_one_line_per_api_when_ready(tmp_path, built_models):
    """`keras-s2s serve`: no TensorFlow start-up logs, one line per API once both answer."""
    publish_version(built_models["half_plus_two"], str(tmp_path), 1)
    command = [sys.executable, "-m", "keras_s2s.cli", "serve", "--model_name=hpt",
               f"--model_base_path={tmp_path}", "--rest_api_port=0", "--port=0"]
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    process = subprocess.Popen(command, cwd=REPOSITORY, env=env, stderr=subprocess.PIPE,
                               text=True)
    try:
        first, second = process.stderr.readline(), process.stderr.readline()
        grpc_line = re.fullmatch(r"Running gRPC ModelServer at 127\.0\.0\.1:(\d+) \.\.\.\n", first)
        assert grpc_line, first
        match = re.fullmatch(r"Exporting HTTP/REST API at:127\.0\.0\.1:(\d+) \.\.\.\n", second)
        assert match, second
        client = Client(f"http://127.0.0.1:{match.group(1)}", "hpt")
        assert client.predict(instances=[1.0]) == [2.5]
        assert Client(f"grpc://127.0.0.1:{grpc_line.group(1)}", "hpt").predict([1.0]) == [2.5]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_main_reports_bad_flags():
    assert main(["--rest_api_port=0"]) == 1  # neither --model_base_path nor --model_config_file


def test_port_in_use_fails_start_and_stops_polling(tmp_path, built_models):
    publish_version(built_models["half_plus_two"], str(tmp_path), 1)
    threads_before = set(threading.enumerate())
    with socket.create_server(("127.0.0.1", 0)) as taken:
        server = ModelServer(
            make_options([ModelConfig("m", str(tmp_path))], rest_api_port=taken.getsockname()[1])
        )
        with pytest.raises(OSError):
            server.start()
    assert [
        thread.name for thread in set(threading.enumerate()) - threads_before if thread.is_alive()
    ] == []
