"""The server against hostile and heavy clients, on loopback, every wait bounded.

Idle, slow and short-bodied connections; connection limits; HTTP-level errors as JSON; large
requests beside small ones; deadlines that stop work; batching of mixed shapes; a corrupt version
beside healthy models; TF1 SavedModels with reference variables; no internals in error bodies.
"""

import concurrent.futures
import gzip
import json
import logging
import os
import resource
import time

import pytest

from keras_s2s.serving.config import BatchingParameters, ModelConfig
from keras_s2s.serving.server import ModelServer, RepeatedLogFilter
from tests.serving.conftest import http, make_options, wait_until
from tests.serving.netutil import (
    closed_within,
    connect,
    error_of,
    post_bytes,
    raw_request,
    read_response,
)
from tests.serving.savedmodels import (
    publish_broken_version,
    publish_version,
    save_tf1_counter_model,
)

HEADER_S, BODY_S, KEEPALIVE_S = 1.0, 1.0, 1.5
PREDICT = "/v1/models/half:predict"


@pytest.fixture(scope="module")
def model_root(tmp_path_factory, built_models):
    root = tmp_path_factory.mktemp("hardening")
    for name, source in (("half", "half_plus_two"), ("strings", "strings")):
        os.makedirs(root / name)
        publish_version(built_models[source], str(root / name), 1)
    return root


@pytest.fixture(scope="module")
def hardened(model_root):
    """A server with short client timeouts and few connections."""
    options = make_options(
        [
            ModelConfig("half", str(model_root / "half")),
            ModelConfig("strings", str(model_root / "strings")),
        ],
        rest_api_header_timeout_in_ms=int(HEADER_S * 1000),
        rest_api_body_timeout_in_ms=int(BODY_S * 1000),
        rest_api_keepalive_timeout_in_ms=int(KEEPALIVE_S * 1000),
        rest_api_max_connections=24,
        rest_api_num_large_request_threads=1,
    )
    with ModelServer(options) as server:
        yield server


def healthy(server):
    response = http(server.url, "POST", PREDICT, {"instances": [1.0, 2.0]}, timeout=10)
    assert (response.status, response.json) == (200, {"predictions": [2.5, 3.0]}), response.text


# Idle and slow clients.


def test_idle_connections_are_closed_after_the_header_timeout(hardened):
    sockets = [connect(hardened.port) for _ in range(10)]
    try:
        for sock in sockets:
            elapsed = closed_within(sock, HEADER_S + 3)
            assert elapsed is not None and elapsed < HEADER_S + 3
    finally:
        for sock in sockets:
            sock.close()
    healthy(hardened)


