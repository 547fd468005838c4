"""The REST API against TF Serving's behaviour (tensorflow_serving @ 9d981c5, see the spec)."""

import base64
import math

import pytest

from keras_s2s.serving.lanes import Lane
from tests.serving.conftest import http


def predict(server, body, model="half_plus_two", suffix=""):
    return http(server.url, "POST", f"/v1/models/{model}{suffix}:predict", body)


# Predict.


def test_half_plus_two_row_format(server):
    response = predict(server, {"instances": [1.0, 2.0, 5.0]})
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json == {"predictions": [2.5, 3.0, 4.5]}
    assert response.text == '{"predictions": [2.5, 3.0, 4.5]}'


def test_columnar_format_and_named_inputs(server):
    assert predict(server, {"inputs": [1.0, 2.0, 5.0]}).json == {"outputs": [2.5, 3.0, 4.5]}
    assert predict(server, {"inputs": {"x": [1.0, 2.0]}}).json == {"outputs": [2.5, 3.0]}
    assert predict(server, {"instances": [{"x": 1.0}, {"x": 2.0}]}).json == {
        "predictions": [2.5, 3.0]
    }


def test_signature_name_selects_the_signature(server):
    response = predict(server, {"signature_name": "times_two", "instances": [1, 2.5]})
    assert response.json == {"predictions": [2.0, 5.0]}


def test_string_model_with_two_outputs(server):
    response = predict(server, {"instances": ["abc", "hello"]}, model="strings")
    assert response.json == {
        "predictions": [{"outputs": "ABC", "scores": 0.75}, {"outputs": "HELLO", "scores": 1.25}]
    }
    columnar = predict(server, {"inputs": ["abc", "hello"]}, model="strings").json
    assert columnar == {"outputs": {"outputs": ["ABC", "HELLO"], "scores": [0.75, 1.25]}}


def test_b64_inputs_and_bytes_outputs(server):
    payload = b"\x00\x01binary"
    response = predict(
        server,
        {"signature_name": "raw_bytes", "instances": [{"b64": base64.b64encode(payload).decode()}]},
        model="strings",
    )
    assert response.status == 200, response.text
    (prediction,) = response.json["predictions"]
    assert base64.b64decode(prediction["payload_bytes"]["b64"]) == payload + b"\xff"
    assert prediction["size"] == len(payload)


def test_multiple_inputs_and_typed_values(server):
    response = predict(
        server,
        {"signature_name": "pair", "instances": [{"a": "x", "b": "y"}, {"a": "1", "b": "2"}]},
        model="strings",
    )
    assert response.json == {"predictions": ["x y", "1 2"]}
    response = predict(
        server,
        {
            "signature_name": "typed",
            "inputs": {"ints": [[1, 2], [3, 4]], "flags": [True, False], "wide": [2**40, -1]},
        },
        model="strings",
    )
    assert response.json == {
        "outputs": {"sum": [3, 7], "negated": [False, True], "wide": [2**40, -1]}
    }


def test_version_and_label_routing(server):
    body = {"instances": [1.0, 2.0, 5.0]}
    assert predict(server, body, suffix="/versions/1").json == {"predictions": [1.5, 2.0, 3.5]}
    assert predict(server, body, suffix="/versions/2").json == {"predictions": [2.5, 3.0, 4.5]}
    assert predict(server, body, suffix="/labels/stable").json == {"predictions": [1.5, 2.0, 3.5]}
    assert predict(server, body, suffix="/labels/canary").json == {"predictions": [2.5, 3.0, 4.5]}
    assert (
        predict(server, {"instances": ["a"]}, model="strings", suffix="/versions/7").status == 200
    )


# Classify and regress.


def test_a_request_is_one_job_of_its_lane_without_batching(server, monkeypatch):
    """Parse, inputs, model run and JSON run back to back on one lane thread: each hand-off
    to the event loop between them would cost the request two thread wake-ups."""
    jobs = []
    submit = Lane.submit

    def counted(lane, ticket, function, *args):
        jobs.append(function)
        return submit(lane, ticket, function, *args)

    monkeypatch.setattr(Lane, "submit", counted)
    assert predict(server, {"instances": [1.0]}).json == {"predictions": [2.5]}
    assert len(jobs) == 1
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]}
    response = http(server.url, "POST", "/v1/models/half_plus_two:regress", body)
    assert response.json == {"results": [2.5]} and len(jobs) == 2


