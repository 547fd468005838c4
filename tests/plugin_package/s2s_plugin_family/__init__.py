"""A keras-s2s family defined in its own package: a GRU encoder–decoder that reads the source
backwards (Sutskever et al., 2014, found that reversing the source helps a fixed-context RNN).

keras-s2s knows it only through the entry point `keras_s2s.architectures` in pyproject.toml;
importing this module imports no TensorFlow model (the class is named, not imported).
"""

from keras_s2s.architectures import Family


def optimizer(model, config):
    """Adam at the run's rate, 3e-3 by default."""
    import keras

    return keras.optimizers.Adam(config.learning_rate or 3e-3)


FAMILY = Family("s2s_plugin_family.model:ReversedSourceSeq2Seq",
                {"embedding_dim": 16, "units": 32, "cell": "gru", "dropout": 0.0},
                optimizer=optimizer)
