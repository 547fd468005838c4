"""Warm-up requests: written by `keras-s2s export`, replayed by `keras-s2s serve` at load."""

import os
import shutil
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from keras_s2s.data.tokenizers import load_tokenizer
from keras_s2s.exporters.savedmodel import warmup_requests
from keras_s2s.serving.config import ModelConfig, VersionPolicy
from keras_s2s.serving.models import _read_meta_graph
from keras_s2s.serving.server import ModelServer
from keras_s2s.serving.warmup import WARMUP_PATH, write_warmup_requests
from tests.serving.conftest import http, make_options, wait_until
from tests.serving.savedmodels import publish_version, write_warmup_records
from tests.test_export import exports  # noqa: F401  (a fixture shared with test_export)


def _prediction_logs(version_dir):
    """The warm-up file's records, parsed with TF Serving's own protos."""
    path = os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")
    return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(path)]


@pytest.mark.parametrize("name", ["transformer", "luong_beam"])
def test_export_writes_a_warmup_request_per_signature_batch_size_and_length(name, exports):
    logs = _prediction_logs(exports[name])
    assert 0 < len(logs) <= 1000  # TF Serving's WarmupConsts::kMaxNumRecords
    signature_defs = _read_meta_graph(exports[name]).signature_def
    shapes = {}
    for log in logs:
        request = log.predict_log.request
        signature_def = signature_defs[request.model_spec.signature_name]
        assert set(request.inputs) == set(signature_def.inputs)
        for alias, tensor in request.inputs.items():
            assert tensor.dtype == signature_def.inputs[alias].dtype
            shapes.setdefault(request.model_spec.signature_name, set()).add(
                tf.make_ndarray(tensor).shape)
    assert shapes.keys() == {key for key in signature_defs if not key.startswith("__")}
    assert {shape[0] for shape in shapes["serving_default"]} == {1, 8}
    assert len(shapes["translate_ids"]) == 4  # two batch sizes × two lengths


class _SettingsModule(tf.Module):
    """A signature with scalar decoding settings that refuse 0 (a beam width, a temperature),
    and one that refuses the generic 1 (`max_steps`, at least the source length), which the
    module's `warmup_inputs` chooses, as an exporter's module may."""

    def __init__(self, source_tokenizer):
        super().__init__()
        self.source_tokenizer = source_tokenizer
        self.max_source_length = 6
        self.xla = False  # a graph-mode export's lengths and batch sizes

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="source_ids"),
                                  tf.TensorSpec([], tf.int32, name="beam_width"),
                                  tf.TensorSpec([], tf.float32, name="temperature"),
                                  tf.TensorSpec([], tf.int32, name="max_steps")])
    def settings(self, source_ids, beam_width, temperature, max_steps):
        checks = [tf.debugging.assert_positive(beam_width),
                  tf.debugging.assert_positive(temperature),
                  tf.debugging.assert_greater_equal(max_steps, tf.shape(source_ids)[1])]
        with tf.control_dependencies(checks):
            return {"scaled": tf.cast(source_ids, tf.float32) / temperature}

    def warmup_inputs(self, signature_name, batch_size, length):
        return {"max_steps": np.int32(length)}


def test_warmup_requests_give_scalar_settings_valid_values(exports, tmp_path):
    """Every record replays: the load fails if one is refused."""
    tokenizer = load_tokenizer(os.path.join(exports["transformer"], "assets.extra"), "source")
    module = _SettingsModule(tokenizer)
    signatures = {"settings": module.settings.get_concrete_function()}
    version_dir = str(tmp_path / "m" / "1")
    tf.saved_model.save(module, version_dir, signatures=signatures)
    write_warmup_requests(version_dir, warmup_requests(module, signatures))
    with ModelServer(make_options([ModelConfig("m", str(tmp_path / "m"))])) as server:
        (status,) = wait_until(lambda: _settled(server.url, "m", 1)).values()
    assert status["state"] == "AVAILABLE", status


def _latencies(url, count, path="/v1/models/m:predict"):
    """Seconds taken by each of `count` identical requests of 8 sentences, one after the other
    (the model's work, not the few milliseconds of HTTP, is what warm-up is about)."""
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        response = http(url, "POST", path, {"instances": ["one two three four"] * 8})
        seconds.append(time.perf_counter() - start)
        assert response.status == 200, response.text
    return seconds


