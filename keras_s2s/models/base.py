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
without knowing the family.

Padding id 0 is masked out of attention, loss and metrics; see `keras_s2s.special_tokens`.
"""

import keras
from keras import ops

from keras_s2s.checks import check_positive_int
from keras_s2s.special_tokens import PAD_ID


def padding_mask(token_ids):
    """`(B, T)` ids → `(B, T)` bool, True on real tokens."""
    return ops.not_equal(token_ids, PAD_ID)


class Seq2SeqModel(keras.Model):
    """Base class: vocabulary sizes, the teacher-forcing `call`, building and config."""

    #: Whether `decode_step` returns attention weights over the source.
    has_attention = True

    def __init__(self, source_vocab_size, target_vocab_size, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("source_vocab_size", source_vocab_size)
        check_positive_int("target_vocab_size", target_vocab_size)
        self.source_vocab_size = source_vocab_size
        self.target_vocab_size = target_vocab_size

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
                "target_vocab_size": self.target_vocab_size}