def test_regress(server):
    response = http(
        server.url,
        "POST",
        "/v1/models/half_plus_two:regress",
        {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": 5.0}]},
    )
    assert response.json == {"results": [2.5, 4.5]}


def test_classify_with_context(server):
    response = http(
        server.url,
        "POST",
        "/v1/models/half_plus_two/versions/2:classify",
        {"signature_name": "classify_x_to_y", "context": {"x": 2.0}, "examples": [{}, {"x": 10.0}]},
    )
    assert response.status == 200, response.text
    results = response.json["results"]
    assert [[label for label, _ in result] for result in results] == [
        ["low", "high"],
        ["low", "high"],
    ]
    assert results[0][1][1] == pytest.approx(0.5)  # context x=2 -> y=3 -> sigmoid(0)
    assert results[1][1][1] == pytest.approx(
        1 / (1 + math.exp(-4.0))
    )  # the example's x=10 overrides it


def test_classify_and_regress_errors(server):
    url = "/v1/models/half_plus_two:regress"
    assert (
        http(server.url, "POST", url, {"signature_name": "regress_x_to_y", "examples": []}).status
        == 400
    )
    mixed = http(
        server.url,
        "POST",
        url,
        {"signature_name": "regress_x_to_y", "examples": [{"x": [1.0, "a"]}]},
    )
    assert mixed.status == 400 and "mixes value types" in mixed.json["error"]
    no_outputs = http(
        server.url, "POST", url, {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]}
    )
    assert (
        no_outputs.status == 400 and "regression output named 'outputs'" in no_outputs.json["error"]
    )


# Status and metadata.


