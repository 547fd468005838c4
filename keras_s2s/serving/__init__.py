"""Serving: a TF Serving-compatible REST and gRPC server (`keras-s2s serve`) and its client.

The client is importable without TensorFlow; the server and its options are loaded on first use,
so `from keras_s2s.serving import Client` stays light. Nothing here imports Keras.
"""

from keras_s2s.serving.client import Client, ServingRequestError

__all__ = [
    "Client",
    "ServingRequestError",
    "ModelServer",
    "ServerOptions",
    "ModelConfig",
    "BatchingParameters",
]

_LAZY = {
    "ModelServer": "keras_s2s.serving.server",
    "ServerOptions": "keras_s2s.serving.config",
    "ModelConfig": "keras_s2s.serving.config",
    "BatchingParameters": "keras_s2s.serving.config",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
