"""A keras-s2s family defined in its own package: a GRU encoder–decoder that reads the source
backwards (Sutskever et al., 2014, found that reversing the source helps a fixed-context RNN).

keras-s2s knows it only through the entry point `keras_s2s.architectures` in pyproject.toml;
importing this module imports no TensorFlow model (the class is named, not imported).
"""

from keras_s2s.architectures import Family


def optimizer(model, config, learning_rate):
    """Adam with gradients clipped (a plain GRU's gradients spike on long sources)."""
    import keras

    return keras.optimizers.Adam(learning_rate, clipnorm=1.0)


FAMILY = Family("s2s_plugin_family.model:ReversedSourceSeq2Seq",
                {"embedding_dim": 16, "units": 32, "cell": "gru", "dropout": 0.0},
                optimizer=optimizer, learning_rate=3e-3)
