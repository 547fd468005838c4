"""TFLite conversion: builtin ops only, the SavedModel's `translate_ids` ids at fixed lengths."""

import os

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from keras_s2s.cli import main
from keras_s2s.data.pipeline import encode_source
from keras_s2s.data.tokenizers import load_tokenizer
from keras_s2s.special_tokens import END_ID
from keras_s2s.exporters.tflite import QUANTIZATIONS, convert
from tests.test_export import (  # noqa: F401  (fixtures shared with test_export)
    MAX_SOURCE_LENGTH, MAX_TARGET_LENGTH, RUNS, SENTENCEPIECE_RUN, TEXTS, exports, tiny_runs)

#: Inputs shorter than MAX_SOURCE_LENGTH, so the TFLite input is padded beyond the batch's.
SHORT_TEXTS = [text for text in TEXTS if len(text.split()) < MAX_SOURCE_LENGTH - 1]


def _source_ids(run_dir):
    """(batch, longest row) ids of SHORT_TEXTS, and the same padded to MAX_SOURCE_LENGTH."""
    ids = encode_source(SHORT_TEXTS, load_tokenizer(run_dir, "source"),
                        MAX_SOURCE_LENGTH).numpy()
    assert ids.shape[1] < MAX_SOURCE_LENGTH
    return ids, np.pad(ids, [(0, 0), (0, MAX_SOURCE_LENGTH - ids.shape[1])])


def _run_tflite(path, source_ids):
    """The model's outputs on `source_ids`, with no prefix (a `prefix_ids` of padding)."""
    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    prefix_shape = runner.get_input_details()["prefix_ids"]["shape"]
    return runner(source_ids=source_ids, prefix_ids=np.zeros(prefix_shape, np.int32))


@pytest.mark.parametrize("arch", RUNS)
def test_tflite_gives_the_saved_models_ids(arch, exports, tiny_runs, tmp_path):
    out_path = str(tmp_path / f"{arch}.tflite")
    convert(exports[arch], out_path, batch_size=len(SHORT_TEXTS))
    ids, padded_ids = _source_ids(tiny_runs[arch])

    expected = tf.saved_model.load(exports[arch]).signatures["translate_ids"](
        source_ids=tf.constant(ids))
    result = _run_tflite(out_path, padded_ids)

    assert result["output_ids"].shape == (len(SHORT_TEXTS), MAX_TARGET_LENGTH)
    np.testing.assert_array_equal(result["output_ids"], expected["output_ids"].numpy())
    np.testing.assert_array_equal(result["lengths"], expected["lengths"].numpy())
    np.testing.assert_allclose(result["scores"], expected["scores"].numpy(), atol=1e-4)
    for side in ("source", "target"):
        with open(tmp_path / f"{arch}.{side}_vocab.txt", encoding="utf-8") as copied, open(
                os.path.join(tiny_runs[arch], f"{side}_vocab.txt"), encoding="utf-8") as original:
            assert copied.read() == original.read()
        assert (tmp_path / f"{arch}.{side}.model").exists() == (arch == SENTENCEPIECE_RUN)
    if arch == SENTENCEPIECE_RUN:  # the model an app tokenizes with gives the same ids
        import sentencepiece

        processor = sentencepiece.SentencePieceProcessor(
            model_file=str(tmp_path / f"{arch}.source.model"))
        assert [processor.encode(text) + [END_ID] for text in SHORT_TEXTS] == [
            [i for i in row if i] for row in ids.tolist()]


def test_quantized_models_convert_run_and_shrink(tiny_runs, tmp_path, capsys):
    sizes = {}
    for quantize in QUANTIZATIONS:
        out_path = str(tmp_path / f"{quantize}.tflite")
        assert main(["tflite", tiny_runs["transformer"], "--out", out_path, "--quantize",
                     quantize, "--max-source-length", "14", "--max-target-length", "6"]) == 0
        assert f"wrote {out_path} ({quantize}, " in capsys.readouterr().out
        sizes[quantize] = os.path.getsize(out_path)
        _, padded_ids = _source_ids(tiny_runs["transformer"])
        result = _run_tflite(out_path, np.pad(padded_ids[:1], [(0, 0), (0, 2)]))
        assert result["output_ids"].shape == (1, 6) and result["output_ids"].dtype == np.int32
        assert 1 <= result["lengths"][0] <= 6
    assert sizes["dynamic"] < sizes["none"] and sizes["float16"] < sizes["none"]


def test_bad_arguments_are_named(tiny_runs, tmp_path):
    out_path = str(tmp_path / "model.tflite")
    with pytest.raises(ValueError, match="quantize must be one of .*, got 'int4'"):
        convert(tiny_runs["seq2seq"], out_path, quantize="int4")
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        convert(tiny_runs["seq2seq"], out_path, batch_size=0)
    with pytest.raises(ValueError, match="must not exceed the model's max_decode_length=14"):
        convert(tiny_runs["transformer"], out_path, max_source_length=15)
    with pytest.raises(FileNotFoundError, match="not a trained run directory"):
        convert(str(tmp_path), out_path)
