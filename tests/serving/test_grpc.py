"""TF Serving's gRPC API on --port, through tensorflow_serving.apis' own stubs: the answers REST
gives for the same models, and TF Serving's status codes for bad requests."""

import concurrent.futures
import socket
import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from keras_s2s.serving import Client, ServingRequestError
from keras_s2s.serving.config import BatchingParameters, ModelConfig
from keras_s2s.serving.server import ModelServer
from tests.serving.conftest import http, make_options
from tests.serving.savedmodels import publish_version


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as opened:
        yield opened


@pytest.fixture(scope="module")
def predictions(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def _predict_request(name="half_plus_two", inputs=None, **model_spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for field, value in model_spec.items():
        if field == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, field, value)
    for alias, value in (inputs if inputs is not None else {"x": [1.0, 2.0, 5.0]}).items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return request


def _as_dict(message):
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


@pytest.mark.parametrize("model_spec, offset, version", [
    ({}, 2.0, 2), ({"version": 1}, 1.0, 1), ({"version_label": "stable"}, 1.0, 1),
])
def test_predict_runs_the_chosen_version(predictions, model_spec, offset, version):
    x = np.array([1.0, 2.0, 5.0], np.float32)
    response = predictions.Predict(_predict_request(inputs={"x": x}, **model_spec), timeout=10)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), 0.5 * x + offset)
    assert (response.model_spec.name, response.model_spec.version.value,
            response.model_spec.signature_name) == ("half_plus_two", version, "serving_default")


def test_predict_output_filter_and_strings(predictions):
    request = _predict_request("strings", {"inputs": np.array([b"abc", b"hello"], object)},
                               signature_name="serving_default")
    request.output_filter.append("scores")
    response = predictions.Predict(request, timeout=10)
    assert list(response.outputs) == ["scores"]
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["scores"]), [0.75, 1.25])


def test_metadata_and_status_are_rest_answers_as_protos(server, predictions, models):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "half_plus_two"
    response = predictions.GetModelMetadata(request, timeout=10)
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_defs)
    rest = http(server.url, "GET", "/v1/models/half_plus_two/metadata").json
    assert _as_dict(signature_defs) == rest["metadata"]["signature_def"]
    assert (response.model_spec.name, response.model_spec.version.value) == ("half_plus_two", 2)

    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "half_plus_two"
    status = _as_dict(models.GetModelStatus(status_request, timeout=10))
    assert status == http(server.url, "GET", "/v1/models/half_plus_two").json


def _without_model_spec(request):
    request.ClearField("model_spec")
    return request


def _with_output_filter(*aliases):
    request = _predict_request()
    request.output_filter.extend(aliases)
    return request


@pytest.mark.parametrize("request_, code, message", [
    (_predict_request("unknown"), "NOT_FOUND", "Servable not found for request: Latest(unknown)"),
    (_predict_request(version=7), "NOT_FOUND",
     "Servable not found for request: Specific(half_plus_two, 7)"),
    (_predict_request(version_label="nightly"), "INVALID_ARGUMENT",
     "Unrecognized servable version label: nightly"),
    (_without_model_spec(_predict_request()), "INVALID_ARGUMENT", "Missing ModelSpec"),
    (_predict_request(signature_name="nope"), "FAILED_PRECONDITION",
     'Serving signature key "nope" not found.'),
    (_predict_request(inputs={"z": [1.0]}), "INVALID_ARGUMENT",
     "input size does not match signature: 1!=1 len({z}) != len({x}). Sent extra: {z}. "
     "Missing but required: {x}."),
    (_predict_request(inputs={"x": ["one"]}), "INVALID_ARGUMENT",
     "Expects arg x to be float32 but string is provided"),
    (_with_output_filter("y", "y"), "INVALID_ARGUMENT", "duplicate output tensor alias: y"),
    (_with_output_filter("z"), "INVALID_ARGUMENT",
     "output tensor alias not found in signature: z Outputs expected to be in the set {y}."),
])
def test_bad_predicts_get_tf_serving_status_codes(predictions, request_, code, message):
    with pytest.raises(grpc.RpcError) as raised:
        predictions.Predict(request_, timeout=10)
    assert (raised.value.code().name, raised.value.details()) == (code, message)


