"""keras_s2s.serving.Client against the server."""

import pytest

from keras_s2s.serving import Client, ServingRequestError


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
