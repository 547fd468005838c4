"""RNN encoder–decoders: the fixed context vector (Sutskever et al., 2014; Cho et al., 2014) and
attention that computes a new context at every step (Bahdanau et al., 2015; Luong et al., 2015).
"""

import keras
from keras import ops

from keras_s2s.layers.attention import BahdanauAttention, LuongAttention
from keras_s2s.checks import check_bool, check_choice, check_dropout, check_positive_int
from keras_s2s.models.base import Seq2SeqModel, padding_mask

CELLS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}


class _RNNEncoderDecoder(Seq2SeqModel):
    """Embeddings, a stacked (optionally bidirectional) RNN encoder, a stacked RNN decoder whose
    layer `i` starts from encoder layer `i`'s final state, and the output projection.

    The decoder's state is `{"rnn": [[h, c] or [h] per layer]}`, each `(B, units)`.
    """

    def __init__(self, source_vocab_size, target_vocab_size, embedding_dim=256, units=512,
                 cell="lstm", num_layers=1, dropout=0.1, bidirectional_encoder=False,
                 decoder_input_dim=None, **kwargs):
        super().__init__(source_vocab_size, target_vocab_size, **kwargs)
        check_positive_int("embedding_dim", embedding_dim)
        check_positive_int("units", units)
        check_positive_int("num_layers", num_layers)
        check_choice("cell", cell, CELLS)
        check_dropout(dropout)
        check_bool("bidirectional_encoder", bidirectional_encoder)
        if bidirectional_encoder and units % 2:
            raise ValueError(
                f"a bidirectional encoder splits units between its two directions, so units "
                f"must be even, got {units}"
            )
        self.embedding_dim = embedding_dim
        self.units = units
        self.cell = cell
        self.num_layers = num_layers
        self.dropout = dropout
        self.bidirectional_encoder = bidirectional_encoder

        policy = self.dtype_policy
        self.source_embedding = keras.layers.Embedding(
            source_vocab_size, embedding_dim, name="source_embedding", dtype=policy)
        self.target_embedding = keras.layers.Embedding(
            target_vocab_size, embedding_dim, name="target_embedding", dtype=policy)
        rnn = CELLS[cell]
        self.encoder_layers = []
        for index in range(num_layers):
            if bidirectional_encoder:
                layer = keras.layers.Bidirectional(
                    rnn(units // 2, return_sequences=True, return_state=True, dtype=policy),
                    name=f"encoder_rnn_{index}", dtype=policy)
            else:
                layer = rnn(units, return_sequences=True, return_state=True,
                            name=f"encoder_rnn_{index}", dtype=policy)
            self.encoder_layers.append(layer)
        self.decoder_layers = [
            rnn(units, return_sequences=True, return_state=True, name=f"decoder_rnn_{index}",
                dtype=policy)
            for index in range(num_layers)
        ]
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=policy)
        self.output_projection = keras.layers.Dense(target_vocab_size, name="output_projection",
                                                    dtype=policy)

    #: Size of the first decoder layer's input beyond the embedding (Bahdanau's context).
    _decoder_input_extra = 0
    #: Size of the features the output projection sees beyond the decoder output.
    _features_extra = 0

    def build(self, input_shape=None):
        """Create every weight from the sizes alone, before any loop traces the model (a
        sublayer first built inside `ops.scan` or a `while_loop` leaks tracers on JAX)."""
        self.source_embedding.build((None, None))
        self.target_embedding.build((None, None))
        for index, layer in enumerate(self.encoder_layers):
            layer.build((None, None, self.embedding_dim if index == 0 else self.units))
        for index, layer in enumerate(self.decoder_layers):
            width = self.embedding_dim + self._decoder_input_extra if index == 0 else self.units
            layer.build((None, None, width))
        self.output_projection.build((None, None, self.units + self._features_extra))
        self.built = True

    @property
    def _states_per_layer(self):
        return 2 if self.cell == "lstm" else 1

    def encode(self, source_ids, training=None):
        """`(B, S)` ids → `{"outputs": (B, S, units), "source_mask": (B, S), "rnn": states}`."""
        source_mask = padding_mask(source_ids)  # (B, S)
        x = self.dropout_layer(self.source_embedding(source_ids), training=training)
        final_states = []
        for layer in self.encoder_layers:
            outputs, *states = layer(x, mask=source_mask, training=training)  # (B, S, units)
            if self.bidirectional_encoder:  # [fw_h, (fw_c,) bw_h, (bw_c)] → [h, (c)]
                forward, backward = (states[:self._states_per_layer],
                                     states[self._states_per_layer:])
                states = [ops.concatenate([f, b], axis=-1) for f, b in zip(forward, backward)]
            final_states.append(states)
            x = self.dropout_layer(outputs, training=training)
        return {"outputs": x, "source_mask": source_mask, "rnn": final_states}

    def initial_state(self, memory, max_length):
        return {"rnn": memory["rnn"]}

    def _run_decoder_rnn(self, inputs, initial_states, training=None):
        """Whole sequence through the decoder stack: `(B, T, E)` → `(B, T, units)`, states."""
        x, final_states = inputs, []
        for layer, states in zip(self.decoder_layers, initial_states):
            outputs, *states = layer(x, initial_state=states, training=training)
            final_states.append(states)
            x = self.dropout_layer(outputs, training=training)
        return x, final_states

    def _step_decoder_rnn(self, inputs, states, keep=None):
        """One step through the decoder stack's cells: `(B, E)` → `(B, units)`, new states.

        `keep`: one dropout mask `(B, units)` per layer (already scaled by 1 / (1 − rate)),
        drawn outside the loop by `_step_dropout_masks`; None means no dropout.
        """
        x, new_states = inputs, []
        for index, (layer, layer_states) in enumerate(zip(self.decoder_layers, states)):
            x, layer_states = layer.cell(x, list(layer_states))
            new_states.append(list(layer_states))
            if keep is not None:
                x = x * keep[index]
        return x, new_states

    def _step_dropout_masks(self, time_major, training):
        """Dropout masks `num_layers × (T, B, units)` for a loop over the T steps of
        `time_major` `(T, B, E)`, or None.

        Drawn before the loop because a random draw inside `ops.scan` leaks the seed's tracer
        on JAX; each step still gets its own mask, as `Dropout` inside the loop would give.
        The ones are shaped from `time_major` so that their rank is static in a traced graph
        (TensorFlow's scan needs it).
        """
        if not training or not self.dropout:
            return None
        ones = ops.ones_like(time_major[..., :1], dtype=self.compute_dtype) * ops.ones(
            (self.units,), dtype=self.compute_dtype)  # (T, B, units)
        return [self.dropout_layer(ones, training=True) for _ in self.decoder_layers]

    def get_config(self):
        return {
            **super().get_config(),
            "embedding_dim": self.embedding_dim,
            "units": self.units,
            "cell": self.cell,
            "num_layers": self.num_layers,
            "dropout": self.dropout,
            "bidirectional_encoder": self.bidirectional_encoder,
        }


