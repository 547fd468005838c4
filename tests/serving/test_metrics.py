"""Prometheus metrics behind --monitoring_config_file, with TF Serving's names and labels."""

import os

import grpc
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from keras_s2s.serving.config import ConfigError, ModelConfig, read_monitoring_config_file
from keras_s2s.serving.server import ModelServer, main
from tests.serving.conftest import http, make_options
from tests.serving.savedmodels import publish_version, write_warmup_records

def _warmup_records():
    """A predict, a classify and a regress PredictionLog for half_plus_two."""
    predict, classify, regress = (prediction_log_pb2.PredictionLog() for _ in range(3))
    predict.predict_log.request.model_spec.signature_name = "serving_default"
    predict.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0], tf.float32))
    for request, signature_name in ((classify.classify_log.request, "classify_x_to_y"),
                                    (regress.regress_log.request, "regress_x_to_y")):
        request.model_spec.signature_name = signature_name
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    return [log.SerializeToString() for log in (predict, classify, regress)]


WARMUP_RECORDS = _warmup_records()
PROMETHEUS_ON = 'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n'


@pytest.fixture(scope="module")
def metered(built_models, tmp_path_factory):
    """A server of half_plus_two as model "metered" (with `WARMUP_RECORDS`), with Prometheus
    metrics on, and gRPC."""
    root = tmp_path_factory.mktemp("metered")
    publish_version(built_models["half_plus_two"], str(root / "metered"), 1)
    write_warmup_records(str(root / "metered" / "1"), WARMUP_RECORDS)
    (root / "monitoring.config").write_text(PROMETHEUS_ON)
    options = make_options([ModelConfig("metered", str(root / "metered"))], port=0,
                           monitoring_config_file=str(root / "monitoring.config"))
    with ModelServer(options) as server:
        yield server


def _scrape(url, path="/monitoring/prometheus/metrics"):
    """{family name: [(sample name, labels, value)]} of the scraped metrics."""
    response = http(url, "GET", path)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {family.name: [(sample.name, sample.labels, sample.value) for sample in family.samples]
            for family in text_string_to_metric_families(response.text)}


def _value(samples, suffix="", **labels):
    """The value of the one sample with this name suffix and these labels (0 if none)."""
    values = [value for name, sample_labels, value in samples
              if name.endswith(suffix) and labels.items() <= sample_labels.items()
              and (suffix != "_bucket" or sample_labels["le"] == "+Inf")]
    assert len(values) <= 1, values
    return values[0] if values else 0


def test_request_counts_and_latencies_match_the_requests_sent(metered):
    sent = {"OK": 5, "INVALID_ARGUMENT": 3, "NOT_FOUND": 2}
    for _ in range(sent["OK"]):
        assert http(metered.url, "POST", "/v1/models/metered:predict",
                    {"instances": [1.0, 2.0]}).status == 200
    for _ in range(sent["INVALID_ARGUMENT"]):
        assert http(metered.url, "POST", "/v1/models/metered:predict",
                    {"instances": ["not a number"]}).status == 400
    for _ in range(sent["NOT_FOUND"]):
        assert http(metered.url, "POST", "/v1/models/metered/versions/9:predict",
                    {"instances": [1.0]}).status == 404
    assert http(metered.url, "GET", "/v1/models/metered").status == 200

    families = _scrape(metered.url)
    counts = families[":tensorflow:serving:request_count"]
    assert {status: _value(counts, model_name="metered", status=status) for status in sent} == {
        "OK": sent["OK"] + 1, "INVALID_ARGUMENT": 3, "NOT_FOUND": 2}
    # The counter keeps TF Serving's name: dashboards query it without "_total".
    assert ":tensorflow:serving:request_count{" in http(
        metered.url, "GET", "/monitoring/prometheus/metrics").text

    latency = families[":tensorflow:serving:request_latency"]  # successes only, in µs
    labels = dict(model_name="metered", API="predict", entrypoint="REST")
    assert _value(latency, "_count", **labels) == sent["OK"]
    assert _value(latency, "_bucket", **labels) == sent["OK"]  # le="+Inf"
    assert _value(latency, "_count", model_name="metered", API="") == 1  # the status GET
    assert 0 < _value(latency, "_sum", **labels) < sent["OK"] * 30e6
    buckets = [value for name, sample_labels, value in latency
               if name.endswith("_bucket") and labels.items() <= sample_labels.items()]
    assert buckets == sorted(buckets) and len(buckets) == 34  # 33 bounds and +Inf, cumulative

    runtime = families[":tensorflow:serving:runtime_latency"]
    assert _value(runtime, "_count", model_name="metered", API="Predict",
                  runtime="TF1") == sent["OK"]


