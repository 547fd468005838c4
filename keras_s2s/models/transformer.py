"""The Transformer encoder–decoder (Vaswani et al., 2017)."""

import math

import keras
from keras import ops

from keras_s2s.layers.masking import causal_mask
from keras_s2s.layers.multi_head_attention import MultiHeadAttention
from keras_s2s.layers.positional_encoding import LAYOUTS, SinusoidalPositionalEncoding
from keras_s2s.layers.transformer import (TransformerDecoderLayer, TransformerEncoderLayer,
                                          attention_class_from)
from keras_s2s.checks import (check_bool, check_choice, check_dropout, check_heads,
                              check_positive_int)
from keras_s2s.models.base import Seq2SeqModel, take_rows
from keras_s2s.tensor_ops import write_at


#: The feed-forward activations a `Transformer` offers (Keras names; "silu" is swish).
ACTIVATIONS = ("relu", "gelu", "silu")


@keras.saving.register_keras_serializable(package="keras_s2s")
class Transformer(Seq2SeqModel):
    """Encoder and decoder stacks of self-attention, cross-attention and feed-forward layers.

    Token embeddings are scaled by √d_model and added to sinusoidal positional encodings; the
    decoder's self-attention is causally masked; cross-attention reads the encoder output. The
    defaults are the paper's base model (6 layers, d_model 512, 8 heads, d_ff 2048, dropout
    0.1); small data wants far less.

    Args:
        source_vocab_size: int. Source vocabulary size (id 0 is padding).
        target_vocab_size: int. Target vocabulary size (id 0 is padding).
        num_layers: int, default 6. Layers in each stack.
        d_model: int, default 512. Model width.
        num_heads: int, default 8. Attention heads; `d_model` must divide by it.
        d_ff: int, default 2048. Feed-forward width.
        dropout: float, default 0.1. Residual, attention and embedding dropout.
        max_length: int, default 256. Longest source or target sequence (positional encoding
            range and the size of the decoding cache).
        normalize_first: bool, default False. Pre-norm layers plus a final layer norm on each
            stack, instead of the paper's post-norm.
        tie_embeddings: bool, default False. Use the target embedding matrix (transposed) as
            the output projection (Press & Wolf, 2017; the paper does this too): fewer
            parameters, better on small data.
        share_embeddings: bool, default False. One embedding matrix for source and target
            tokens, which needs one vocabulary for both (`source_vocab_size ==
            target_vocab_size`, `--shared-vocab`); with `tie_embeddings`, one matrix in all
            three places (three-way tying, fairseq's `--share-all-embeddings`).
        attention_class: a `keras_s2s.layers.MultiHeadAttention` subclass or its registered
            name, default `MultiHeadAttention`: the attention of every layer (see
            `TransformerEncoderLayer`).
        activation: one of `ACTIVATIONS`, default "relu": the feed-forward activation (Marian:
            "silu", i.e. swish; BART-style checkpoints: "gelu", the exact erf form).
        scale_embeddings: bool, default True. Multiply token embeddings by √d_model (False:
            Marian checkpoints with `scale_embedding: false`).
        positional_layout: "interleaved" (default) or "concatenated", the column order of the
            sinusoidal encoding (see `SinusoidalPositionalEncoding`; Marian: "concatenated").
        tied_output_bias: bool, default False. With `tie_embeddings`, add a learned bias to
            the logits (Marian's `final_logits_bias`); an untied projection has its own bias.
        pad_id, start_id, end_id: the special ids of the vocabulary (see `Seq2SeqModel`).

    Inputs `((B, S), (B, T))` int ids → logits `(B, T, target_vocab_size)`.

    Memory: `{"outputs": (B, S, d), "source_mask": (B, S), "cross_cache": L × (keys, values)}`,
    keys and values each `(B, H, S, d/H)`.
    State: `{"self_cache": L × (keys, values)}`, each `(B, H, max_length, d/H)` (one pair per
    decoder layer, so that a decoding step reads and writes each layer's cache without copying
    the others; heads before positions, so that attention reads them without copying either).
    A beam search's state adds `"ancestry"` `(B·k, max_length, k)` (`beam_state`): the
    cache rows stay where they were written, and each hypothesis reads position t from the
    row of its beam that its ancestry picks; reordering the hypotheses reorders that alone,
    not the whole cache every step.
    `decode_step` returns the last layer's cross-attention weights averaged over heads, (B, S).

    Example:
    >>> from keras import ops
    >>> from keras_s2s.models import Transformer
    >>> model = Transformer(100, 120, num_layers=1, d_model=16, num_heads=2, d_ff=32)
    >>> tuple(model((ops.ones((2, 7), "int32"), ops.ones((2, 5), "int32"))).shape)
    (2, 5, 120)

    References: Vaswani et al. [Attention Is All You Need](https://arxiv.org/abs/1706.03762).
    NeurIPS 2017; Press & Wolf. [Using the Output Embedding to Improve Language
    Models](https://arxiv.org/abs/1608.05859). EACL 2017.
    """

    def __init__(self, source_vocab_size, target_vocab_size, num_layers=6, d_model=512,
                 num_heads=8, d_ff=2048, dropout=0.1, max_length=256, normalize_first=False,
                 tie_embeddings=False, share_embeddings=False,
                 attention_class=MultiHeadAttention, activation="relu", scale_embeddings=True,
                 positional_layout="interleaved", tied_output_bias=False, **kwargs):
        super().__init__(source_vocab_size, target_vocab_size, **kwargs)
        for name, value in (("num_layers", num_layers), ("d_ff", d_ff),
                            ("max_length", max_length)):
            check_positive_int(name, value)
        check_heads(d_model, num_heads)
        check_dropout(dropout)
        check_bool("normalize_first", normalize_first)
        check_bool("tie_embeddings", tie_embeddings)
        check_bool("share_embeddings", share_embeddings)
        check_choice("activation", activation, ACTIVATIONS)
        check_bool("scale_embeddings", scale_embeddings)
        check_choice("positional_layout", positional_layout, LAYOUTS)
        check_bool("tied_output_bias", tied_output_bias)
        if tied_output_bias and not tie_embeddings:
            raise ValueError("tied_output_bias=True needs tie_embeddings=True (an untied output "
                             "projection has a bias of its own)")
        if share_embeddings and source_vocab_size != target_vocab_size:
            raise ValueError(
                f"share_embeddings needs one vocabulary for source and target, got "
                f"source_vocab_size={source_vocab_size} and target_vocab_size="
                f"{target_vocab_size} (train with --shared-vocab)")
        self.num_layers = num_layers
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_ff = d_ff
        self.dropout = dropout
        self.max_length = max_length
        self.normalize_first = normalize_first
        self.tie_embeddings = tie_embeddings
        self.share_embeddings = share_embeddings
        self.activation = activation
        self.scale_embeddings = scale_embeddings
        self.positional_layout = positional_layout
        self.tied_output_bias = tied_output_bias
        self.attention_class = attention_class_from(attention_class)

        policy = self.dtype_policy
        # Source first: `.keras` files and weight files hold the weights in creation order,
        # so this order is what every saved run loads with.
        self.source_embedding = keras.layers.Embedding(
            source_vocab_size, d_model, name="source_embedding", dtype=policy)
        self.target_embedding = self.source_embedding if share_embeddings else (
            keras.layers.Embedding(target_vocab_size, d_model, name="target_embedding",
                                   dtype=policy))
        self.positional_encoding = SinusoidalPositionalEncoding(
            max_length, layout=positional_layout, name="positional_encoding", dtype=policy)
        self.embedding_dropout = keras.layers.Dropout(dropout, dtype=policy)
        layer_args = dict(d_model=d_model, num_heads=num_heads, d_ff=d_ff, dropout=dropout,
                          normalize_first=normalize_first, activation=activation,
                          attention_class=self.attention_class, dtype=policy)
        self.encoder_layers = [TransformerEncoderLayer(**layer_args, name=f"encoder_layer_{i}")
                               for i in range(num_layers)]
        self.decoder_layers = [TransformerDecoderLayer(**layer_args, name=f"decoder_layer_{i}")
                               for i in range(num_layers)]
        if normalize_first:
            self.encoder_norm = keras.layers.LayerNormalization(
                epsilon=1e-5, name="encoder_norm", dtype=policy)
            self.decoder_norm = keras.layers.LayerNormalization(
                epsilon=1e-5, name="decoder_norm", dtype=policy)
        if not tie_embeddings:
            self.output_projection = keras.layers.Dense(
                target_vocab_size, name="output_projection", dtype=policy)

    def build(self, input_shape=None):
        """Create every weight from the sizes alone, before any decoding loop traces the model
        (a sublayer first built inside a `while_loop` leaks tracers on JAX)."""
        sequence = (None, None, self.d_model)
        self.source_embedding.build((None, None))
        self.target_embedding.build((None, None))
        self.positional_encoding.build(sequence)
        for layer in self.encoder_layers:
            layer.build(sequence)
        for layer in self.decoder_layers:
            layer.build(sequence, sequence)
        if self.normalize_first:
            self.encoder_norm.build(sequence)
            self.decoder_norm.build(sequence)
        if not self.tie_embeddings:
            self.output_projection.build(sequence)
        if self.tied_output_bias:
            self.output_bias = self.add_weight(name="output_bias", shape=(
                self.target_vocab_size,), initializer="zeros")
        self.built = True

    def _embed(self, embedding, token_ids, start_index=0, training=None):
        """(B, T) ids → (B, T, d): embedding (· √d) + positional encoding, then dropout."""
        x = embedding(token_ids)
        if self.scale_embeddings:
            x = x * ops.cast(math.sqrt(self.d_model), embedding.compute_dtype)
        x = x + self.positional_encoding(x, start_index=start_index)
        return self.embedding_dropout(x, training=training)

    def _logits(self, x):
        if self.normalize_first:
            x = self.decoder_norm(x)
        if self.tie_embeddings:
            logits = ops.matmul(x, ops.transpose(ops.cast(
                self.target_embedding.embeddings, x.dtype)))
            if self.tied_output_bias:
                logits = logits + ops.cast(self.output_bias, x.dtype)
            return logits
        return self.output_projection(x)

    def encode(self, source_ids, training=None):
        source_mask = self.padding_mask(source_ids)  # (B, S)
        x = self._embed(self.source_embedding, source_ids, training=training)  # (B, S, d)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=source_mask, training=training)
        if self.normalize_first:
            x = self.encoder_norm(x)
        cross_cache = tuple(layer.compute_cross_attention_cache(x)
                            for layer in self.decoder_layers)  # L × 2 × (B, H, S, d/H)
        return {"outputs": x, "source_mask": source_mask, "cross_cache": cross_cache}

    def _decode_all(self, target_in_ids, memory, training=None, return_weights=False):
        """Teacher-forced decoder stack → `(outputs (B, T, d), L × (B, H, T, S) weights)`, the
        weights only when asked for (else an empty list: training never materialises them)."""
        target_mask = self.target_padding_mask(target_in_ids)  # (B, T)
        x = self._embed(self.target_embedding, target_in_ids, training=training)  # (B, T, d)
        weights = []
        for index, layer in enumerate(self.decoder_layers):
            x = layer(x, decoder_padding_mask=target_mask,
                      encoder_padding_mask=memory["source_mask"],
                      cross_attention_cache=memory["cross_cache"][index],
                      return_attention_scores=return_weights, training=training)
            if return_weights:
                x, layer_weights = x
                weights.append(layer_weights)
        return x, weights

    def teacher_forced_logits(self, target_in_ids, memory, training=None):
        x, _ = self._decode_all(target_in_ids, memory, training=training)
        return self._logits(x)  # (B, T, V)

    def cross_attention_heads(self, source_ids, target_in_ids):
        """Every layer's and head's cross-attention, `(B, L, H, T, S)`: the causal decoder
        gives the same weights teacher-forced as step by step."""
        _, weights = self._decode_all(target_in_ids, self.encode(source_ids),
                                      return_weights=True)
        return ops.stack(weights, axis=1)

    def initial_state(self, memory, max_length):
        if max_length > self.max_length:
            raise ValueError(
                f"max_length={max_length} exceeds the model's max_length={self.max_length}")
        batch_size = ops.shape(memory["outputs"])[0]
        head_dim = self.d_model // self.num_heads
        shape = (batch_size, self.num_heads, max_length, head_dim)
        dtype = memory["outputs"].dtype
        return {"self_cache": tuple((ops.zeros(shape, dtype), ops.zeros(shape, dtype))
                                    for _ in range(self.num_layers))}

    def beam_state(self, state, width):
        """`state` with `"ancestry"`, all zeros (see the class); unchanged for an attention
        class with its own `_compute_attention`, which reads the cache reordered."""
        if any(type(layer.self_attention)._compute_attention
               is not MultiHeadAttention._compute_attention for layer in self.decoder_layers):
            return state
        keys = state["self_cache"][0][0]
        return {**state, "ancestry": ops.zeros(
            (ops.shape(keys)[0], ops.shape(keys)[2], width), keys.dtype)}

    def reorder_state(self, state, rows):
        if "ancestry" not in state:
            return take_rows(state, rows)
        return {**state, "ancestry": ops.take(state["ancestry"], rows, axis=0)}

    def decode_step(self, token_ids, memory, state, step, training=None):
        x = self._embed(self.target_embedding, ops.expand_dims(token_ids, 1), start_index=step,
                        training=training)  # (B, 1, d)
        # The masks of this step, built once for every layer: the cache positions written so
        # far (1, 1, T_max), and the real source tokens (B, 1, S).
        keys, _ = state["self_cache"][0]
        written = causal_mask(1, ops.shape(keys)[2], query_offset=step)
        source = ops.expand_dims(memory["source_mask"], 1)
        ancestry = state.get("ancestry")
        if ancestry is not None:  # this step's keys and values go to each hypothesis's own row
            width = ops.shape(ancestry)[-1]
            own = ops.equal(ops.arange(ops.shape(ancestry)[0])[:, None] % width,
                            ops.arange(width)[None, :])
            ancestry = write_at(ancestry, ops.cast(own, ancestry.dtype)[:, None], step, axis=1)
        caches = []
        for index, layer in enumerate(self.decoder_layers):
            last = index == self.num_layers - 1  # only the last layer's weights are returned
            outputs = layer(
                x, decoder_attention_mask=written, encoder_attention_mask=source,
                use_causal_mask=False, self_attention_cache=state["self_cache"][index],
                self_attention_cache_update_index=step,
                cross_attention_cache=memory["cross_cache"][index],
                self_attention_cache_ancestry=ancestry,
                return_attention_scores=last, training=training)
            x, weights, cache = outputs if last else (outputs[0], None, outputs[1])
            caches.append(cache)
        logits = self._logits(x[:, 0])  # (B, V)
        attention = ops.mean(weights[:, :, 0, :], axis=1)  # (B, S), last layer, mean of heads
        new_state = {"self_cache": tuple(caches)}
        if ancestry is not None:
            new_state["ancestry"] = ancestry
        return logits, new_state, attention

    @property
    def max_decode_length(self):
        return self.max_length  # the positional encoding's range

    def get_config(self):
        return {
            **super().get_config(),
            "num_layers": self.num_layers,
            "d_model": self.d_model,
            "num_heads": self.num_heads,
            "d_ff": self.d_ff,
            "dropout": self.dropout,
            "max_length": self.max_length,
            "normalize_first": self.normalize_first,
            "tie_embeddings": self.tie_embeddings,
            "share_embeddings": self.share_embeddings,
            "attention_class": keras.saving.get_registered_name(self.attention_class),
            "activation": self.activation,
            "scale_embeddings": self.scale_embeddings,
            "positional_layout": self.positional_layout,
            "tied_output_bias": self.tied_output_bias,
        }
