"""`keras-s2s tflite` on a family whose decoding step cannot become TFLite builtin ops: one
line naming the op and what to do, not the converter's traceback."""

import keras
import pytest

from keras_s2s import architectures
from keras_s2s import run as run_files
from keras_s2s.cli import main
from keras_s2s.data import synthetic
from keras_s2s.data.tokenizers import train_tokenizers
from keras_s2s.models import Seq2Seq
from keras_s2s.training.config import TrainConfig

NAME = "erf_logits"


@keras.saving.register_keras_serializable(package="tests_tflite_errors")
class ErfLogitsSeq2Seq(Seq2Seq):
    """`Seq2Seq` whose decoding step passes its logits through `keras.ops.erf`, which TFLite
    has no builtin op for."""

    def decode_step(self, token_ids, memory, state, step, training=None):
        logits, state, weights = super().decode_step(token_ids, memory, state, step, training)
        return keras.ops.erf(logits), state, weights


@pytest.fixture(scope="module")
def erf_logits_run(tmp_path_factory):
    """An untrained run of the family (registered for this module only)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(architectures.BUILT_IN, NAME, architectures.Family(
            ErfLogitsSeq2Seq, {"embedding_dim": 8, "units": 8, "cell": "gru"}))
        directory = tmp_path_factory.mktemp("runs") / NAME
        config = TrainConfig(arch=NAME, data="reverse", out=str(directory), vocab_size=40,
                             max_source_length=8, max_target_length=8)
        pairs = synthetic.generate("reverse", 100, seed=0, max_length=4)
        source_tokenizer, target_tokenizer = train_tokenizers(pairs, config.vocab_size)
        model = config.build_model(source_tokenizer.vocabulary_size,
                                   target_tokenizer.vocabulary_size)
        model.build()
        run_files.save_run(str(directory), config, model, source_tokenizer, target_tokenizer)
        yield directory


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
