"""RNN encoder–decoders: the fixed context vector (Sutskever et al., 2014; Cho et al., 2014) and
attention that computes a new context at every step (Bahdanau et al., 2015; Luong et al., 2015).
"""

import keras
from keras import ops

from keras_s2s.layers.attention import BahdanauAttention, ScoredAttention
from keras_s2s.checks import check_bool, check_choice, check_dropout, check_positive_int
from keras_s2s.models.base import Seq2SeqModel

CELLS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}


class _RNNEncoderDecoder(Seq2SeqModel):
    """Embeddings, a stacked (optionally bidirectional) RNN encoder, a stacked RNN decoder whose
    layer `i` starts from encoder layer `i`'s final state, and the output projection.

    The decoder's state is `{"rnn": [[h, c] or [h] per layer]}`, each `(B, units)`.
    """

    def __init__(self, source_vocab_size, target_vocab_size, embedding_dim=256, units=512,
                 cell="lstm", num_layers=1, dropout=0.1, bidirectional_encoder=False, **kwargs):
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
        source_mask = self.padding_mask(source_ids)  # (B, S)
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
        source_vocab_size: int. Source vocabulary size (id 0 is padding).
        target_vocab_size: int. Target vocabulary size (id 0 is padding).
        embedding_dim: int, default 256. Token embedding size.
        units: int, default 512. RNN state size.
        cell: str, default "lstm". "lstm" or "gru".
        num_layers: int, default 1. Stacked RNN layers on each side.
        dropout: float, default 0.1. On embeddings and between RNN layers.
        bidirectional_encoder: bool, default False. Run the encoder both ways; the two final
            states are concatenated (each direction gets units/2).

    Inputs `((B, S), (B, T))` int ids → logits `(B, T, target_vocab_size)`.

    Example:
    >>> from keras import ops
    >>> from keras_s2s.models import Seq2Seq
    >>> model = Seq2Seq(100, 120, embedding_dim=16, units=32)
    >>> tuple(model((ops.ones((2, 7), "int32"), ops.ones((2, 5), "int32"))).shape)
    (2, 5, 120)

    References: Sutskever, Vinyals, Le. [Sequence to Sequence Learning with Neural
    Networks](https://arxiv.org/abs/1409.3215). NeurIPS 2014; Cho et al. [Learning Phrase
    Representations using RNN Encoder–Decoder](https://arxiv.org/abs/1406.1078). EMNLP 2014.
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

    The attention layer and the step order are arguments, so Bahdanau's and Luong's models —
    and a user's — are one class:

    - `step_order="attend_then_update"` (Bahdanau): the previous decoder state sₜ₋₁ queries
      the encoder outputs; the context cₜ goes into the RNN with the previous token, and the
      output layer sees [sₜ; cₜ].
    - `step_order="update_then_attend"` (Luong): the RNN runs first; its output hₜ queries
      the encoder outputs, and the output layer sees the attentional vector
      h̃ₜ = tanh(W_c [cₜ; hₜ]). With `input_feeding`, h̃ₜ₋₁ joins the next step's input, so
      the decoder knows what it attended to before (Luong et al., §3.3).

    Teacher forcing runs the whole target sequence at once when no step depends on the
    previous step's attention (update-then-attend without input feeding); otherwise it steps
    through time with `keras.ops.scan`. Inside that loop the attention layer's own dropout is
    off (a random draw in a scan leaks on JAX); the decoder's step dropout masks are drawn
    before it.

    Args:
        source_vocab_size: int. Source vocabulary size (id 0 is padding).
        target_vocab_size: int. Target vocabulary size (id 0 is padding).
        attention: a `keras_s2s.layers.ScoredAttention` (any of ours or a user's subclass),
            or its serialized config (a dict, as `keras.layers.serialize` writes it — what a
            run's `config.json` holds); default `BahdanauAttention(units)`. It is called as
            `attention(query, encoder_outputs, value_mask=, return_attention_scores=True)`
            with a `(B, units)` query in the step loop and a `(B, T, units)` one otherwise.
        step_order: str, default "attend_then_update". Or "update_then_attend".
        input_feeding: bool, default False. Luong's input feeding (needs
            `step_order="update_then_attend"`).
        bidirectional_encoder: bool, default True (as in Bahdanau et al.).
        embedding_dim, units, cell, num_layers, dropout: as for `Seq2Seq`.

    Shapes: inputs `((B, S), (B, T))` int ids → logits `(B, T, target_vocab_size)`;
    `decode_step` returns the attention weights `(B, S)` over source positions. The state is
    `{"rnn": ...}`, plus `{"feed": h̃ₜ₋₁ (B, units)}` with input feeding.

    Example:
    >>> from keras import ops
    >>> from keras_s2s.layers import LuongAttention
    >>> from keras_s2s.models import AttentionSeq2Seq
    >>> model = AttentionSeq2Seq(100, 120, attention=LuongAttention("dot"),
    ...                          step_order="update_then_attend", input_feeding=True,
    ...                          embedding_dim=16, units=32)
    >>> tuple(model((ops.ones((2, 7), "int32"), ops.ones((2, 5), "int32"))).shape)
    (2, 5, 120)

    References: Bahdanau, Cho, Bengio. [Neural Machine Translation by Jointly Learning to
    Align and Translate](https://arxiv.org/abs/1409.0473). ICLR 2015; Luong, Pham, Manning.
    [Effective Approaches to Attention-based Neural Machine
    Translation](https://arxiv.org/abs/1508.04025). EMNLP 2015.
    """

    STEP_ORDERS = ("attend_then_update", "update_then_attend")

    def __init__(self, source_vocab_size, target_vocab_size, attention=None,
                 step_order="attend_then_update", input_feeding=False,
                 bidirectional_encoder=True, **kwargs):
        check_choice("step_order", step_order, self.STEP_ORDERS)
        check_bool("input_feeding", input_feeding)
        if input_feeding and step_order != "update_then_attend":
            raise ValueError("input_feeding feeds the attentional vector h̃ₜ₋₁ of Luong's "
                             "step order; it needs step_order='update_then_attend'")
        super().__init__(source_vocab_size, target_vocab_size,
                         bidirectional_encoder=bidirectional_encoder, **kwargs)
        self.step_order = step_order
        self.input_feeding = input_feeding
        self.attention = _attention_layer(attention, self.units, self.dtype_policy)
        if step_order == "update_then_attend":
            self.attentional_dense = keras.layers.Dense(
                self.units, activation="tanh", use_bias=False, name="attentional_dense",
                dtype=self.dtype_policy)

    @property
    def _attends_first(self):
        return self.step_order == "attend_then_update"

    @property
    def _decoder_input_extra(self):
        # [yₜ₋₁; cₜ] (attend first), [yₜ₋₁; h̃ₜ₋₁] (input feeding), or yₜ₋₁ alone.
        return self.units if self._attends_first or self.input_feeding else 0

    @property
    def _features_extra(self):
        return self.units if self._attends_first else 0  # [sₜ; cₜ]

    def build(self, input_shape=None):
        super().build(input_shape)
        memory_shape = (None, None, self.units)  # encoder outputs, either direction count
        self.attention.build((None, self.units), memory_shape)
        if not self._attends_first:
            self.attentional_dense.build((None, None, 2 * self.units))

    def initial_state(self, memory, max_length):
        state = {"rnn": memory["rnn"]}
        if self.input_feeding:
            batch_size = ops.shape(memory["outputs"])[0]
            state["feed"] = ops.zeros((batch_size, self.units), dtype=memory["outputs"].dtype)
        return state

    def teacher_forced_logits(self, target_in_ids, memory, training=None):
        embedded = self.dropout_layer(self.target_embedding(target_in_ids), training=training)
        if not (self._attends_first or self.input_feeding):  # no step needs the last one's
            outputs, _ = self._run_decoder_rnn(embedded, memory["rnn"], training=training)
            features, _ = self._attentional(outputs, memory, training)  # (B, T, units)
            return self._output_logits(features, training)

        # keras.ops.scan (TF backend) requires each step's output to match the carry, so the
        # carry holds the step's features as well and the stacked carries are the output.
        def step(carry, inputs_t):
            embedded_t, keep_t = inputs_t[:, :width], None
            if keep is not None:  # the step's masks ride along with its embedding
                keep_t = ops.split(inputs_t[:, width:], len(self.decoder_layers), axis=-1)
            features, state, _ = self._step(embedded_t, memory, carry["state"], keep_t)
            carry = {"state": state, "features": features}
            return carry, carry

        batch_size = ops.shape(target_in_ids)[0]
        feature_size = self.units + self._features_extra
        initial = {"state": self.initial_state(memory, None), "features": ops.zeros(
            (batch_size, feature_size), dtype=memory["outputs"].dtype)}
        time_major = ops.transpose(embedded, (1, 0, 2))  # (T, B, E)
        width = time_major.shape[-1]
        keep = self._step_dropout_masks(time_major, training)
        # One scanned tensor: Keras's TF scan cannot check the length of several whose
        # leading dimension is unknown in a traced graph.
        scanned = time_major if keep is None else ops.concatenate([time_major, *keep], axis=-1)
        _, stacked = ops.scan(step, initial, scanned)
        features = ops.transpose(stacked["features"], (1, 0, 2))  # (B, T, features)
        return self._output_logits(features, training)

    def _output_logits(self, features, training):
        """Logits from the step features; dropout on h̃ₜ (Luong), where [sₜ; cₜ] has had its
        own in the RNN (Bahdanau)."""
        if not self._attends_first:
            features = self.dropout_layer(features, training=training)
        return self.output_projection(features)

    def decode_step(self, token_ids, memory, state, step, training=None):
        features, state, weights = self._step(self.target_embedding(token_ids), memory, state)
        return self.output_projection(features), state, weights

    def _step(self, embedded, memory, state, keep=None):
        """One decoder step: (B, E) previous token → features (B, units [+ Dv]), the new
        state and the attention weights (B, S).

        `keep`: the step's dropout masks (see `_step_dropout_masks`), or None.
        """
        if self._attends_first:
            query = state["rnn"][-1][0]  # top layer's previous hidden state sₜ₋₁, (B, units)
            context, weights = self._attend(query, memory, training=False)  # (B, Dv), (B, S)
            outputs, rnn_states = self._step_decoder_rnn(
                ops.concatenate([embedded, context], axis=-1), state["rnn"], keep)
            return ops.concatenate([outputs, context], axis=-1), {"rnn": rnn_states}, weights
        inputs = (ops.concatenate([embedded, state["feed"]], axis=-1) if self.input_feeding
                  else embedded)
        outputs, rnn_states = self._step_decoder_rnn(inputs, state["rnn"], keep)
        features, weights = self._attentional(outputs, memory, training=False)
        new_state = {"rnn": rnn_states}
        if self.input_feeding:
            new_state["feed"] = features
        return features, new_state, weights

    def _attend(self, query, memory, training):
        return self.attention(query, memory["outputs"], value_mask=memory["source_mask"],
                              return_attention_scores=True, training=training)

    def _attentional(self, outputs, memory, training):
        """RNN outputs hₜ (B, [T,] units) → h̃ₜ = tanh(W_c [cₜ; hₜ]) and the weights."""
        context, weights = self._attend(outputs, memory, training)
        return self.attentional_dense(ops.concatenate([context, outputs], axis=-1)), weights

    def get_config(self):
        return {
            **super().get_config(),
            # The layer is built with the model, so its shapes are left out of the config.
            "attention": {key: value for key, value in keras.layers.serialize(
                self.attention).items() if key != "build_config"},
            "step_order": self.step_order,
            "input_feeding": self.input_feeding,
        }


def _attention_layer(attention, units, dtype_policy):
    """The `attention` argument of `AttentionSeq2Seq` as a layer (see there)."""
    if attention is None:
        return BahdanauAttention(units, name="attention", dtype=dtype_policy)
    if isinstance(attention, dict):
        attention = keras.layers.deserialize(attention)
    if not isinstance(attention, ScoredAttention):
        raise ValueError(f"attention must be a keras_s2s.layers.ScoredAttention (or its "
                         f"serialized config), got {attention!r}")
    return attention
