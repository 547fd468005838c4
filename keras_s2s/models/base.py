"""The one contract every encoder–decoder family keeps.

- `call((source_ids, target_in_ids), training)` → logits `(B, T, target_vocab_size)`: teacher
  forcing, for `model.fit`.
- `encode(source_ids, training)` → memory: a dict of batch-first tensors (encoder outputs, the
  source padding mask, whatever the decoder needs that does not change per step).
- `initial_state(memory, max_length)` → state: a dict of batch-first tensors of fixed shape
  (RNN states, or the Transformer's key/value cache for `max_length` steps).
- `decode_step(token_ids, memory, state, step)` → `(logits (B, V), new_state,
  attention (B, S) or None)`: one output position, given the previous token `(B,)`.
- `cross_attention_heads(source_ids, target_in_ids)` → `(B, layers, heads, T, S)` or None
  (the default): for the attention views of families with several layers or heads.

Decoding (greedy, beam, sampling), export and TFLite are written once against these four
methods, and `max_decode_length`, the longest sequence a model can encode or decode. Every
tensor in memory and state has the batch on axis 0, so a beam search can tile and reorder them
without knowing the family. Two optional methods let a family reorder less (the functions
`beam_state` and `reorder_state` call them, or stand in for a family without them):

- `beam_state(state, width)` → the state a beam search of `width` hypotheses per input
  carries (rows `b·width + j`); the default: `state`.
- `reorder_state(state, rows)` → the state of the hypotheses continuing `rows` `(N,)`; the
  default takes those rows of every tensor (`take_rows`).

The special ids (`pad_id`, `start_id`, `end_id`) are the model's configuration, defaults
from `keras_s2s.special_tokens` (pad 0, start 2, end 3), so an imported checkpoint keeps its own
(Marian: end 0, pad = start = vocabulary size − 1). Masking and decoding read them from the
model; padding is masked out of attention.
"""

import keras
from keras import ops

from keras_s2s.checks import check_non_negative_int, check_positive_int
from keras_s2s.special_tokens import END_ID, PAD_ID, START_ID


def padding_mask(token_ids, pad_id=PAD_ID):
    """`(B, T)` ids → `(B, T)` bool, True on real tokens."""
    return ops.not_equal(token_ids, pad_id)


def special_ids(model):
    """`(pad_id, start_id, end_id)` of `model`; the package defaults for a plain object keeping
    the contract without them."""
    return (getattr(model, "pad_id", PAD_ID), getattr(model, "start_id", START_ID),
            getattr(model, "end_id", END_ID))


def take_rows(state, rows):
    """`state` of the rows `rows` `(N,)`: every tensor's rows along axis 0."""
    return keras.tree.map_structure(lambda tensor: ops.take(tensor, rows, axis=0), state)


def beam_state(model, state, width):
    """`model.beam_state(state, width)`, or `state` for a model without the method."""
    method = getattr(model, "beam_state", None)
    return state if method is None else method(state, width)


def reorder_state(model, state, rows):
    """`model.reorder_state(state, rows)`, or `take_rows` for a model without the method."""
    method = getattr(model, "reorder_state", None)
    return take_rows(state, rows) if method is None else method(state, rows)


class Seq2SeqModel(keras.Model):
    """Base class: vocabulary sizes, the teacher-forcing `call`, building and config."""

    #: Whether `decode_step` returns attention weights over the source.
    has_attention = True

    def __init__(self, source_vocab_size, target_vocab_size, pad_id=PAD_ID, start_id=START_ID,
                 end_id=END_ID, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("source_vocab_size", source_vocab_size)
        check_positive_int("target_vocab_size", target_vocab_size)
        for name, value in (("pad_id", pad_id), ("start_id", start_id), ("end_id", end_id)):
            check_non_negative_int(name, value)
        if end_id == pad_id:
            raise ValueError(f"end_id and pad_id must differ, both are {end_id}")
        self.source_vocab_size = source_vocab_size
        self.target_vocab_size = target_vocab_size
        self.pad_id = pad_id
        self.start_id = start_id
        self.end_id = end_id

    def padding_mask(self, token_ids):
        """`(B, T)` ids → `(B, T)` bool, True on real tokens (not this model's `pad_id`)."""
        return padding_mask(token_ids, self.pad_id)

    def target_padding_mask(self, target_in_ids):
        """`(B, T)` decoder inputs → `(B, T)` bool, True on real tokens; the first position,
        the start token, is always real (Marian starts from its padding id)."""
        first = ops.expand_dims(ops.equal(ops.arange(ops.shape(target_in_ids)[1]), 0), 0)
        return ops.logical_or(self.padding_mask(target_in_ids), first)

    @property
    def max_decode_length(self):
        """The longest source or output (in tokens) the model can encode or decode, or None
        when any length works (RNNs). The `Translator`, export and TFLite check their lengths
        against it rather than knowing each family's limit."""
        return None

    def build(self, input_shape=None):
        """Create every weight from the configuration alone (the input shapes do not matter).

        Families build each sublayer here with explicit shapes, so that no sublayer is first
        built inside a loop (`ops.scan`, `while_loop`), which leaks tracers on JAX. Decoding
        calls `build()` before its loop when the model has not been called yet.
        """
        raise NotImplementedError

    def call(self, inputs, training=None):
        source_ids, target_in_ids = inputs
        memory = self.encode(source_ids, training=training)
        return self.teacher_forced_logits(target_in_ids, memory, training=training)

    def encode(self, source_ids, training=None):
        raise NotImplementedError

    def teacher_forced_logits(self, target_in_ids, memory, training=None):
        """`(B, T)` decoder inputs → `(B, T, V)` logits, all positions at once."""
        raise NotImplementedError

    def initial_state(self, memory, max_length):
        raise NotImplementedError

    def decode_step(self, token_ids, memory, state, step, training=None):
        raise NotImplementedError

    def cross_attention_heads(self, source_ids, target_in_ids):
        """Cross-attention of every layer and head, `(B, layers, heads, T, S)`, for the
        teacher-forced `target_in_ids` `(B, T)`; None (this default) when the one distribution
        per step that `decode_step` returns is all the model has (RNN attention)."""
        return None

    def get_config(self):
        return {**super().get_config(), "source_vocab_size": self.source_vocab_size,
                "target_vocab_size": self.target_vocab_size, "pad_id": self.pad_id,
                "start_id": self.start_id, "end_id": self.end_id}
