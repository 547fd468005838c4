"""A keras-s2s model family defined in its own package: `ReversedSourceGRU`.

keras-s2s knows it only through the entry point `keras_s2s.architectures` in pyproject.toml;
importing this module imports no model (the class is named, not imported).
"""

from keras_s2s.architectures import Family


def optimizer(model, config, learning_rate):
    """AdamW with gradients clipped (a plain GRU's gradients spike on long sources)."""
    import keras

    return keras.optimizers.AdamW(learning_rate, weight_decay=1e-4, clipnorm=1.0)


FAMILY = Family("s2s_plugin_family.model:ReversedSourceGRU",
                presets={"embedding_dim": 16, "units": 32},
                optimizer=optimizer, learning_rate=3e-3)
