"""`keras-s2s tflite` on plug-in families: a decoding step with an op TFLite has no builtin
for fails in one line naming the op and what to do, not the converter's traceback; a step that
runs a whole RNN layer on one token converts, and decodes as the `Translator` does."""

import contextlib

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from keras_s2s import architectures
from keras_s2s import run as run_files
from keras_s2s.cli import main
from keras_s2s.data import synthetic
from keras_s2s.data.pipeline import encode_source
from keras_s2s.data.tokenizers import train_tokenizers
from keras_s2s.inference.translator import Translator
from keras_s2s.models import Seq2Seq
from keras_s2s.training.config import TrainConfig


@keras.saving.register_keras_serializable(package="tests_tflite_errors")
class ErfLogitsSeq2Seq(Seq2Seq):
    """`Seq2Seq` whose decoding step passes its logits through `keras.ops.erf`, which TFLite
    has no builtin op for."""

    def decode_step(self, token_ids, memory, state, step, training=None):
        logits, state, weights = super().decode_step(token_ids, memory, state, step, training)
        return keras.ops.erf(logits), state, weights


@keras.saving.register_keras_serializable(package="tests_tflite_errors")
class OneTokenGRUSeq2Seq(Seq2Seq):
    """`Seq2Seq` whose decoding step runs the whole `keras.layers.GRU` on a one-token sequence
    instead of stepping its cell: a loop inside decoding's loop."""

    def decode_step(self, token_ids, memory, state, step, training=None):
        x = self.target_embedding(token_ids)[:, None, :]  # (B, 1, E)
        outputs, new_state = self.decoder_layers[0](x, initial_state=state["rnn"][0])
        return self.output_projection(outputs[:, 0]), {"rnn": [[new_state]]}, None


@contextlib.contextmanager
def family_run(directory, family):
    """An untrained run of the model class `family`, registered under its class name while
    the context lasts."""
    name = family.__name__
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(architectures.BUILT_IN, name, architectures.Family(
            family, {"embedding_dim": 8, "units": 8, "cell": "gru"}))
        config = TrainConfig(arch=name, data="reverse", out=str(directory), vocab_size=40,
                             max_source_length=8, max_target_length=8)
        pairs = synthetic.generate("reverse", 100, seed=0, max_length=4)
        source_tokenizer, target_tokenizer = train_tokenizers(pairs, config.vocab_size)
        model = config.build_model(source_tokenizer.vocabulary_size,
                                   target_tokenizer.vocabulary_size)
        model.build()
        run_files.save_run(str(directory), config, model, source_tokenizer, target_tokenizer)
        yield directory


@pytest.fixture(scope="module")
def erf_logits_run(tmp_path_factory):
    with family_run(tmp_path_factory.mktemp("runs") / "erf_logits", ErfLogitsSeq2Seq) as run:
        yield run


def test_a_step_that_cannot_lower_is_named_in_one_line(erf_logits_run, tmp_path, capfd):
    """Exit status 2 and one line on file descriptor 2: the converter's own C++ diagnostics
    (MLIR's "loc(...): error: ...") are not printed either."""
    capfd.readouterr()
    status = main(["tflite", str(erf_logits_run), "--out", str(tmp_path / "model.tflite")])
    err = capfd.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("keras-s2s tflite: error: "), lines[0]
    assert "'tf.Erf'" in lines[0] and "cannot be lowered to TFLite builtin ops" in lines[0], \
        lines[0]
    assert "plug-in guide" in lines[0], lines[0]
    assert not (tmp_path / "model.tflite").exists()


def test_an_op_with_no_builtin_is_named():
    """TensorFlow's other wording, "'tf.X' op is neither a custom op nor a flex op", from a
    real conversion of an op TFLite has no builtin for."""
    import tensorflow as tf

    from keras_s2s.exporters.tflite import _run_converter

    @tf.function(input_signature=[tf.TensorSpec([2], tf.string)])
    def lengths(texts):
        return tf.strings.length(texts)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [lengths.get_concrete_function()], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with pytest.raises(ValueError, match="holds 'tf.StringLength', which cannot be lowered"):
        _run_converter(converter)


def test_a_step_running_a_whole_rnn_layer_converts(tmp_path):
    """The GRU layer's own loop inside decoding's loop becomes builtin ops, its weights
    frozen by the converter: the model gives the `Translator`'s tokens."""
    out = tmp_path / "model.tflite"
    texts = ["a b c", "d e", "f"]
    with family_run(tmp_path / "one_token_gru", OneTokenGRUSeq2Seq) as run:
        assert main(["tflite", str(run), "--out", str(out)]) == 0
        translator = Translator.load(str(run))
    expected = [t.output_tokens for t in translator.translate(texts, attention=False)]
    vocabulary = translator.target_tokenizer.vocabulary
    runner = Interpreter(model_path=str(out)).get_signature_runner("serving_default")
    assert all(expected)
    for text, ids in zip(texts, expected):
        source = np.zeros((1, 8), np.int32)
        row = encode_source([text], translator.source_tokenizer, 8).numpy()
        source[0, :row.shape[1]] = row[0]
        output = runner(source_ids=source, prefix_ids=np.zeros((1, 8), np.int32))
        tokens = [vocabulary[i] for i in output["output_ids"][0, :output["lengths"][0]]]
        assert tokens[:len(ids)] == ids and len(tokens) - len(ids) <= 1, text  # END
