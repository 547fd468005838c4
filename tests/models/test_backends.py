"""What breaks on JAX when a sublayer is first built, or a seed drawn, inside a loop.

Backend-neutral (keras and numpy only); CI runs it under TensorFlow and JAX.
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_s2s.decoding import Beam, Greedy, Sample
from tests.models.families import FAMILIES, FIT_FAMILIES, TARGET_VOCAB

SOURCE = np.array([[5, 6, 7, 3], [8, 3, 0, 0]], "int32")
TARGET_IN = np.array([[2, 5, 6], [2, 9, 0]], "int32")


def _decode_loop(model, steps):
    """Greedy steps in a `while_loop`, straight over the model contract."""
    memory = model.encode(SOURCE)
    state = model.initial_state(memory, steps)

    def body(step, previous, state):
        logits, state, _ = model.decode_step(previous, memory, state, step)
        return step + 1, ops.cast(ops.argmax(logits, axis=-1), "int32"), state

    start = ops.full((SOURCE.shape[0],), 2, dtype="int32")
    return ops.while_loop(lambda step, previous, state: step < steps, body, (0, start, state))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_first_call_of_a_fresh_model(family):
    logits = FAMILIES[family]()((SOURCE, TARGET_IN))
    assert ops.convert_to_numpy(logits).shape == (2, 3, TARGET_VOCAB)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_build_creates_every_weight_so_a_decode_can_come_first(family):
    model = FAMILIES[family]()
    model.build()
    count = len(model.weights)
    _decode_loop(model, 4)
    logits = model((SOURCE, TARGET_IN))  # usable afterwards
    assert len(model.weights) == count
    called = FAMILIES[family]()
    called((SOURCE, TARGET_IN))
    assert count == len(called.weights)
    assert ops.convert_to_numpy(logits).shape == (2, 3, TARGET_VOCAB)


@pytest.mark.parametrize("family", FIT_FAMILIES)
def test_fit_with_dropout(family):
    model = FAMILIES[family](dropout=0.3)
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    source = np.repeat(SOURCE, 4, axis=0)
    target_in = np.repeat(TARGET_IN, 4, axis=0)
    history = model.fit((source, target_in), np.roll(target_in, -1, axis=1), batch_size=4,
                        epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()



@pytest.mark.parametrize("strategy", [Greedy(), Beam(2), Sample(seed=3)], ids=repr)
def test_a_fresh_model_can_decode_first_and_train_after(strategy):
    """`keras_s2s.decoding` builds a model that was never called before its loop."""
    model = FAMILIES["transformer"]()
    result = strategy.decode(model, SOURCE, max_length=4)
    assert ops.convert_to_numpy(result["tokens"]).shape[0] == 2
    assert ops.convert_to_numpy(model((SOURCE, TARGET_IN))).shape == (2, 3, TARGET_VOCAB)
