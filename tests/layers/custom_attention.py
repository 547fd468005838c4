"""Attention written the way a user extends the package: through its public extension points."""

import math

import keras
from keras import ops

from keras_s2s.layers import MultiHeadAttention, ScoredAttention
from keras_s2s.layers.masking import masked_softmax


@keras.saving.register_keras_serializable(package="tests")
class CosineAttention(ScoredAttention):
    """score(q, k) = cos(q, k) / temperature: a new single-head score is one method."""

    def __init__(self, temperature=0.1, **kwargs):
        super().__init__(**kwargs)
        self.temperature = temperature

    def score(self, query, key):
        query = query / (ops.norm(query, axis=-1, keepdims=True) + 1e-6)
        key = key / (ops.norm(key, axis=-1, keepdims=True) + 1e-6)
        return ops.matmul(query, ops.swapaxes(key, -1, -2)) / self.temperature

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="tests")
class SharpenedAttention(MultiHeadAttention):
    """Scores doubled before the softmax: a new multi-head variant is one hook.

    Equivalent to the plain layer with its query projection doubled, which is how the tests
    check that the hook is what runs.
    """

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False):
        scores = ops.einsum("bhqd,bhkd->bhqk", query, key) * (2.0 / math.sqrt(self.key_dim))
        weights = masked_softmax(scores, attention_mask)
        return ops.einsum("bhqk,bhkd->bhqd", weights, value), weights
