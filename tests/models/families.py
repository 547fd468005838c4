"""Small instances of every model family, shared by the model tests.

Each entry is a function of keyword overrides (e.g. `dropout=0.3`) returning a fresh model.
"""

import functools

from keras_s2s.models import AttentionSeq2Seq, Seq2Seq, Transformer

SOURCE_VOCAB, TARGET_VOCAB = 23, 19

_RNN = dict(embedding_dim=8, units=16)
_TRANSFORMER = dict(num_layers=2, d_model=16, d_ff=32, max_length=12)


def _family(model_class, **arguments):
    return functools.partial(model_class, SOURCE_VOCAB, TARGET_VOCAB, **arguments)


FAMILIES = {
    "seq2seq_lstm": _family(Seq2Seq, **_RNN, num_layers=2),
    "seq2seq_gru_bidirectional": _family(Seq2Seq, **_RNN, cell="gru",
                                         bidirectional_encoder=True),
    "bahdanau": _family(AttentionSeq2Seq, **_RNN, num_layers=2),
    "bahdanau_gru": _family(AttentionSeq2Seq, **_RNN, cell="gru", bidirectional_encoder=False),
    "luong_general": _family(AttentionSeq2Seq, **_RNN, attention="luong"),
    "luong_dot": _family(AttentionSeq2Seq, **_RNN, attention="luong", luong_score="dot"),
    "transformer": _family(Transformer, **_TRANSFORMER, num_heads=2),
    "transformer_prenorm_tied": _family(Transformer, **_TRANSFORMER, num_heads=4,
                                        normalize_first=True, tie_embeddings=True),
}
