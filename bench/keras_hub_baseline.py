"""The keras-hub baseline: our Transformer's architecture built from keras-hub layers.

Embeddings · √d + sinusoidal positions, `keras_hub.layers.TransformerEncoder`/`TransformerDecoder`
stacks (post-norm, ReLU, like ours) and a Dense output layer, so parameter counts match ours
exactly and any speed difference is the layers' implementation.
"""

import math

import keras
import keras_hub

from keras_s2s.special_tokens import PAD_ID


class KerasHubTransformer(keras.Model):
    """`((B, S), (B, T))` ids → `(B, T, V)` logits, like `keras_s2s.models.Transformer` with
    `normalize_first=False, tie_embeddings=False` (also its embedding dropout)."""

    def __init__(self, vocab_size, num_layers, d_model, num_heads, d_ff, dropout, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.num_heads, self.num_layers = d_model, num_heads, num_layers
        self.source_embedding = keras.layers.Embedding(vocab_size, d_model)
        self.target_embedding = keras.layers.Embedding(vocab_size, d_model)
        self.positions = keras_hub.layers.SinePositionEncoding()
        self.embedding_dropout = keras.layers.Dropout(dropout)
        self.encoders = [keras_hub.layers.TransformerEncoder(d_ff, num_heads, dropout=dropout)
                         for _ in range(num_layers)]
        self.decoders = [keras_hub.layers.TransformerDecoder(d_ff, num_heads, dropout=dropout)
                         for _ in range(num_layers)]
        self.output_projection = keras.layers.Dense(vocab_size)

    def embed(self, embedding, token_ids, start_index=0, training=None):
        x = embedding(token_ids) * math.sqrt(self.d_model)
        return self.embedding_dropout(x + self.positions(x, start_index=start_index),
                                      training=training)

    def encode(self, source_ids, training=None):
        x = self.embed(self.source_embedding, source_ids, training=training)  # (B, S, d)
        for encoder in self.encoders:
            x = encoder(x, padding_mask=source_ids != PAD_ID, training=training)
        return x

    def call(self, inputs, training=None):
        source_ids, target_ids = inputs
        encoded = self.encode(source_ids, training=training)
        x = self.embed(self.target_embedding, target_ids, training=training)  # (B, T, d)
        for decoder in self.decoders:
            x = decoder(x, encoded, decoder_padding_mask=target_ids != PAD_ID,
                        encoder_padding_mask=source_ids != PAD_ID, training=training)
        return self.output_projection(x)  # (B, T, V)
