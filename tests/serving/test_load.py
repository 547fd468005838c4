"""Heavy load on loopback: requests finish in the order they were admitted, excess ones are
refused at once (503, TF Serving's error body) while the admitted ones keep the server at its
capacity, and small requests stay fast while large ones saturate the server.

The model is TF Serving's half_plus_two behind a slowed-down runtime (a fixed cost per row), so
that a few hundred kilobytes make the load of many megabytes on a real model, in seconds."""

import concurrent.futures
import contextlib
import gzip
import json
import threading
import time

import pytest

from keras_s2s.serving.config import ModelConfig
from keras_s2s.serving.models import Signature
from keras_s2s.serving.server import ModelServer
from tests.serving.conftest import http, make_options
from tests.serving.savedmodels import publish_version

ROWS = 2000  # a ~10 KB body
HEAVY = {"instances": [1.0] * ROWS}


@contextlib.contextmanager
def slowed_runtime(seconds_per_row, exclusive):
    """Every model run costs `seconds_per_row` per row; `exclusive`: one run at a time (a
    saturated CPU), else any number at once. Yields {"most_at_once": ..., "threads": [...]}:
    the most runs of more than one row seen at once, and the threads that ran them."""
    lock = threading.Lock() if exclusive else contextlib.nullcontext()
    original = Signature.run
    counting = threading.Lock()
    runs = {"now": 0, "most_at_once": 0, "threads": []}

    def run(self, inputs):
        rows = len(next(iter(inputs.values())))
        with counting:
            runs["threads"].append(threading.current_thread().name)
            runs["now"] += rows > 1
            runs["most_at_once"] = max(runs["most_at_once"], runs["now"])
        try:
            with lock:
                time.sleep(seconds_per_row * rows)
            return original(self, inputs)
        finally:
            with counting:
                runs["now"] -= rows > 1

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Signature, "run", run)
        yield runs


@pytest.fixture(scope="module")
def base_path(tmp_path_factory, built_models):
    path = tmp_path_factory.mktemp("load") / "half"
    path.mkdir()
    publish_version(built_models["half_plus_two"], str(path), 1)
    return str(path)


def timed_post(url, body):
    start = time.monotonic()
    response = http(url, "POST", "/v1/models/half:predict", body, timeout=60)
    return response, time.monotonic() - start


def test_overload_is_refused_at_once_and_admitted_requests_finish_in_order(base_path):
    options = make_options(
        [ModelConfig("half", base_path)],
        rest_api_timeout_in_ms=2000,
        rest_api_small_request_bytes=1024,
        rest_api_large_request_bytes=4096,
        rest_api_num_large_request_threads=1,
    )
    # 0.1 s a request, one at a time: about 20 fit in the 2 s deadline, not 40.
    with slowed_runtime(0.1 / ROWS, exclusive=True), ModelServer(options) as server:
        for _ in range(3):
            assert timed_post(server.url, HEAVY)[0].status == 200
        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            results = list(pool.map(lambda _: timed_post(server.url, HEAVY), range(40)))
        statuses = sorted(response.status for response, _ in results)
        done = sorted(seconds for response, seconds in results if response.status == 200)
        refused = [(response, seconds) for response, seconds in results if response.status != 200]
        assert set(statuses) <= {200, 503}, statuses
        assert len(done) >= 12, statuses  # near the capacity of 20 per deadline
        assert done[0] < 0.5 and done[-1] - done[0] > 1.0, done  # one by one, not all together
        for response, seconds in refused:
            assert seconds < 0.5, seconds
            assert "Server overloaded" in response.json["error"]
        assert timed_post(server.url, HEAVY)[0].status == 200  # and serving after the burst


def test_small_requests_stay_fast_while_medium_ones_saturate_the_server(base_path):
    options = make_options(
        [ModelConfig("half", base_path)],
        rest_api_num_threads=2,
        rest_api_num_bulk_model_runs=1,
        rest_api_small_request_bytes=1024,
        rest_api_large_request_bytes=1 << 20,
    )
    stop = threading.Event()

    def medium_client(_):
        while not stop.is_set():
            assert timed_post(server.url, HEAVY)[0].status == 200

    # 0.15 s a medium request, one run at a time, 24 clients: a queue of 3.6 s.
    with slowed_runtime(0.15 / ROWS, exclusive=False) as runs, ModelServer(options) as server:
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            clients = [pool.submit(medium_client, index) for index in range(24)]
            time.sleep(1.0)
            latencies = []
            for _ in range(5):
                for method, path, body in (
                    ("POST", "/v1/models/half:predict", {"instances": [1.0]}),
                    ("GET", "/v1/models/half", None),
                    ("GET", "/v1/models/half/metadata", None),
                ):
                    start = time.monotonic()
                    assert http(server.url, method, path, body).status == 200
                    latencies.append(time.monotonic() - start)
            stop.set()
            for client in clients:
                client.result()
    assert max(latencies) < 1.0, latencies
    # Medium requests ran their model one at a time (in TensorFlow's shared thread pools, the
    # one-instance predict's ops queue behind those of every run at once), not two (the threads).
    assert runs["most_at_once"] == 1


def test_a_gzip_body_runs_in_the_lane_of_its_inflated_size(base_path):
    options = make_options([ModelConfig("half", base_path)], rest_api_small_request_bytes=1024)
    body = gzip.compress(json.dumps(HEAVY).encode())  # about 100 bytes, 10 KB inflated
    assert len(body) < 1024
    with slowed_runtime(0, exclusive=False) as runs, ModelServer(options) as server:
        response = http(server.url, "POST", "/v1/models/half:predict", body,
                        headers={"Content-Encoding": "gzip"})
        assert response.json == {"predictions": [2.5] * ROWS}
    assert [name.rsplit("-", 1)[0] for name in runs["threads"]] == ["rest-regular"]
