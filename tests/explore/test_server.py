"""The explorer's HTTP server under hostile and concurrent clients: bursts of connections, idle
and stalled ones, methods and paths it does not serve, all answered in JSON, and translations
that never hold up other connections."""

import concurrent.futures
import http.client
import json
import socket
import threading
import time

import pytest

from keras_s2s.explore.server import MAX_BODY_BYTES, make_server
from tests.explore.conftest import post

#: The quick server's idle and body timeouts, in seconds.
TIMEOUT = 1.0


class StubExplorer:
    """Answers at once, or once `gate` is set: the server is under test here, not translation."""

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()

    def runs_json(self):
        return {"runs": []}

    def translate_json(self, request):
        if not self.gate.wait(30):
            raise RuntimeError("the gate stayed closed")
        if request.get("text") == "bad":
            raise ValueError("text is bad\nand this second line is not shown")
        return {"text": request["text"]}


@pytest.fixture(scope="module")
def stub():
    return StubExplorer()


@pytest.fixture(scope="module")
def quick_server(stub):
    with make_server(stub, port=0, idle_timeout=TIMEOUT, body_timeout=TIMEOUT,
                     max_waiting=2) as server:
        yield server


def exchange(port, data, timeout=10):
    """Send raw `data`, read until the server closes → (status or None, JSON body or None)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    if not reply:
        return None, None
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), reply
    return int(head.split()[1]), json.loads(body)


def request(url, method, path, body=None, headers=None):
    """One request with http.client → (status, Content-Type, JSON body)."""
    host, port = url.split("/")[2].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers["Content-Type"], json.loads(response.read())
    finally:
        connection.close()


def test_fifty_concurrent_translate_requests_are_all_answered():
    start = threading.Barrier(50)

    def translate(text):
        start.wait()  # all connect at once
        return post(server.url, {"text": text})

    with make_server(StubExplorer(), port=0) as server:
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(translate, map(str, range(50))))
    assert answers == [(200, {"text": str(number)}) for number in range(50)]


def test_idle_connections_and_slow_headers_are_closed_without_threads(quick_server):
    threads = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", quick_server.port)) for _ in range(100)]
    slow = socket.create_connection(("127.0.0.1", quick_server.port))
    started = time.monotonic()
    for piece in (b"GET / HTTP/1.1\r\n", b"Host: a\r\n"):  # headers never finished
        slow.sendall(piece)
        time.sleep(TIMEOUT / 3)
    assert threading.active_count() == threads  # no thread per connection
    assert request(quick_server.url, "GET", "/api/runs")[0] == 200  # still answering
    for sock in [*idle, slow]:
        sock.settimeout(10)
        assert sock.recv(100) == b""  # closed by the server
        sock.close()
    assert time.monotonic() - started < TIMEOUT + 5


def test_a_stalled_body_gets_408(quick_server):
    started = time.monotonic()
    status, answer = exchange(quick_server.port, b"POST /api/translate HTTP/1.1\r\nHost: a\r\n"
                                                 b"Content-Length: 100\r\n\r\n{\"text\"")
    assert status == 408 and "did not arrive within 1 seconds" in answer["error"]
    assert time.monotonic() - started < TIMEOUT + 5


@pytest.mark.parametrize("method, path, status, fragment", [
    ("PUT", "/api/translate", 405, "POST a JSON object"),
    ("GET", "/api/translate", 405, "POST a JSON object"),
    ("DELETE", "/", 405, "/ answers GET and HEAD, not DELETE"),
    ("POST", "/api/runs", 405, "answers GET and HEAD"),
    ("POST", "/static/app.js", 405, "answers GET and HEAD"),
    ("OPTIONS", "/nothing", 404, "no page at /nothing"),
    ("POST", "/nothing", 404, "no page at /nothing"),
    ("GET", "/static/../server.py", 404, "no page at"),
])
def test_every_method_and_path_gets_a_json_answer(quick_server, method, path, status, fragment):
    answer_status, content_type, answer = request(quick_server.url, method, path)
    assert (answer_status, content_type) == (status, "application/json; charset=utf-8")
    assert list(answer) == ["error"] and fragment in answer["error"]


@pytest.mark.parametrize("data, status, fragment", [
    (b"GARBAGE\r\n\r\n", 400, "Bad Request"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"x" * 10_000 + b"\r\n\r\n", 400, "Bad Request"),
    (b"POST /api/translate HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
     % (MAX_BODY_BYTES + 1), 413, "at most 1,048,576 bytes"),
    (b"POST /api/translate HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"100000\r\n" + b" " * 0x100000 + b"\r\n1\r\n \r\n0\r\n\r\n", 413, "at most"),
    (b"POST /api/translate HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close"
     b"\r\n\r\n{bad}", 400, "not JSON"),
])
def test_malformed_and_oversized_requests_get_json_errors(quick_server, data, status, fragment):
    answer_status, answer = exchange(quick_server.port, data)
    assert answer_status == status and fragment in answer["error"]
    assert "\n" not in answer["error"]


def test_translations_run_off_the_event_loop_and_their_queue_is_bounded(quick_server, stub):
    body = {"text": "a"}
    stub.gate.clear()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        try:
            waiting = [pool.submit(post, quick_server.url, body) for _ in range(2)]
            deadline = time.monotonic() + 10
            while quick_server.waiting < 2 and time.monotonic() < deadline:
                time.sleep(0.05)  # until both wait for the translating thread, held at the gate
            started = time.monotonic()
            assert request(quick_server.url, "GET", "/api/runs")[0] == 200
            assert time.monotonic() - started < 1.0
            status, answer = post(quick_server.url, body)
            assert status == 503 and "2 translations are waiting" in answer["error"]
        finally:
            stub.gate.set()
        assert [future.result() for future in waiting] == [(200, body)] * 2
    assert post(quick_server.url, {"text": "bad"}) == (400, {"error": "text is bad"})