@pytest.mark.parametrize("fields, name, code, message", [
    ([], "half_plus_two", "INVALID_ARGUMENT",
     "GetModelMetadataRequest must specify at least one metadata_field"),
    (["signature_def", "other"], "half_plus_two", "INVALID_ARGUMENT",
     "Metadata field other is not supported"),
    (["signature_def"], "unknown", "NOT_FOUND", "Servable not found for request: Latest(unknown)"),
])
def test_bad_metadata_requests(predictions, fields, name, code, message):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
    request.model_spec.name = name
    with pytest.raises(grpc.RpcError) as raised:
        predictions.GetModelMetadata(request, timeout=10)
    assert (raised.value.code().name, raised.value.details()) == (code, message)


def test_status_of_unknown_model_or_version_is_not_found(models):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.version.value = 9
    with pytest.raises(grpc.RpcError) as raised:
        models.GetModelStatus(request, timeout=10)
    assert (raised.value.code(), raised.value.details()) == (
        grpc.StatusCode.NOT_FOUND, "Could not find version 9 of model half_plus_two")


def test_client_speaks_grpc(server):
    url = f"grpc://127.0.0.1:{server.grpc_port}"
    stable = Client(url, "half_plus_two", label="stable")
    assert stable.predict(instances=[1.0, 2.0]) == [1.5, 2.0]
    assert Client(url, "half_plus_two").predict(inputs={"x": [1.0]}) == [2.5]
    assert Client(url, "strings").translate(["abc", "hello"]) == [
        {"translation": "ABC", "score": 0.75},
        {"translation": "HELLO", "score": 1.25},
    ]
    with pytest.raises(ServingRequestError, match="gRPC NOT_FOUND from grpc://.*: Could not "
                                                  "find any versions of model unknown"):
        Client(url, "unknown").status()


def test_messages_past_the_body_limit_are_refused(tmp_path, built_models):
    publish_version(built_models["half_plus_two"], str(tmp_path), 1)
    options = make_options([ModelConfig("m", str(tmp_path))], port=0,
                           rest_api_max_body_bytes=1000)
    with ModelServer(options) as limited, grpc.insecure_channel(
            f"127.0.0.1:{limited.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert stub.Predict(_predict_request("m", {"x": [2.0]}), timeout=10).outputs["y"]
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(_predict_request("m", {"x": np.zeros(1000, np.float32)}), timeout=10)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_grpc_and_rest_requests_share_one_batch(tmp_path, built_models):
    """One batch queue for both APIs: a gRPC and a REST predict arriving together run as one
    batch of 2 (its size is full at 2, so neither waits for the long timeout)."""
    publish_version(built_models["half_plus_two"], str(tmp_path), 1)
    batching = BatchingParameters(max_batch_size=2, batch_timeout_micros=5_000_000,
                                  num_batch_threads=1)
    options = make_options([ModelConfig("m", str(tmp_path))], port=0, batching=batching)
    with ModelServer(options) as batched, concurrent.futures.ThreadPoolExecutor(2) as pool:
        grpc_client = Client(f"grpc://127.0.0.1:{batched.grpc_port}", "m")
        grpc_client.metadata()
        over_grpc = pool.submit(grpc_client.predict, [1.0], signature_name="with_batch_size")
        over_rest = pool.submit(Client(batched.url, "m").predict, [3.0],
                                signature_name="with_batch_size")
        results = [over_grpc.result(timeout=30), over_rest.result(timeout=30)]
    assert results == [[{"y": 2.5, "batch_size": 2}], [{"y": 3.5, "batch_size": 2}]]


def test_grpc_port_in_use_fails_start_and_leaves_nothing_running(tmp_path, built_models):
    publish_version(built_models["half_plus_two"], str(tmp_path), 1)
    threads_before = set(threading.enumerate())
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = ModelServer(make_options([ModelConfig("m", str(tmp_path))], port=port))
        with pytest.raises(OSError, match=f"Cannot serve gRPC on 127.0.0.1:{port} \\(--port\\)"):
            server.start()
    left = [thread.name for thread in set(threading.enumerate()) - threads_before
            if thread.is_alive() and "_poll_wrapper" not in thread.name]  # grpc.aio's, per process
    assert left == []
