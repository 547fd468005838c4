"""Every public layer through the keras-hub-style harness (`tests/layers/harness.py`)."""

import numpy as np
import pytest

from keras_s2s import layers
from tests.layers.custom_attention import CosineAttention, SharpenedAttention
from tests.layers.harness import run_layer_test

B, TQ, TV, D = 2, 3, 5, 8
QUERY = np.random.default_rng(0).normal(size=(B, TQ, D)).astype("float32")
VALUE = np.random.default_rng(1).normal(size=(B, TV, D)).astype("float32")
STEP = QUERY[:, 0]  # one decoder step, (B, D)

CASES = {
    "bahdanau_step": (lambda **kw: layers.BahdanauAttention(4, **kw), (STEP, VALUE),
                      dict(return_attention_scores=True), ((B, D), (B, TV))),
    "bahdanau": (lambda **kw: layers.BahdanauAttention(4, **kw), (QUERY, VALUE), {},
                 (B, TQ, D)),
    "luong_general": (lambda **kw: layers.LuongAttention("general", scale=True, **kw),
                      (QUERY, VALUE), dict(return_attention_scores=True),
                      ((B, TQ, D), (B, TQ, TV))),
    "luong_concat": (lambda **kw: layers.LuongAttention("concat", units=5, **kw),
                     (STEP, VALUE), {}, (B, D)),
    "scaled_dot_product": (lambda **kw: layers.ScaledDotProductAttention(**kw),
                           (QUERY, VALUE), dict(return_attention_scores=True),
                           ((B, TQ, D), (B, TQ, TV))),
    "user_score": (lambda **kw: CosineAttention(**kw), (STEP, VALUE),
                   dict(return_attention_scores=True), ((B, D), (B, TV))),
    "user_multi_head": (lambda **kw: SharpenedAttention(2, 4, **kw), (QUERY, VALUE),
                        dict(return_attention_scores=True), ((B, TQ, D), (B, 2, TQ, TV))),
    "multi_head": (lambda **kw: layers.MultiHeadAttention(2, 4, value_dim=3, output_dim=6, **kw),
                   (QUERY, VALUE), dict(return_attention_scores=True),
                   ((B, TQ, 6), (B, 2, TQ, TV))),
    "positional_encoding": (lambda **kw: layers.SinusoidalPositionalEncoding(16, **kw),
                            (QUERY,), {}, (B, TQ, D)),
    "feed_forward": (lambda **kw: layers.PositionwiseFeedForward(8, 16, activation="gelu", **kw),
                     (QUERY,), {}, (B, TQ, D)),
    "encoder_layer": (lambda **kw: layers.TransformerEncoderLayer(8, 2, 16, **kw), (QUERY,),
                      dict(return_attention_scores=True), ((B, TQ, D), (B, 2, TQ, TQ))),
    "encoder_layer_prenorm": (
        lambda **kw: layers.TransformerEncoderLayer(8, 2, 16, normalize_first=True, **kw),
        (QUERY,), {}, (B, TQ, D)),
    "decoder_layer": (lambda **kw: layers.TransformerDecoderLayer(8, 2, 16, dropout=0.1, **kw),
                      (QUERY, VALUE), dict(return_attention_scores=True),
                      ((B, TQ, D), (B, 2, TQ, TV))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer(name):
    make_layer, inputs, call_kwargs, shapes = CASES[name]
    run_layer_test(make_layer, inputs, call_kwargs, shapes)


def test_every_public_layer_is_covered():
    """Each public layer (the base `ScoredAttention` through a user's subclass) has a case."""
    covered = {cls.__name__ for name in CASES for cls in type(CASES[name][0]()).__mro__}
    assert set(layers.__all__) <= covered