def test_model_status(server):
    response = http(server.url, "GET", "/v1/models/half_plus_two")
    assert response.status == 200
    assert response.json == {
        "model_version_status": [
            {
                "version": version,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for version in ("2", "1")
        ]
    }
    assert [
        entry["version"]
        for entry in http(server.url, "GET", "/v1/models/half_plus_two/versions/1").json[
            "model_version_status"
        ]
    ] == ["1"]
    # Labels are ignored by the status API.
    assert (
        len(
            http(server.url, "GET", "/v1/models/half_plus_two/labels/stable").json[
                "model_version_status"
            ]
        )
        == 2
    )


def test_metadata(server):
    response = http(server.url, "GET", "/v1/models/half_plus_two/labels/stable/metadata")
    assert response.status == 200
    body = response.json
    assert body["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "1"}
    signature_defs = body["metadata"]["signature_def"]["signature_def"]
    default = signature_defs["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert default["inputs"]["x"]["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}],
        "unknown_rank": False,
    }
    assert default["outputs"]["y"]["dtype"] == "DT_FLOAT"
    assert default["defaults"] == {}
    assert signature_defs["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify"
    latest = http(server.url, "GET", "/v1/models/half_plus_two/metadata").json
    assert latest["model_spec"]["version"] == "2"


# Errors: codes and messages as TF Serving's.


@pytest.mark.parametrize(
    "method, path, body, status, message",
    [
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            b"",
            400,
            "JSON Parse error: The document is empty",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            b"{",
            400,
            "JSON Parse error: Missing a name for object member.",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            b'{"instances": [1,]}',
            400,
            "JSON Parse error: Invalid value.",
        ),
        ("POST", "/v1/models/half_plus_two:predict", b"[1]", 400, "Is not object"),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            b'{"instances": []}',
            400,
            "No values in 'instances' array",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            b'{"instances": 1}',
            400,
            "Expecting 'instances' to be an list/array",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            b'{"x": 1}',
            400,
            "Missing 'inputs' or 'instances' key",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            b'{"inputs": 1, "instances": [1]}',
            400,
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys "
            "exclusively",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            b'{"instances": ["a"]}',
            400,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: "a" Type: String is not of expected type: float',
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            b'{"instances": [[1, 2], [3]]}',
            400,
            "Expecting shape [2] but got: [1]",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            b'{"instances": [1], "signature_name": "nope"}',
            400,
            'Serving signature name: "nope" not found in signature def',
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            b'{"instances": [1], "signature_name": 3}',
            400,
            "'signature_name' key must be a string value.",
        ),
        (
            "POST",
            "/v1/models/unknown:predict",
            b'{"instances": [1]}',
            404,
            "Servable not found for request: Latest(unknown)",
        ),
        (
            "POST",
            "/v1/models/half_plus_two/versions/9:predict",
            b'{"instances": [1]}',
            404,
            "Servable not found for request: Specific(half_plus_two, 9)",
        ),
        (
            "POST",
            "/v1/models/half_plus_two/versions/99999999999999999999:predict",
            b"{}",
            400,
            "Failed to convert version: 99999999999999999999",
        ),
        (
            "POST",
            "/v1/models/half_plus_two/labels/nope:predict",
            b'{"instances": [1]}',
            400,
            "Unrecognized servable version label: nope",
        ),
        (
            "POST",
            "/v1/models/strings:predict",
            b'{"signature_name": "halves", "instances": [1.0]}',
            501,
            "to type: half",
        ),
        (
            "POST",
            "/v1/models/strings:predict",
            b'{"signature_name": "pair", "instances": ["x"]}',
            400,
            "instances is a plain list, but expecting list of objects",
        ),
        (
            "POST",
            "/v1/models/strings:predict",
            b'{"signature_name": "pair", "inputs": {"a": ["x"]}}',
            400,
            "Missing named input: b in 'inputs' object.",
        ),
        (
            "POST",
            "/v1/models/strings:predict",
            b'{"signature_name": "typed", "instances": [{"ints": [1, 2], "flags": 1, "wide": 1}]}',
            400,
            "JSON Value: 1 Type: Number is not of expected type: bool",
        ),
        (
            "POST",
            "/v1/models/strings:predict",
            b'{"signature_name": "typed", '
            b'"instances": [{"ints": [1, 2.5], "flags": true, "wide": 1}]}',
            400,
            "JSON Value: 2.5 Type: Number is not of expected type: int32",
        ),
        (
            "POST",
            "/v1/models/strings:predict",
            b'{"instances": [{"b64": "***"}]}',
            400,
            "not formatted correctly for base64 data",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:PREDICT",
            b"{}",
            400,
            "Malformed request: POST /v1/models/half_plus_two:PREDICT",
        ),
        (
            "DELETE",
            "/v1/models/half_plus_two",
            None,
            400,
            "Malformed request: DELETE /v1/models/half_plus_two",
        ),
        ("GET", "/v1/models", None, 400, "Missing model name in request."),
        ("GET", "/v1/models/unknown", None, 404, "Could not find any versions of model unknown"),
        (
            "GET",
            "/v1/models/half_plus_two/versions/5",
            None,
            404,
            "Could not find version 5 of model half_plus_two",
        ),
        (
            "GET",
            "/v1/models/unknown/metadata",
            None,
            404,
            "Servable not found for request: Latest(unknown)",
        ),
    ],
)
def test_errors(server, method, path, body, status, message):
    response = http(server.url, method, path, body)
    assert response.status == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert message in response.json["error"]
    assert response.text.startswith('{\n    "error": ')


def test_paths_outside_v1_get_a_plain_404(server):
    response = http(server.url, "GET", "/models/half_plus_two")
    assert response.status == 404
    assert not response.headers["Content-Type"].startswith("application/json")


def test_percent_encoded_model_name(server):
    assert predict(server, {"instances": [1.0]}, model="half%5Fplus%5Ftwo").json == {
        "predictions": [2.5]
    }


def test_body_too_large_is_refused(models_config_path):
    from keras_s2s.serving.config import parse_model_config
    from keras_s2s.serving.server import ModelServer
    from tests.serving.conftest import make_options

    with open(models_config_path) as file:
        models = parse_model_config(file.read())[:1]
    with ModelServer(make_options(models, rest_api_max_body_bytes=1000)) as small:
        body = {"instances": [1.0] * 400}
        response = predict(small, body)
        assert response.status == 413
        assert "larger than 1000 bytes" in response.json["error"]
        assert predict(small, {"instances": [1.0]}).status == 200


def test_cors_preflight(server):
    assert (
        http(
            server.url,
            "OPTIONS",
            "/v1/models/half_plus_two:predict",
            headers={"Origin": "https://a.example"},
        ).status
        == 200
    )
    response = http(server.url, "OPTIONS", "/v1/models/half_plus_two:predict")
    assert (
        response.status == 400
        and response.json["error"] == "Origin header is missing in CORS preflight"
    )