def test_headers_sent_byte_by_byte_are_cut_off(hardened):
    with connect(hardened.port) as sock:
        sock.sendall(b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        closed = False
        for _ in range(int((HEADER_S + 3) / 0.2)):  # one header byte every 0.2 s: never finishes
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_within(sock, 0.2) is not None:
                closed = True
                break
        assert closed and time.monotonic() - start < HEADER_S + 3
    healthy(hardened)


def test_idle_keep_alive_connections_are_closed(hardened):
    with connect(hardened.port) as sock:
        sock.sendall(post_bytes(hardened.port, PREDICT, b'{"instances": [1.0]}'))
        status, _, body = read_response(sock)
        assert (status, json.loads(body)) == (200, {"predictions": [2.5]})
        elapsed = closed_within(sock, KEEPALIVE_S + 3)
        assert elapsed is not None and elapsed >= KEEPALIVE_S * 0.8


def test_a_body_shorter_than_its_content_length_gets_408_quickly(hardened):
    with connect(hardened.port) as sock:
        start = time.monotonic()
        sock.sendall(
            post_bytes(hardened.port, PREDICT, b'{"instances"', headers=[("Content-Length", "100")])
        )
        error = error_of(read_response(sock))
        assert "--rest_api_body_timeout_in_ms" in error
        assert time.monotonic() - start < BODY_S + 3  # not the 30 s request deadline
    healthy(hardened)


def test_expect_100_continue(hardened):
    with connect(hardened.port) as sock:  # oversized: 413 at once, no "100 Continue"
        sock.sendall(
            b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        first = sock.recv(12)
        assert first == b"HTTP/1.1 413"
    with connect(hardened.port) as sock:  # acceptable: 100 Continue, then the answer
        body = b'{"instances": [1.0]}'
        sock.sendall(
            post_bytes(
                hardened.port,
                PREDICT,
                b"",
                headers=[("Content-Length", str(len(body))), ("Expect", "100-continue")],
            )
        )
        assert sock.recv(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, text = read_response(sock)
        assert (status, json.loads(text)) == (200, {"predictions": [2.5]})


def test_connections_past_the_limit(hardened):
    """Idle connections make room for new ones; busy ones (mid-body) cannot: a new one gets 503."""
    idle = [connect(hardened.port) for _ in range(30)]
    try:
        healthy(hardened)  # 30 idle + this one > 24: the longest-idle ones were closed
        assert sum(closed_within(sock, 0.05) is not None for sock in idle) >= 6
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    busy = []
    try:
        for _ in range(24):
            sock = connect(hardened.port)
            sock.sendall(
                post_bytes(hardened.port, PREDICT, b"{", headers=[("Content-Length", "50")])
            )
            busy.append(sock)
        time.sleep(0.3)
        status, headers, body = raw_request(
            hardened.port, post_bytes(hardened.port, PREDICT, b"{}")
        )
        assert status == 503 and "--rest_api_max_connections" in json.loads(body)["error"]
    finally:
        for sock in busy:
            sock.close()
    wait_until(
        lambda: http(hardened.url, "GET", "/v1/models/half").status == 200, timeout=BODY_S + 5
    )
    healthy(hardened)


# HTTP-level errors are TF Serving's JSON too.


@pytest.mark.parametrize(
    "data, status",
    [
        (
            b"GET /v1/models/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
        ),  # URL over 8,190 bytes
        (
            b"GET /v1/models/half HTTP/1.1\r\n"
            + b"".join(b"X-%d: y\r\n" % i for i in range(150))
            + b"\r\n",
            400,
        ),
        (b"G@T /v1/models/half HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # bad method token
        (
            b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: rot13\r\n\r\n",
            400,
        ),
        (b"GET /v1/models/half HTTP/1.1\r\nHost: x\r\nX-Long: " + b"y" * 9000 + b"\r\n\r\n", 400),
        (
            b"POST /v1/models/half:predict HTTP/1.1\r\n"
            b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n{}",
            400,
        ),
    ],
)
def test_http_level_errors_are_json(hardened, data, status):
    assert raw_request(hardened.port, data)[0] == status
    error_of(raw_request(hardened.port, data))
    healthy(hardened)


def test_content_encodings(hardened):
    body = b'{"instances": [1.0, 2.0]}'
    ok = raw_request(
        hardened.port,
        post_bytes(hardened.port, PREDICT, gzip.compress(body), [("Content-Encoding", "gzip")]),
    )
    assert ok[0] == 200 and json.loads(ok[2]) == {"predictions": [2.5, 3.0]}
    not_gzip = post_bytes(hardened.port, PREDICT, body, [("Content-Encoding", "gzip")])
    assert "not" in error_of(raw_request(hardened.port, not_gzip))
    truncated = post_bytes(
        hardened.port, PREDICT, gzip.compress(body)[:-9], [("Content-Encoding", "gzip")]
    )
    error_of(raw_request(hardened.port, truncated))
    bomb = post_bytes(
        hardened.port, PREDICT, gzip.compress(b" " * (80 << 20)), [("Content-Encoding", "gzip")]
    )
    assert raw_request(hardened.port, bomb)[0] == 413  # inflates past --rest_api_max_body_bytes
    brotli = post_bytes(hardened.port, PREDICT, body, [("Content-Encoding", "br")])
    assert raw_request(hardened.port, brotli)[0] == 415
    healthy(hardened)


# Large requests.


def _big_body(rows):
    return ('{"instances": [' + ", ".join(["1.5"] * rows) + "]}").encode()


def test_large_requests_leave_small_ones_responsive(hardened):
    body = _big_body(250_000)
    expected_head = '{"predictions": [2.75, 2.75'
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        big = [pool.submit(http, hardened.url, "POST", PREDICT, body, None, 60) for _ in range(6)]
        latencies = []
        while not all(future.done() for future in big) and len(latencies) < 60:
            for method, path, payload in (
                ("GET", "/v1/models/half", None),
                ("GET", "/v1/models/half/metadata", None),
                ("POST", PREDICT, {"instances": [1.0]}),
            ):
                start = time.monotonic()
                assert http(hardened.url, method, path, payload, timeout=10).status == 200
                latencies.append(time.monotonic() - start)
            time.sleep(0.05)
        for future in big:
            response = future.result(timeout=60)
            assert response.status == 200 and response.text.startswith(expected_head)
    assert latencies and max(latencies) < 1.0, latencies


def test_requests_past_their_deadline_stop_using_cpu(model_root):
    options = make_options(
        [ModelConfig("half", str(model_root / "half"))],
        rest_api_timeout_in_ms=300,
        rest_api_num_large_request_threads=1,
    )
    with ModelServer(options) as server:
        body = _big_body(300_000)
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            statuses = [
                f.result(timeout=60).status
                for f in [pool.submit(http, server.url, "POST", PREDICT, body) for _ in range(6)]
            ]
        assert 504 in statuses, statuses
        time.sleep(1.0)  # the request running when its deadline passed finishes its current stage
        before = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(1.0)
        after = resource.getrusage(resource.RUSAGE_SELF)
        busy = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        assert busy < 0.3, f"{busy:.2f} CPU-seconds in an idle second: late requests kept running"
        healthy(server)


# Batching of requests with different shapes.


def test_batching_mixed_shapes_fails_no_client(model_root):
    options = make_options(
        [ModelConfig("half", str(model_root / "half"))],
        batching=BatchingParameters(
            max_batch_size=32, batch_timeout_micros=20_000, num_batch_threads=2
        ),
    )
    with ModelServer(options) as server:

        def client(index):
            width = 2 if index % 4 == 0 else 1  # every 4th request has another shape
            body = {"signature_name": "row_sums", "instances": [[1.0] * width]}
            response = http(server.url, "POST", PREDICT, body, timeout=30)
            return response.status, response.json, width

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(client, range(200)))
    for status, body, width in results:
        assert status == 200 and body == {"predictions": [float(width)]}, (status, body)


# A corrupt version beside healthy models.


def test_a_corrupt_version_delays_no_other_model(tmp_path, built_models):
    for name in ("a", "b"):
        os.makedirs(tmp_path / name)
        publish_version(built_models["half_plus_one"], str(tmp_path / name), 1)
    options = make_options(
        [ModelConfig("a", str(tmp_path / "a")), ModelConfig("b", str(tmp_path / "b"))],
        max_num_load_retries=5,
        load_retry_interval_micros=60_000_000,  # TF Serving's default: 5 x 60 s blocked polling
    )
    with ModelServer(options) as server:
        publish_broken_version(str(tmp_path / "a"), 2)

        def failed_status():
            entries = http(server.url, "GET", "/v1/models/a").json["model_version_status"]
            return next(
                (e for e in entries if e["version"] == "2" and e["status"]["error_code"] != "OK"),
                None,
            )

        entry = wait_until(failed_status, timeout=10)
        assert entry["state"] == "END"
        assert str(tmp_path) not in entry["status"]["error_message"]  # no server paths
        publish_version(built_models["half_plus_two"], str(tmp_path / "b"), 2)
        wait_until(
            lambda: http(server.url, "POST", "/v1/models/b:predict", {"instances": [1.0]}).json
            == {"predictions": [2.5]},
            timeout=10,
        )
        assert http(server.url, "POST", "/v1/models/a:predict", {"instances": [1.0]}).json == {
            "predictions": [1.5]
        }
        assert (
            http(server.url, "POST", "/v1/models/a/versions/2:predict", {"instances": [1.0]}).status
            == 404
        )


# TF1 SavedModels.


def test_tf1_saved_model_with_reference_variables(tmp_path):
    save_tf1_counter_model(str(tmp_path / "counter" / "1"))
    with ModelServer(make_options([ModelConfig("counter", str(tmp_path / "counter"))])) as server:
        url = "/v1/models/counter:predict"
        assert http(server.url, "POST", url, {"instances": [1.0, 2.0]}).json == {
            "predictions": [2.5, 3.0]
        }
        for delta, total in ((1.0, 1.0), (2.0, 3.0)):
            body = {"signature_name": "incr_counter_by", "inputs": {"delta": delta}}
            response = http(server.url, "POST", url, body)
            assert response.json == {"outputs": total}, response.text
        metadata = http(server.url, "GET", "/v1/models/counter/metadata").json
        assert set(metadata["metadata"]["signature_def"]["signature_def"]) >= {
            "serving_default",
            "incr_counter_by",
        }


# Error bodies say nothing of the server's internals.


def test_op_errors_carry_no_stack_or_paths(hardened):
    body = {"signature_name": "pair", "inputs": {"a": ["x", "y", "z"], "b": ["1", "2"]}}
    response = http(hardened.url, "POST", "/v1/models/strings:predict", body)
    assert response.status == 400, response.text
    error = response.json["error"]
    for leak in ('File "', "most recent call", "keras_s2s", os.sep + "tmp", "site-packages"):
        assert leak not in error, error
    healthy(hardened)


def test_repeated_log_lines_are_rate_limited():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("tests.serving.flood")
    log.addHandler(handler)
    log.addFilter(RepeatedLogFilter(burst=3, interval=0.5))
    log.propagate = False
    try:
        for index in range(1000):
            log.error("Refused a malformed HTTP request from %s", index)
        time.sleep(0.6)
        log.error("Refused a malformed HTTP request from %s", "later")
    finally:
        log.removeHandler(handler)
    assert len(records) == 4
    assert records[-1].getMessage().endswith("later (997 similar messages dropped)")