@keras.saving.register_keras_serializable(package="keras_s2s")
class Seq2Seq(_RNNEncoderDecoder):
    """Encoder–decoder with a fixed-size context vector, the seeds' first model.

    The encoder reads the source; its final state (the context vector) initialises the decoder,
    and is the only bridge between them: the decoder never looks at the encoder's outputs
    again, so everything about the source must fit into `units` numbers per layer.

    Args:
        source_vocab_size, target_vocab_size: vocabulary sizes (id 0 is padding).
        embedding_dim: token embedding size. units: RNN state size.
        cell: "lstm" or "gru". num_layers: stacked RNN layers on each side.
        dropout: on embeddings and between RNN layers.
        bidirectional_encoder: run the encoder both ways; the two final states are
            concatenated (each direction gets units/2).

    Inputs `((B, S), (B, T))` int ids → logits `(B, T, target_vocab_size)`.

    Example:
    >>> from keras import ops
    >>> from keras_s2s.models import Seq2Seq
    >>> model = Seq2Seq(100, 120, embedding_dim=16, units=32)
    >>> tuple(model((ops.ones((2, 7), "int32"), ops.ones((2, 5), "int32"))).shape)
    (2, 5, 120)

    Reference: Sutskever, Vinyals, Le. Sequence to Sequence Learning with Neural Networks. 2014.
    """

    has_attention = False

    def teacher_forced_logits(self, target_in_ids, memory, training=None):
        x = self.dropout_layer(self.target_embedding(target_in_ids), training=training)
        outputs, _ = self._run_decoder_rnn(x, memory["rnn"], training=training)  # (B, T, units)
        return self.output_projection(outputs)  # (B, T, V)

    def decode_step(self, token_ids, memory, state, step, training=None):
        x = self.target_embedding(token_ids)  # (B, E)
        outputs, states = self._step_decoder_rnn(x, state["rnn"])
        return self.output_projection(outputs), {"rnn": states}, None


