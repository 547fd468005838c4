"""keras-s2s: sequence-to-sequence models in Keras 3, from training to serving."""

__version__ = "0.1.0"
