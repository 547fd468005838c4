"""Each family learns to reverse random sequences with `model.fit` (masked token accuracy).

1,500 examples in batches of 32: enough steps for every family to pass 0.95 on fresh
examples (chance is about 0.1), few enough that the four fits stay short on both backends.
"""

import numpy as np
import pytest

from keras_s2s.layers import LuongAttention
from keras_s2s.models import AttentionSeq2Seq, Seq2Seq, Transformer
from keras_s2s.special_tokens import END_ID, START_ID
from keras_s2s.training.objectives import compile_for_training, rnn_optimizer, transformer_optimizer

VOCAB, FIRST_TOKEN, MAX_LENGTH = 14, 4, 8
NUM_EXAMPLES, BATCH_SIZE = 1500, 32


def reversal_data(num_examples, seed):
    rng = np.random.default_rng(seed)
    width = MAX_LENGTH + 1
    source, target_in, target_out = (np.zeros((num_examples, width), "int32") for _ in range(3))
    for row, length in enumerate(rng.integers(3, MAX_LENGTH + 1, num_examples)):
        tokens = rng.integers(FIRST_TOKEN, VOCAB, length)
        source[row, :length], source[row, length] = tokens, END_ID
        target_in[row, 0], target_in[row, 1:length + 1] = START_ID, tokens[::-1]
        target_out[row, :length], target_out[row, length] = tokens[::-1], END_ID
    return (source, target_in), target_out


FAMILIES = {
    "seq2seq": (lambda: Seq2Seq(VOCAB, VOCAB, embedding_dim=32, units=128, dropout=0.0),
                lambda: rnn_optimizer(3e-3), 14),
    "bahdanau": (lambda: AttentionSeq2Seq(VOCAB, VOCAB, embedding_dim=32, units=64,
                                          dropout=0.0), lambda: rnn_optimizer(3e-3), 3),
    "luong": (lambda: AttentionSeq2Seq(VOCAB, VOCAB, embedding_dim=32, units=64,
                                       attention=LuongAttention(),
                                       step_order="update_then_attend", dropout=0.0),
              lambda: rnn_optimizer(3e-3), 3),
    "transformer": (lambda: Transformer(VOCAB, VOCAB, num_layers=1, d_model=64, num_heads=4,
                                        d_ff=128, dropout=0.0, max_length=16),
                    lambda: transformer_optimizer(64, warmup_steps=200, scale=2.0), 14),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_learns_to_reverse_sequences(family):
    make_model, make_optimizer, epochs = FAMILIES[family]
    model = compile_for_training(make_model(), make_optimizer(), label_smoothing=0.0)
    inputs, targets = reversal_data(NUM_EXAMPLES, seed=0)
    model.fit(inputs, targets, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)
    validation_inputs, validation_targets = reversal_data(500, seed=1)
    _, accuracy = model.evaluate(validation_inputs, validation_targets, verbose=0)
    assert accuracy >= 0.95, f"{family} reached only {accuracy:.3f} masked token accuracy"