def _grpc_predict(stub, version=None, input_name="x"):
    """The status code name of one gRPC Predict of model "metered"."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "metered"
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto([1.0, 2.0], tf.float32))
    try:
        stub.Predict(request, timeout=10)
    except grpc.RpcError as error:
        return error.code().name
    return "OK"


def _grpc_metrics(url):
    """(request counts by status, gRPC Predict latencies, Predict runtimes) of model "metered"."""
    families = _scrape(url)
    counts = families[":tensorflow:serving:request_count"]
    return ({status: _value(counts, model_name="metered", status=status)
             for status in ("OK", "INVALID_ARGUMENT", "NOT_FOUND")},
            _value(families[":tensorflow:serving:request_latency"], "_count",
                   model_name="metered", API="Predict", entrypoint="GRPC"),
            _value(families[":tensorflow:serving:runtime_latency"], "_count",
                   model_name="metered", API="Predict"))


def test_grpc_predicts_are_counted_as_tf_serving_counts_them(metered):
    """Predict calls by status, with API "Predict" and entrypoint "GRPC"; metadata and status
    calls are not counted (prediction_service_impl.cc)."""
    (counts_before, latencies_before, runtimes_before) = _grpc_metrics(metered.url)
    with grpc.insecure_channel(f"127.0.0.1:{metered.grpc_port}") as channel:
        predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        codes = ([_grpc_predict(predictions) for _ in range(4)]
                 + [_grpc_predict(predictions, version=9) for _ in range(2)]
                 + [_grpc_predict(predictions, input_name="y")])
        metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        metadata.model_spec.name = "metered"
        predictions.GetModelMetadata(metadata, timeout=10)
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "metered"
        model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, timeout=10)
    assert codes == ["OK"] * 4 + ["NOT_FOUND"] * 2 + ["INVALID_ARGUMENT"]

    counts, latencies, runtimes = _grpc_metrics(metered.url)
    assert {status: counts[status] - counts_before[status] for status in counts} == {
        "OK": 4, "NOT_FOUND": 2, "INVALID_ARGUMENT": 1}
    assert (latencies - latencies_before, runtimes - runtimes_before) == (4, 4)


def test_the_warmup_of_each_version_is_recorded(metered):
    families = _scrape(metered.url)
    model_path = {"model_path": metered.options.models[0].base_path + "/1", "status": "OK"}
    records = families[":tensorflow:serving:model_warmup_records_read"]
    assert _value(records, **model_path) == len(WARMUP_RECORDS)
    assert _value(families[":tensorflow:serving:model_warmup_latency"], "_count", **model_path) == 1


def test_metrics_are_served_only_when_enabled(built_models, tmp_path):
    publish_version(built_models["half_plus_two"], str(tmp_path / "hpt"), 1)
    options = make_options([ModelConfig("hpt", str(tmp_path / "hpt"))])
    with ModelServer(options) as server:
        assert http(server.url, "GET", "/monitoring/prometheus/metrics").status == 404


@pytest.mark.parametrize("text, expected", [
    (PROMETHEUS_ON, "/monitoring/prometheus/metrics"),
    ("prometheus_config { enable: true }", "/monitoring/prometheus/metrics"),
    ('prometheus_config: { enable: true path: "/metrics" }', "/metrics"),
    ('prometheus_config { path: "/metrics" }', None),
    ("", None),
])
def test_the_monitoring_config_is_tf_servings_text_proto(text, expected, tmp_path):
    (tmp_path / "monitoring.config").write_text(text)
    assert read_monitoring_config_file(str(tmp_path / "monitoring.config")) == expected


@pytest.mark.parametrize("text, message", [
    ("prometheus_config { enable: true, port: 9090 }", 'has no field named "port"'),
    ("prometheus_config { enable: maybe }", 'Expected "true" or "false"'),
    ('prometheus_config { enable: true, path: "metrics" }', "path must start with /"),
])
def test_a_bad_monitoring_config_is_one_line_naming_the_problem(text, message, tmp_path,
                                                                 built_models, caplog):
    path = tmp_path / "monitoring.config"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_monitoring_config_file(str(path))
    publish_version(built_models["half_plus_two"], str(tmp_path / "hpt"), 1)
    assert main([f"--model_base_path={tmp_path / 'hpt'}", "--rest_api_port=0",
                 f"--monitoring_config_file={path}"]) == 1
    (error,) = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert message in error and str(path) in error and "\n" not in error.strip()


def test_an_unreadable_monitoring_config_is_named(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read monitoring config file"):
        read_monitoring_config_file(os.path.join(tmp_path, "missing.config"))
