"""Backend-agnostic Keras layers: attention, positional encoding and Transformer blocks."""

from keras_s2s.layers.attention import (BahdanauAttention, LuongAttention,
                                        ScaledDotProductAttention, ScoredAttention)
from keras_s2s.layers.feed_forward import PositionwiseFeedForward
from keras_s2s.layers.multi_head_attention import MultiHeadAttention
from keras_s2s.layers.positional_encoding import SinusoidalPositionalEncoding
from keras_s2s.layers.transformer import TransformerDecoderLayer, TransformerEncoderLayer

__all__ = [
    "ScoredAttention",
    "BahdanauAttention",
    "LuongAttention",
    "ScaledDotProductAttention",
    "MultiHeadAttention",
    "SinusoidalPositionalEncoding",
    "PositionwiseFeedForward",
    "TransformerEncoderLayer",
    "TransformerDecoderLayer",
]
