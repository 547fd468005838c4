"""`ReversedSourceSeq2Seq`: a new `Seq2SeqModel` subclass keeping the contract of
`keras_s2s.models.base`, imported only when the family is first used."""

import keras
from keras import ops

from keras_s2s.models import Seq2Seq
from keras_s2s.special_tokens import PAD_ID


@keras.saving.register_keras_serializable(package="s2s_plugin_family")
class ReversedSourceSeq2Seq(Seq2Seq):
    """`Seq2Seq` fed each source row backwards (padding stays at the end)."""

    def encode(self, source_ids, training=None):
        lengths = ops.sum(ops.cast(ops.not_equal(source_ids, PAD_ID), "int32"), axis=1)  # (B,)
        positions = ops.arange(ops.shape(source_ids)[1], dtype="int32")[None, :]  # (1, S)
        backwards = lengths[:, None] - 1 - positions  # (B, S): negative on padding
        reversed_ids = ops.where(
            backwards >= 0, ops.take_along_axis(source_ids, ops.maximum(backwards, 0), axis=1),
            PAD_ID)
        return super().encode(reversed_ids, training=training)
