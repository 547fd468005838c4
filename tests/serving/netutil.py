"""Raw HTTP on loopback for the hardening tests: requests urllib cannot send, and clients that
misbehave (idle, slow, short bodies). Every socket has a timeout, so no test can hang."""

import http.client
import json
import socket
import time


def connect(port, timeout=10.0):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def raw_request(port, data, timeout=10.0):
    """Sends `data` (bytes) on a new connection; returns (status, headers, body text)."""
    with connect(port, timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def read_response(sock):
    response = http.client.HTTPResponse(sock)
    response.begin()
    return (
        response.status,
        {k.lower(): v for k, v in response.getheaders()},
        response.read().decode("utf-8"),
    )


def error_of(status_headers_body):
    """The `error` text of a TF Serving-style JSON error response (asserting it is one)."""
    status, headers, body = status_headers_body
    assert 400 <= status < 500, (status, body[:300])
    assert headers["content-type"] == "application/json", headers
    error = json.loads(body)["error"]
    assert isinstance(error, str) and error
    return error


def closed_within(sock, seconds):
    """Seconds until the server closed `sock` (reading b""), or None if still open after
    `seconds`."""
    start = time.monotonic()
    sock.settimeout(0.1)
    while time.monotonic() - start < seconds:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def post_bytes(port, path, body, headers=()):
    """A POST request's bytes with a correct Content-Length (unless `headers` gives one)."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if not any(name.lower() == "content-length" for name, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
