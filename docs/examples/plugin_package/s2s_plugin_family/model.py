"""`ReversedSourceGRU`: a model family written from the contract of `keras_s2s.models.base`,
imported only when the family is first used (its entry point names it as a string)."""

import keras
from keras import ops

from keras_s2s.models.base import Seq2SeqModel, padding_mask
from keras_s2s.special_tokens import PAD_ID


def reverse_source(source_ids):
    """`(B, S)` ids with each row's tokens in reverse order; padding stays at the end."""
    lengths = ops.sum(ops.cast(padding_mask(source_ids), "int32"), axis=1)  # (B,)
    positions = ops.arange(ops.shape(source_ids)[1], dtype="int32")[None, :]  # (1, S)
    backwards = lengths[:, None] - 1 - positions  # (B, S): negative on padding
    return ops.where(backwards >= 0,
                     ops.take_along_axis(source_ids, ops.maximum(backwards, 0), axis=1), PAD_ID)


@keras.saving.register_keras_serializable(package="s2s_plugin_family")
class ReversedSourceGRU(Seq2SeqModel):
    """A GRU encoder–decoder that reads each source backwards (Sutskever et al., 2014, found
    that reversing the source helps a fixed-context RNN); the encoder's final state is the
    decoder's initial state.

    Args:
        source_vocab_size: int. Source vocabulary size (id 0 is padding).
        target_vocab_size: int. Target vocabulary size (id 0 is padding).
        embedding_dim: int, default 16. Token embedding size.
        units: int, default 32. GRU state size.
    """

    has_attention = False  # decode_step returns no attention weights

    def __init__(self, source_vocab_size, target_vocab_size, embedding_dim=16, units=32,
                 **kwargs):
        super().__init__(source_vocab_size, target_vocab_size, **kwargs)
        self.embedding_dim = embedding_dim
        self.units = units
        policy = self.dtype_policy  # mixed precision reaches every sublayer
        self.source_embedding = keras.layers.Embedding(
            source_vocab_size, embedding_dim, name="source_embedding", dtype=policy)
        self.target_embedding = keras.layers.Embedding(
            target_vocab_size, embedding_dim, name="target_embedding", dtype=policy)
        self.encoder = keras.layers.GRU(units, return_state=True, name="encoder", dtype=policy)
        self.decoder = keras.layers.GRU(units, return_sequences=True, return_state=True,
                                        name="decoder", dtype=policy)
        self.output_projection = keras.layers.Dense(target_vocab_size, name="output_projection",
                                                    dtype=policy)

    def build(self, input_shape=None):
        """Every weight from the sizes alone, before decoding's loop traces the model."""
        self.source_embedding.build((None, None))
        self.target_embedding.build((None, None))
        self.encoder.build((None, None, self.embedding_dim))
        self.decoder.build((None, None, self.embedding_dim))
        self.output_projection.build((None, self.units))
        self.built = True

    def encode(self, source_ids, training=None):
        """`(B, S)` ids → `{"context": (B, units)}`, the encoder's final state."""
        source_ids = reverse_source(source_ids)
        _, context = self.encoder(self.source_embedding(source_ids),
                                  mask=padding_mask(source_ids), training=training)
        return {"context": context}

    def teacher_forced_logits(self, target_in_ids, memory, training=None):
        """`(B, T)` decoder inputs → `(B, T, V)` logits: the whole GRU layer, one call."""
        outputs, _ = self.decoder(self.target_embedding(target_in_ids),
                                  initial_state=memory["context"], training=training)
        return self.output_projection(outputs)

    def initial_state(self, memory, max_length):
        return {"decoder": memory["context"]}

    def decode_step(self, token_ids, memory, state, step, training=None):
        """One token `(B,)` → logits `(B, V)`: the decoder's cell, stepped once (never the GRU
        layer on a one-token sequence, which TFLite cannot convert)."""
        outputs, (new_state,) = self.decoder.cell(self.target_embedding(token_ids),
                                                  [state["decoder"]], training=training)
        return self.output_projection(outputs), {"decoder": new_state}, None

    def get_config(self):
        return {**super().get_config(), "embedding_dim": self.embedding_dim,
                "units": self.units}
