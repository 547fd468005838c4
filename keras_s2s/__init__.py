"""keras-s2s: sequence-to-sequence models in Keras 3, from training to serving.

The names a user reaches for first are here, imported when first used (so that the command
line's parser starts without TensorFlow):

>>> from keras_s2s import Run, Translator, Beam, Greedy, Sample  # doctest: +SKIP
>>> from keras_s2s import Transformer, AttentionSeq2Seq, Seq2Seq  # doctest: +SKIP
>>> from keras_s2s import import_marian  # an OPUS-MT checkpoint as a run  # doctest: +SKIP

Layers are in `keras_s2s.layers`, models in `keras_s2s.models`, decoding strategies in
`keras_s2s.decoding`.
"""

import importlib

__version__ = "0.1.0"

#: Each top-level name and the module that defines it.
_EXPORTS = {
    "Run": "keras_s2s.run",
    "Translator": "keras_s2s.inference.translator",
    "Translation": "keras_s2s.inference.translator",
    "Beam": "keras_s2s.decoding",
    "Greedy": "keras_s2s.decoding",
    "Sample": "keras_s2s.decoding",
    "Transformer": "keras_s2s.models",
    "AttentionSeq2Seq": "keras_s2s.models",
    "Seq2Seq": "keras_s2s.models",
    "TrainConfig": "keras_s2s.training.config",
    "train": "keras_s2s.training.loop",
    "import_marian": "keras_s2s.importers.marian",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_s2s' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
