"""keras_s2s.serving.Client against the server."""

import socket
import time

import pytest

from keras_s2s.serving import Client, ModelConfig, ServingRequestError
from keras_s2s.serving.server import ModelServer
from tests.serving.conftest import make_options
from tests.serving.savedmodels import publish_version


def test_predict_row_and_columnar(server):
    client = Client(server.url, "half_plus_two")
    assert client.predict(instances=[1.0, 2.0, 5.0]) == [2.5, 3.0, 4.5]
    assert client.predict(inputs={"x": [1.0]}) == [2.5]
    assert client.predict(instances=[1.0], signature_name="times_two") == [2.0]
    with pytest.raises(ValueError, match="exactly one"):
        client.predict()


def test_version_and_label_pinning(server):
    assert Client(server.url, "half_plus_two", version=1).predict(instances=[1.0]) == [1.5]
    assert Client(server.url, "half_plus_two", label="canary").predict(instances=[1.0]) == [2.5]
    with pytest.raises(ValueError, match="not both"):
        Client(server.url, "half_plus_two", version=1, label="stable")


def test_translate_returns_outputs_and_scores(server):
    client = Client(server.url, "strings")
    assert client.translate(["abc", "hello"]) == [
        {"translation": "ABC", "score": 0.75},
        {"translation": "HELLO", "score": 1.25},
    ]
    assert client.translate([]) == []
    with pytest.raises(TypeError, match="list of strings"):
        client.translate("abc")


def test_status_and_metadata(server):
    client = Client(server.url, "half_plus_two", version=1)
    assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"
    assert client.metadata()["model_spec"]["version"] == "1"


def test_classify_and_regress(server):
    client = Client(server.url, "half_plus_two")
    assert client.regress([{"x": 1.0}], signature_name="regress_x_to_y") == [2.5]
    (result,) = client.classify([{}], context={"x": 2.0}, signature_name="classify_x_to_y")
    assert [label for label, _ in result] == ["low", "high"]


def test_errors_carry_status_and_message(server):
    with pytest.raises(ServingRequestError) as error:
        Client(server.url, "unknown").predict(instances=[1.0])
    assert error.value.status == 404
    assert error.value.message == "Servable not found for request: Latest(unknown)"
    with pytest.raises(ServingRequestError) as error:
        Client(server.url, "half_plus_two").predict(instances=["text"])
    assert error.value.status == 400 and "is not of expected type: float" in error.value.message


def test_unreachable_server():
    with pytest.raises(ServingRequestError) as error:
        Client("http://127.0.0.1:9", "m", timeout=2).status()
    assert error.value.status is None and "cannot reach" in error.value.message


def _count_connections(monkeypatch):
    """The TCP connections opened from now on, as a list that grows."""
    opened = []
    create_connection = socket.create_connection

    def counted(*args, **kwargs):
        opened.append(args[0])
        return create_connection(*args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", counted)
    return opened


def test_requests_of_a_client_share_one_connection(server, monkeypatch):
    """A connection per request would cost each a TCP handshake and the server a set-up."""
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    opened = _count_connections(monkeypatch)
    client = Client(server.url, "half_plus_two")
    for _ in range(3):
        assert client.predict(instances=[1.0]) == [2.5]
    with pytest.raises(ServingRequestError) as error:  # an error answer keeps it open too
        client.predict(instances=["text"])
    assert error.value.status == 400
    assert client.status()["model_version_status"]
    assert len(opened) == 1


def test_a_connection_the_server_closed_while_idle_is_opened_again(built_models, monkeypatch,
                                                                   tmp_path):
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    publish_version(built_models["half_plus_two"], str(tmp_path / "half"), 1)
    options = make_options([ModelConfig("half", str(tmp_path / "half"))],
                           rest_api_keepalive_timeout_in_ms=100)
    with ModelServer(options) as running:
        opened = _count_connections(monkeypatch)
        client = Client(running.url, "half")
        assert client.predict(instances=[1.0]) == [2.5]
        time.sleep(0.5)  # past the server's keep-alive timeout: it closes the connection
        assert client.predict(instances=[3.0]) == [3.5]
        assert len(opened) == 2
