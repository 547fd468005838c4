"""`keras-s2s export --xla on`: decoding compiled with XLA per bucket, served by `keras-s2s serve`
only with `--xla_cpu_compilation_enabled`, as tensorflow_model_server serves it."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from keras_s2s.cli import main
from keras_s2s.data import synthetic
from keras_s2s.exporters.savedmodel import XLA_WARMUP_BATCH_SIZES, source_length_buckets
from keras_s2s.inference.translator import Translator
from keras_s2s.serving import Client
from keras_s2s.serving.config import ModelConfig, ServerOptions
from keras_s2s.serving.server import ModelServer
from keras_s2s.serving.warmup import WARMUP_PATH

DATES = [source for source, _ in synthetic.generate("dates", 5, seed=4321)]


@pytest.fixture(scope="module")
def xla_export(dates_transformer, tmp_path_factory):
    """The dates Transformer exported with `--xla on`: (model base path, version directory)."""
    base_path = tmp_path_factory.mktemp("xla")
    assert main(["export", dates_transformer, "--model-name", "dates", "--base-path",
                 str(base_path), "--xla", "on"]) == 0
    return str(base_path / "dates"), str(base_path / "dates" / "1")


def test_served_with_the_flag_it_gives_the_graph_decodings_tokens(xla_export,
                                                                 dates_transformer):
    """Batches of 1, 3 and 5 texts (buckets 1, 4 and 8) through REST give the tokens and
    scores of the graph-mode `Translator`, which the graph export gives (test_export.py).
    Without the warm-up (its compilations would take minutes here), each bucket compiles on
    its first request: the long deadline keeps the server from refusing the next ones."""
    options = ServerOptions(models=[ModelConfig("dates", xla_export[0])], rest_api_port=0,
                            xla_cpu_compilation_enabled=True, enable_model_warmup=False,
                            rest_api_timeout_in_ms=600_000)
    with ModelServer(options) as server:
        served = [Client(server.url, "dates").translate(DATES[:size]) for size in (1, 3, 5)]
    expected = Translator.load(dates_transformer).translate(DATES)
    for answers in served:
        assert [answer["translation"] for answer in answers] == [
            translation.text for translation in expected[:len(answers)]]
        np.testing.assert_allclose([answer["score"] for answer in answers],
                                   [translation.score for translation in expected[:len(answers)]],
                                   atol=1e-4)


def test_served_without_the_flag_its_load_fails_on_one_line(xla_export, capsys):
    assert main(["serve", f"--model_base_path={xla_export[0]}", "--model_name=dates",
                 "--rest_api_port=0", "--port=0", "--max_num_load_retries=0"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert "INTERNAL: XLA compilation disabled" in error
    assert "--xla_cpu_compilation_enabled" in error


def test_the_warmup_compiles_every_bucket_of_every_compiled_signature(xla_export,
                                                                      dates_transformer):
    """One warm-up record per signature, batch size of `XLA_WARMUP_BATCH_SIZES` and source
    length bucket up to max_source_length, each exactly that shape once tokenized."""
    translator = Translator.load(dates_transformer)
    lengths = [length for length in source_length_buckets(translator.max_source_length)
               if length <= translator.max_source_length]
    shapes = {}
    for record in tf.data.TFRecordDataset(os.path.join(xla_export[1], WARMUP_PATH)):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        if "inputs" in request.inputs:
            texts = tf.make_ndarray(request.inputs["inputs"]).astype(str).tolist()
            source_ids = translator.source_tokenizer.tokenize(texts).to_tensor()
            shape = (len(texts), source_ids.shape[1] + 1)  # END
        else:
            shape = tf.make_ndarray(request.inputs["source_ids"]).shape
        shapes.setdefault(request.model_spec.signature_name, set()).add(shape)
    expected = {(batch, length) for batch in XLA_WARMUP_BATCH_SIZES for length in lengths}
    assert set(shapes) == {"serving_default", "translate_ids", "beam", "sample", "constrained"}
    assert all(found == expected for found in shapes.values()), shapes
