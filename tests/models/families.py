"""Small instances of every model family, shared by the model tests.

Each entry is a function of keyword overrides (e.g. `dropout=0.3`) returning a fresh model.
"""

import functools

from keras_s2s.layers import LuongAttention
from keras_s2s.models import AttentionSeq2Seq, Seq2Seq, Transformer
from tests.layers.custom_attention import CosineAttention, SharpenedAttention

SOURCE_VOCAB, TARGET_VOCAB = 23, 19

_RNN = dict(embedding_dim=8, units=16)
_TRANSFORMER = dict(num_layers=2, d_model=16, d_ff=32, max_length=12)


def _family(model_class, **arguments):
    return functools.partial(model_class, SOURCE_VOCAB, TARGET_VOCAB, **arguments)


def _luong(attention, **arguments):
    """Luong's step order with a fresh `attention` layer (a layer joins one model only)."""
    return AttentionSeq2Seq(SOURCE_VOCAB, TARGET_VOCAB, **_RNN, attention=attention,
                            step_order="update_then_attend", **arguments)


FAMILIES = {
    "seq2seq_lstm": _family(Seq2Seq, **_RNN, num_layers=2),
    "seq2seq_gru_bidirectional": _family(Seq2Seq, **_RNN, cell="gru",
                                         bidirectional_encoder=True),
    "bahdanau": _family(AttentionSeq2Seq, **_RNN, num_layers=2),
    "bahdanau_gru": _family(AttentionSeq2Seq, **_RNN, cell="gru", bidirectional_encoder=False),
    "luong_general": lambda **kw: _luong(LuongAttention(), **kw),
    "luong_dot_input_feeding": lambda **kw: _luong(LuongAttention("dot"), input_feeding=True,
                                                   **kw),
    "user_score_attend_first": lambda **kw: _family(
        AttentionSeq2Seq, **_RNN, attention=CosineAttention())(**kw),
    "transformer": _family(Transformer, **_TRANSFORMER, num_heads=2),
    "transformer_user_attention": _family(Transformer, **_TRANSFORMER, num_heads=2,
                                          attention_class=SharpenedAttention),
    "transformer_prenorm_tied": _family(Transformer, **_TRANSFORMER, num_heads=4,
                                        normalize_first=True, tie_embeddings=True),
}

#: One family per training code path (parallel RNN decoder, the scanned attend-first step, the
#: scanned input-feeding step, the Transformer), for the tests that trace a whole `fit`.
FIT_FAMILIES = ("seq2seq_lstm", "bahdanau", "luong_dot_input_feeding", "transformer")
