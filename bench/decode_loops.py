"""Our decoding loops alone: the "ours, graph" and "ours, XLA" rows of `bench/decoding_speed.py`.

The same model (its configuration, random weights, END ruled out so that every loop gives
exactly 32 tokens), batch sizes (1, 32) and searches (greedy, beam 4), without the CTranslate2,
REST and TFLite contenders around them: minutes instead of tens of minutes, so that a change to
the decoding step can be measured before and after, interleaved, on a shared machine.

Usage: python bench/decode_loops.py [--quick] [--repeats N]
"""

import keras
import tensorflow as tf

from cache_write import timings
from common import materialize, parse_args, write_result
from decoding_speed import (CONFIG, CT2_BATCH_SIZES, CT2_OUTPUT_LENGTH, NEVER, SEARCHES,
                            VOCAB_SIZE, rule_out_end)
from keras_s2s.models import Transformer

SOURCE_LENGTH = 24


def loop_rows(model, repeats, xla):
    """`{"batch{B}_{search}": {loop: {"wall_ms"/"cpu_ms": {median, min, max},
    "target_tokens_per_second"}}}` of the graph loop and, with `xla`, the XLA-compiled one,
    interleaved (CPU time: all threads, the figure other processes disturb least)."""
    rows = {}
    for batch_size in CT2_BATCH_SIZES:
        source_ids = tf.random.uniform((batch_size, SOURCE_LENGTH), 4, VOCAB_SIZE, tf.int32)
        for search, strategy, _ in SEARCHES:
            def loop(s, strategy=strategy):
                return strategy.decode(model, s, CT2_OUTPUT_LENGTH, end_id=NEVER)["tokens"]

            loops = {"ours_graph": tf.function(loop)}
            if xla:
                loops["ours_xla"] = tf.function(loop, jit_compile=True)
            measured = timings(
                {name: lambda f=f: materialize(f(source_ids)) for name, f in loops.items()},
                repeats)
            for figure in measured.values():
                figure["target_tokens_per_second"] = (
                    1000 * batch_size * CT2_OUTPUT_LENGTH / figure["wall_ms"]["median"])
            rows[f"batch{batch_size}_{search}"] = measured
    return rows


def main():
    args = parse_args(__doc__.splitlines()[0])
    keras.utils.set_random_seed(0)
    model = Transformer(VOCAB_SIZE, VOCAB_SIZE, max_length=128, **CONFIG)
    model.build()
    rule_out_end(model)
    figures = {"config": {**CONFIG, "vocab_size": VOCAB_SIZE, "source_length": SOURCE_LENGTH,
                          "output_length": CT2_OUTPUT_LENGTH},
               "by_batch_size": loop_rows(model, args.repeats, xla=not args.quick)}
    write_result("decode_loops", args, figures)


if __name__ == "__main__":
    main()
