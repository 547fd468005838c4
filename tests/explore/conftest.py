"""The explorer on the test run's tiny runs (one per family: none, Bahdanau and a Transformer),
served on a free loopback port."""

import json
import urllib.error
import urllib.request

import pytest

from keras_s2s.explore.server import Explorer, make_server
from tests.test_export import tiny_runs  # noqa: F401  (built once per test run)

ARCHS = ("seq2seq", "bahdanau", "transformer")


@pytest.fixture(scope="session")
def explorer(tiny_runs):  # noqa: F811
    return Explorer([tiny_runs[arch] for arch in ARCHS])


@pytest.fixture(scope="session")
def explorer_url(explorer):
    with make_server(explorer, port=0) as server:
        yield server.url


def post(url, body):
    """POST `body` (bytes, or a value sent as JSON) to /api/translate → (status, JSON answer)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + "api/translate", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
