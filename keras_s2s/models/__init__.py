"""Encoder–decoder model families sharing one contract (see `keras_s2s.models.base`)."""

from keras_s2s.models.base import Seq2SeqModel
from keras_s2s.models.rnn import AttentionSeq2Seq, Seq2Seq
from keras_s2s.models.transformer import Transformer

__all__ = ["Seq2SeqModel", "Seq2Seq", "AttentionSeq2Seq", "Transformer"]
