"""TF1 SavedModels answer as TF Serving answers them: the cases of TF Serving's REST guide, on
test models with the shapes of TF Serving's own (x:0 is [None, 1], fed [batch] as given)."""

import pytest

from keras_s2s.serving.config import ModelConfig
from keras_s2s.serving.server import ModelServer
from tests.serving.conftest import http, make_options
from tests.serving.savedmodels import HALF_PLUS_THREE_KEYS, HALF_PLUS_TWO_KEYS, save_tf1_half_plus


@pytest.fixture(scope="module")
def tf1_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf1")
    save_tf1_half_plus(str(root / "half_plus_two" / "00000123"), 2.0, HALF_PLUS_TWO_KEYS)
    save_tf1_half_plus(str(root / "half_plus_three" / "00000123"), 3.0, HALF_PLUS_THREE_KEYS)
    models = [ModelConfig(name, str(root / name)) for name in ("half_plus_two", "half_plus_three")]
    with ModelServer(make_options(models)) as server:
        yield server


@pytest.mark.parametrize(
    "model, body, expected",
    [
        # TF Serving's REST guide, word for word.
        ("half_plus_three", {"instances": [1.0, 2.0, 5.0]}, {"predictions": [3.5, 4.0, 5.5]}),
        # The Docker guide's request to saved_model_half_plus_two_cpu.
        ("half_plus_two", {"instances": [1.0, 2.0, 5.0]}, {"predictions": [2.5, 3.0, 4.5]}),
        # The placeholder's own shape [batch, 1] works as well.
        ("half_plus_two", {"instances": [[1.0], [2.0]]}, {"predictions": [[2.5], [3.0]]}),
        ("half_plus_two", {"inputs": {"x": [[1.0], [5.0]]}}, {"outputs": [[2.5], [4.5]]}),
    ],
)
def test_predict_feeds_tensors_as_given(tf1_server, model, body, expected):
    response = http(tf1_server.url, "POST", f"/v1/models/{model}:predict", body)
    assert (response.status, response.json) == (200, expected), response.text


def test_rest_guide_regress_on_a_non_default_signature(tf1_server):
    body = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}
    response = http(tf1_server.url, "POST", "/v1/models/half_plus_three:regress", body)
    assert (response.status, response.json) == (200, {"results": [3.5, 4.0]}), response.text


def test_classify_with_scores_only(tf1_server):
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": 5.0}]}
    response = http(tf1_server.url, "POST", "/v1/models/half_plus_two:classify", body)
    assert response.json == {"results": [[["", 2.5]], [["", 4.5]]]}, response.text


def test_rest_guide_status_and_unknown_model(tf1_server):
    status = http(tf1_server.url, "GET", "/v1/models/half_plus_three").json
    assert status == {
        "model_version_status": [
            {"version": "123", "state": "AVAILABLE",
             "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    missing = http(tf1_server.url, "POST", "/v1/models/half:predict", {"instances": [1.0, 5.0]})
    assert (missing.status, missing.json) == (
        404, {"error": "Servable not found for request: Latest(half)"}
    )
