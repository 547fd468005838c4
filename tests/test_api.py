"""The top-level API a Keras user guesses, and that the command line's parser stays light."""

import subprocess
import sys

import keras_s2s


def test_the_top_level_names_are_the_modules_objects():
    from keras_s2s.decoding import Beam, Greedy, Sample
    from keras_s2s.inference.translator import Translator
    from keras_s2s.models import AttentionSeq2Seq, Seq2Seq, Transformer
    from keras_s2s.run import Run

    for value in (Run, Translator, Beam, Greedy, Sample, Transformer, AttentionSeq2Seq, Seq2Seq):
        assert getattr(keras_s2s, value.__name__) is value
    assert set(keras_s2s.__all__) <= set(dir(keras_s2s))


def test_an_unknown_name_is_an_attribute_error():
    try:
        keras_s2s.Marian
    except AttributeError as error:
        assert "Marian" in str(error)
    else:
        raise AssertionError("keras_s2s.Marian should not exist")


def test_the_parser_imports_no_tensorflow():
    code = ("import sys; from keras_s2s.cli import build_parser; build_parser(); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True)
    assert completed.stdout.split() == ["False", "False"], completed.stderr