def test_a_warmed_up_version_answers_its_first_request_as_fast_as_later_ones(exports, tmp_path):
    shutil.copytree(exports["transformer"], tmp_path / "m" / "1")
    options = make_options([ModelConfig("m", str(tmp_path / "m"))])
    with ModelServer(options) as server:
        first, *later = _latencies(server.url, 10)
    # Without warm-up the first request takes seconds, over 100 times longer than later ones
    # (bench/serving.py). On a machine busy with other work, later requests vary by 1.5 times
    # among themselves, and any one request may wait tens of milliseconds for a core.
    assert first <= 1.5 * max(later) + 0.05, (first, later)


def _unknown_signature_log():
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.model_spec.signature_name = "no_such_signature"
    return log.SerializeToString()


def _not_a_tfrecord(version_dir):
    with open(os.path.join(version_dir, WARMUP_PATH), "wb") as file:
        file.write(b"\x00 not a TFRecord" * 10)


#: Broken warm-up files (written into a version directory), and what the version's status says.
BROKEN_WARMUP_FILES = {
    "not_a_tfrecord": (_not_a_tfrecord, "DATA_LOSS",
                       "Please verify your warmup data is in TFRecord format"),
    "not_a_prediction_log": (lambda version_dir: write_warmup_records(version_dir, [b"\xff\xff"]),
                             "INVALID_ARGUMENT", "Failed to parse warmup record"),
    "unknown_signature": (
        lambda version_dir: write_warmup_records(version_dir, [_unknown_signature_log()]),
        "INVALID_ARGUMENT", '"no_such_signature" not found in signature def'),
    "too_many_records": (  # empty PredictionLogs, which TF Serving skips
        lambda version_dir: write_warmup_records(version_dir, [b""] * 1001),
        "INVALID_ARGUMENT", "Number of warmup records exceeds the maximum (1000)"),
}


def test_a_broken_warmup_file_fails_that_version_only(built_models, tmp_path):
    base_path = str(tmp_path / "hpt")
    os.makedirs(base_path)
    publish_version(built_models["half_plus_two"], base_path, 1)
    write_warmup_requests(os.path.join(base_path, "1"),
                          [("serving_default", {"x": np.array([1.0, 2.0], np.float32)})])
    options = make_options([ModelConfig("hpt", base_path, VersionPolicy("all"))])
    with ModelServer(options) as server:
        for version, (name, (write, code, reason)) in enumerate(BROKEN_WARMUP_FILES.items(), 2):
            staging = str(tmp_path / name)
            shutil.copytree(built_models["half_plus_two"], staging)
            os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
            write(staging)
            publish_version(staging, base_path, version)
        statuses = wait_until(lambda: _settled(server.url, "hpt", len(BROKEN_WARMUP_FILES) + 1))
        assert statuses["1"]["state"] == "AVAILABLE"
        for version, (_, code, reason) in enumerate(BROKEN_WARMUP_FILES.values(), 2):
            status = statuses[str(version)]
            assert (status["state"], status["status"]["error_code"]) == ("END", code)
            assert reason in status["status"]["error_message"]
        response = http(server.url, "POST", "/v1/models/hpt:predict", {"instances": [1.0]})
        assert response.json == {"predictions": [2.5]}


def _settled(url, model, count):
    """{version: status} once `count` versions of `model` have loaded or failed, else None."""
    entries = http(url, "GET", f"/v1/models/{model}").json["model_version_status"]
    settled = {entry["version"]: entry for entry in entries
               if entry["state"] in ("AVAILABLE", "END")}
    return settled if len(settled) == count else None


def test_warmup_can_be_turned_off(built_models, tmp_path):
    """--enable_model_warmup=false loads a version whatever its warm-up file holds."""
    base_path = str(tmp_path / "hpt")
    os.makedirs(base_path)
    publish_version(built_models["half_plus_two"], base_path, 1)
    write_warmup_records(os.path.join(base_path, "1"), [_unknown_signature_log()])
    options = make_options([ModelConfig("hpt", base_path)], enable_model_warmup=False)
    with ModelServer(options) as server:
        response = http(server.url, "POST", "/v1/models/hpt:predict", {"instances": [1.0]})
    assert response.json == {"predictions": [2.5]}
