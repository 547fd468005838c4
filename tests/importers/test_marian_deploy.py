"""An imported Marian run deployed: SavedModel (`keras-s2s export`), REST (`keras-s2s serve`'s
server) and TFLite (`keras-s2s tflite`, float32 and dynamic range) give the run's own greedy
outputs, with the checkpoint's special ids (`</s>` 0, `<pad>` last) all the way."""

import numpy as np
import pytest
import tensorflow as tf

from tests.importers.test_marian import _checkpoint, _sentences

from keras_s2s.cli import main
from keras_s2s.data.pipeline import encode_source
from keras_s2s.decoding import Greedy
from keras_s2s.inference.translator import Translator
from keras_s2s.serving import Client
from keras_s2s.serving.config import ModelConfig, ServerOptions
from keras_s2s.serving.server import ModelServer

MAX_LENGTH = 12
TEXTS = [text for text in _sentences(12, seed=6) if text.strip()][:8]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """`(run, translator, version directory)` of one imported checkpoint, exported."""
    root = tmp_path_factory.mktemp("deploy")
    checkpoint = root / "checkpoint"
    checkpoint.mkdir()
    _checkpoint(checkpoint, "swish", True, True, seed=0)
    run = root / "run"
    assert main(["import", str(checkpoint), "--out", str(run), "--max-length",
                 str(MAX_LENGTH)]) == 0
    assert main(["export", str(run), "--model-name", "opus", "--base-path",
                 str(root / "export")]) == 0
    version = next((root / "export" / "opus").iterdir())
    return run, Translator.load(str(run)), version


def test_saved_model_and_rest_give_the_runs_outputs(deployed):
    run, translator, version = deployed
    expected = translator.translate(TEXTS, Greedy(), attention=False)
    assert len({t.text for t in expected}) > 1
    outputs = tf.saved_model.load(str(version)).signatures["serving_default"](
        inputs=tf.constant(TEXTS))
    assert [text.decode() for text in outputs["outputs"].numpy()] == [t.text for t in expected]
    np.testing.assert_allclose(outputs["scores"].numpy(), [t.score for t in expected],
                               atol=1e-4)
    options = ServerOptions(models=[ModelConfig("opus", str(version.parent))], rest_api_port=0)
    with ModelServer(options) as server:
        served = Client(server.url, "opus").translate(TEXTS)
    assert [result["translation"] for result in served] == [t.text for t in expected]


@pytest.mark.parametrize("quantize", ["none", "dynamic"])
def test_tflite_gives_the_runs_outputs(deployed, tmp_path, quantize):
    run, translator, _ = deployed
    path = tmp_path / f"opus-{quantize}.tflite"
    assert main(["tflite", str(run), "--out", str(path), "--quantize", quantize,
                 "--batch-size", str(len(TEXTS))]) == 0
    from ai_edge_litert.interpreter import Interpreter

    ids = encode_source(TEXTS, translator.source_tokenizer, MAX_LENGTH).numpy()
    pad = translator.source_tokenizer.pad_id
    ids = np.pad(ids, [(0, 0), (0, MAX_LENGTH - ids.shape[1])], constant_values=pad)
    no_prefix = np.full((len(TEXTS), translator.max_target_length),
                        translator.target_tokenizer.pad_id, np.int32)
    result = Interpreter(model_path=str(path)).get_signature_runner("serving_default")(
        source_ids=ids, prefix_ids=no_prefix)
    vocabulary = translator.target_tokenizer.vocabulary
    outputs = [[vocabulary[i] for i in row[:length]]
               for row, length in zip(result["output_ids"], result["lengths"])]
    expected = [t.output_tokens for t in translator.translate(TEXTS, Greedy(),
                                                              attention=False)]
    differing = sum(ours != theirs for ours, theirs in zip(outputs, expected))
    print(f"TFLite {quantize}: {differing} of {len(TEXTS)} outputs differ from the run's")
    assert differing == 0 if quantize == "none" else differing <= len(TEXTS) // 4
