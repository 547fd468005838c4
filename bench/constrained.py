"""Lexically constrained beam search against plain beam search, in a graph (`tf.function`).

Beam 4 with 1 and 3 constraint phrases of 2 tokens against beam 4 without, at batch 1 and
32, on a Transformer of the size of the tests' trained dates model (1 layer, d_model 32, 2
heads, d_ff 64, 200 tokens each side, 24 source tokens, 16 output tokens). Its weights are
random and no token ends an output (`end_id=-1`), so every search runs all 16 steps and the
figures compare the steps themselves: the constrained ones rank 4·width + width·C candidates
with the phrases' state instead of 2·width.

Usage: python bench/constrained.py [--quick] [--repeats N]
"""

import numpy as np
import tensorflow as tf

from common import interleaved_medians, materialize, parse_args, write_result
from keras_s2s.decoding import Beam
from keras_s2s.models import Transformer

VOCAB_SIZE, SOURCE_LENGTH, MAX_LENGTH, WIDTH = 200, 24, 16, 4
NEVER = -1  # an end id no step produces: every search runs MAX_LENGTH steps


def searches(model):
    """`{name: tf.function(source_ids, constraints)}`: plain and constrained beam search."""
    def search(with_constraints):
        return tf.function(lambda source_ids, constraints: Beam(WIDTH).decode(
            model, source_ids, MAX_LENGTH, end_id=NEVER,
            constraints=constraints if with_constraints else None), input_signature=[
            tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None, None], tf.int32)])

    return {"beam": search(False), "constrained": search(True)}


def main():
    args = parse_args(__doc__.splitlines()[0])
    model = Transformer(VOCAB_SIZE, VOCAB_SIZE, num_layers=1, d_model=32, num_heads=2, d_ff=64,
                        dropout=0.0, max_length=max(SOURCE_LENGTH, MAX_LENGTH))
    model.build()
    rng = np.random.default_rng(0)
    functions = searches(model)
    figures = {}
    for batch_size in (1, 32):
        source_ids = rng.integers(4, VOCAB_SIZE, (batch_size, SOURCE_LENGTH)).astype("int32")
        calls = {"beam_4": lambda: materialize(functions["beam"](
            source_ids, np.zeros((batch_size, 1, 1), "int32")))}
        for count in (1, 3):
            phrases = rng.integers(4, VOCAB_SIZE, (batch_size, count, 2)).astype("int32")
            calls[f"beam_4_{count}_constraints"] = (
                lambda phrases=phrases: materialize(functions["constrained"](source_ids,
                                                                             phrases)))
        seconds = interleaved_medians(calls, args.repeats)
        figures[f"batch_{batch_size}"] = {
            **{f"{name}_ms": round(value * 1000, 2) for name, value in seconds.items()},
            **{f"{name}_over_beam_4": round(value / seconds["beam_4"], 2)
               for name, value in seconds.items() if name != "beam_4"}}
    write_result("constrained", args, figures)


if __name__ == "__main__":
    main()