@keras.saving.register_keras_serializable(package="keras_s2s")
class AttentionSeq2Seq(_RNNEncoderDecoder):
    """RNN encoder–decoder with attention: a new context vector at every decoder step.

    - `attention="bahdanau"` (attend, then update): the previous decoder state sₜ₋₁ queries the
      encoder outputs with additive attention; the context cₜ is fed into the RNN with the
      previous token, and the output layer sees [sₜ; cₜ]. Teacher forcing must step through
      time, because each step's query depends on the previous step.
    - `attention="luong"` (update, then attend): the RNN runs first; its output hₜ queries the
      encoder outputs (`luong_score` "dot", "general" or "concat"), and the output layer sees
      the attentional vector h̃ₜ = tanh(W_c [cₜ; hₜ]). Without input feeding, so teacher forcing
      runs the whole target sequence at once.

    Args:
        attention: "bahdanau" or "luong". luong_score: Luong's score function.
        attention_units: width of the additive score (Bahdanau); defaults to `units`.
        bidirectional_encoder: default True (as in Bahdanau et al.).
        Other arguments as for `Seq2Seq`.

    `decode_step` returns the attention weights `(B, S)` over source positions.

    References: Bahdanau, Cho, Bengio, ICLR 2015; Luong, Pham, Manning, EMNLP 2015.
    """

    ATTENTIONS = ("bahdanau", "luong")

    def __init__(self, source_vocab_size, target_vocab_size, attention="bahdanau",
                 luong_score="general", attention_units=None, bidirectional_encoder=True,
                 **kwargs):
        check_choice("attention", attention, self.ATTENTIONS)
        check_choice("luong_score", luong_score, LuongAttention.SCORES)
        check_positive_int("attention_units", attention_units, optional=True)
        super().__init__(source_vocab_size, target_vocab_size,
                         bidirectional_encoder=bidirectional_encoder, **kwargs)
        self.attention_type = attention
        self.luong_score = luong_score
        self.attention_units = attention_units
        policy = self.dtype_policy
        if attention == "bahdanau":
            self.attention = BahdanauAttention(attention_units or self.units, name="attention",
                                               dtype=policy)
        else:
            self.attention = LuongAttention(luong_score, name="attention", dtype=policy)
            self.attentional_dense = keras.layers.Dense(
                self.units, activation="tanh", use_bias=False, name="attentional_dense",
                dtype=policy)

    @property
    def _decoder_input_extra(self):
        return self.units if self.attention_type == "bahdanau" else 0  # [yₜ₋₁; cₜ]

    @property
    def _features_extra(self):
        return self.units if self.attention_type == "bahdanau" else 0  # [sₜ; cₜ]

    def build(self, input_shape=None):
        super().build(input_shape)
        memory_shape = (None, None, self.units)  # encoder outputs, either direction count
        if self.attention_type == "bahdanau":
            self.attention.build((None, self.units), memory_shape)
        else:
            self.attention.build((None, None, self.units), memory_shape)
            self.attentional_dense.build((None, None, 2 * self.units))

    def teacher_forced_logits(self, target_in_ids, memory, training=None):
        embedded = self.dropout_layer(self.target_embedding(target_in_ids), training=training)
        if self.attention_type == "luong":
            outputs, _ = self._run_decoder_rnn(embedded, memory["rnn"], training=training)
            features, _ = self._luong_features(outputs, memory, training)  # (B, T, units)
            return self.output_projection(features)

        # keras.ops.scan (TF backend) requires each step's output to match the carry, so the
        # carry holds the step's features as well and the stacked carries are the output.
        def step(carry, inputs_t):
            embedded_t, keep_t = inputs_t[:, :width], None
            if keep is not None:  # the step's masks ride along with its embedding
                keep_t = ops.split(inputs_t[:, width:], len(self.decoder_layers), axis=-1)
            features, states, _ = self._bahdanau_step(embedded_t, memory, carry["rnn"], keep_t)
            carry = {"rnn": states, "features": features}
            return carry, carry

        batch_size = ops.shape(target_in_ids)[0]
        feature_size = self.units + memory["outputs"].shape[-1]
        initial = {"rnn": memory["rnn"], "features": ops.zeros(
            (batch_size, feature_size), dtype=memory["outputs"].dtype)}
        time_major = ops.transpose(embedded, (1, 0, 2))  # (T, B, E)
        width = time_major.shape[-1]
        keep = self._step_dropout_masks(time_major, training)
        # One scanned tensor: Keras's TF scan cannot check the length of several whose
        # leading dimension is unknown in a traced graph.
        scanned = time_major if keep is None else ops.concatenate([time_major, *keep], axis=-1)
        _, stacked = ops.scan(step, initial, scanned)
        features = ops.transpose(stacked["features"], (1, 0, 2))  # (B, T, units + Dv)
        return self.output_projection(features)  # (B, T, V)

    def decode_step(self, token_ids, memory, state, step, training=None):
        embedded = self.target_embedding(token_ids)  # (B, E)
        if self.attention_type == "luong":
            outputs, states = self._step_decoder_rnn(embedded, state["rnn"])
            features, weights = self._luong_features(outputs, memory, training)
        else:
            features, states, weights = self._bahdanau_step(embedded, memory, state["rnn"])
        return self.output_projection(features), {"rnn": states}, weights

    def _bahdanau_step(self, embedded, memory, states, keep=None):
        """(B, E) previous token → features [sₜ; cₜ] (B, units + Dv), new states, weights (B, S).

        `keep`: the step's dropout masks (see `_step_dropout_masks`), or None.
        """
        query = states[-1][0]  # top layer's previous hidden state sₜ₋₁, (B, units)
        context, weights = self.attention(
            query, memory["outputs"], value_mask=memory["source_mask"],
            return_attention_scores=True)  # (B, Dv), (B, S)
        outputs, states = self._step_decoder_rnn(
            ops.concatenate([embedded, context], axis=-1), states, keep)
        return ops.concatenate([outputs, context], axis=-1), states, weights

    def _luong_features(self, outputs, memory, training):
        """RNN outputs hₜ (B, [T,] units) → h̃ₜ = tanh(W_c [cₜ; hₜ]) and the weights."""
        context, weights = self.attention(
            outputs, memory["outputs"], value_mask=memory["source_mask"],
            return_attention_scores=True, training=training)
        features = self.attentional_dense(ops.concatenate([context, outputs], axis=-1))
        return self.dropout_layer(features, training=training), weights

    def get_config(self):
        return {
            **super().get_config(),
            "attention": self.attention_type,
            "luong_score": self.luong_score,
            "attention_units": self.attention_units,
        }
