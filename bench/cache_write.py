"""The self-attention cache write of a decoding step: `write_at`'s select against a scatter.

`MultiHeadAttention` writes each step's keys and values into its cache, two
`(B, H, max_length, d/H)` tensors, with `keras_s2s.tensor_ops.write_at`, a select that reads and
rewrites the whole cache.
The alternative measured here writes one position only: `tf.tensor_scatter_nd_update`, the one
single-position write that both the plain TensorFlow runtime (TensorFlow Serving without XLA)
and TFLite's builtin ops run. (`ops.slice_update` lowers to XlaDynamicUpdateSlice: TFLite's
builtin DYNAMIC_UPDATE_SLICE, but TensorFlow runs it only by compiling it with XLA, "Compiled
cluster using XLA!"; TensorStridedSliceUpdate is no TFLite builtin.) A third, `no_write`, leaves the
cache as it is (wrong tokens; its keys and values projections are pruned): the bound of what
any write could save.

Rows, for batch sizes 1 and 32, greedy and beam 4, 32 tokens (END ruled out): the graph-mode
loop and the exported SavedModel's `translate_ids` (what `keras-s2s serve` runs), the
contenders interleaved round by round; and each write alone, 32 of them in a `tf.while_loop` on
caches of batch 1, 32 and 128 (beam 4 at batch 32), against a loop that leaves the cache as it
is. TensorFlow runs on one thread and each call also records the process's CPU time: on a
shared machine wall times are noisy, CPU time is the contender's work. Medians, minima and
maxima of both are written. Also the ops of one `decode_step` graph and the TFLite ops each
write converts to.

Usage: python bench/cache_write.py [--quick] [--repeats N]
"""

import collections
import os
import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from common import materialize, parse_args, write_result
from decoding_speed import (BEAM_WIDTH, CONFIG, CT2_OUTPUT_LENGTH, NEVER, SEARCHES, VOCAB_SIZE,
                            rule_out_end, write_run)
from keras_s2s.exporters.savedmodel import export_run
from keras_s2s.layers import multi_head_attention
from keras_s2s.models import Transformer
from keras_s2s.special_tokens import SPECIAL_TOKENS
from keras_s2s.tensor_ops import write_at

SOURCE_LENGTH = 24
BATCH_SIZES = (1, 32)
#: Cache rows of the writes timed alone: batch 1, 32, and 32 × beam 4.
WRITE_ROWS = (1, 32, 128)


def scatter_write(buffer, values, index, axis):
    """`write_at` for one position (`values` of size 1 along `axis`, `index` inside `buffer`)
    as a `tf.tensor_scatter_nd_update` of the `(N, L, ...)` view, N the leading axes' product;
    each tensor of a structure (keys and values) apart."""
    return keras.tree.map_structure(
        lambda buffer, values: _scatter_one(buffer, values, index, axis), buffer, values)


def _scatter_one(buffer, values, index, axis):
    shape = tf.shape(buffer)
    slices = tf.reduce_prod(shape[:axis])
    rows = tf.reshape(buffer, tf.concat([[slices], shape[axis:]], axis=0))
    indices = tf.stack([tf.range(slices), tf.fill([slices], tf.cast(index, tf.int32))], axis=1)
    updates = tf.reshape(values, tf.concat([[slices], shape[axis + 1:]], axis=0))
    return tf.reshape(tf.tensor_scatter_nd_update(rows, indices, updates), shape)


def no_write(buffer, values, index, axis):
    """The cache left unwritten: a bound, not a decoder."""
    return buffer


WRITES = {"select": write_at, "scatter": scatter_write, "no_write": no_write}


def traced_with(write, build):
    """`build()`'s result, with `write` as the attention layers' cache write while it traces
    (a `tf.function` is traced on its first call, which `build` must make)."""
    multi_head_attention.write_at = write
    try:
        return build()
    finally:
        multi_head_attention.write_at = write_at


def timings(contenders, repeats):
    """`{name: {"wall_ms"/"cpu_ms": {median, min, max}}}` of each zero-argument function,
    interleaved round by round after one warm-up call each."""
    for function in contenders.values():
        function()
    wall, cpu = ({name: [] for name in contenders} for _ in range(2))
    for _ in range(repeats):
        for name, function in contenders.items():
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            function()
            wall[name].append(time.perf_counter() - wall_start)
            cpu[name].append(time.process_time() - cpu_start)

    def spread(values):
        return {"median": 1000 * statistics.median(values), "min": 1000 * min(values),
                "max": 1000 * max(values)}

    return {name: {"wall_ms": spread(wall[name]), "cpu_ms": spread(cpu[name])}
            for name in contenders}


def writes_alone(repeats):
    """CPU µs per write of each contender on caches of `rows` (keys and values, each
    `(rows, H, L, d/H)`, L the exports' output length + 1), 32 writes in a `tf.while_loop`, the
    loop's own cost (`no_write`) included."""
    heads = CONFIG["num_heads"]
    figures = {}
    for rows in WRITE_ROWS:
        shape = (rows, heads, CT2_OUTPUT_LENGTH + 1, CONFIG["d_model"] // heads)
        new = tf.random.normal((rows, heads, 1, shape[3]))

        def loop_of(write):
            @tf.function
            def loop(new):
                def body(step, keys, values):
                    new_step = new + tf.cast(step, tf.float32)
                    return (step + 1, *write((keys, values), (new_step, -new_step), step,
                                             axis=2))

                return tf.while_loop(lambda step, *cache: step < CT2_OUTPUT_LENGTH, body,
                                     (tf.constant(0), tf.zeros(shape), tf.zeros(shape)))[1:]

            return lambda: materialize(loop(new))

        measured = timings({name: loop_of(write) for name, write in WRITES.items()}, repeats)
        figures[f"rows{rows}"] = {name: {"cpu_us_per_write": {
            key: 1000 * value / CT2_OUTPUT_LENGTH for key, value in figure["cpu_ms"].items()}}
            for name, figure in measured.items()}
    return figures


def step_ops(model, write):
    """Op types of one cached `decode_step` graph at batch 32, traced with `write`."""
    source = tf.random.uniform([32, SOURCE_LENGTH], 4, VOCAB_SIZE, tf.int32)
    memory = model.encode(source, training=False)
    state = model.initial_state(memory, CT2_OUTPUT_LENGTH + 1)
    step = tf.function(lambda tokens, memory, state: model.decode_step(
        tokens, memory, state, tf.constant(CT2_OUTPUT_LENGTH // 2), training=False))
    graph = traced_with(write, lambda: step.get_concrete_function(
        tf.fill([32], 5), memory, state)).graph
    kinds = collections.Counter(op.type for op in graph.get_operations())
    return {kind: count for kind, count in sorted(kinds.items()) if kind not in (
        "Placeholder", "Const", "NoOp", "Identity", "ReadVariableOp")}


def tflite_ops(write):
    """TFLite builtin ops of `write` on a `(B, H, L, d)` tensor of a cache, and whether LiteRT's
    result equals numpy's slice assignment."""
    cache = np.random.default_rng(0).normal(size=(3, 2, 7, 4)).astype("float32")
    new = np.ones((3, 2, 1, 4), "float32")
    function = tf.function(lambda cache, new, index: write(cache, new, index, axis=2),
                           input_signature=[tf.TensorSpec(cache.shape), tf.TensorSpec(new.shape),
                                            tf.TensorSpec([], tf.int32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert())
    ops_used = sorted({op["op_name"] for op in interpreter._get_ops_details()})
    result = interpreter.get_signature_runner()(cache=cache, new=new, index=np.int32(4))
    expected = cache.copy()
    expected[:, :, 4:5] = new
    return {"builtin_ops": ops_used,
            "equals_numpy": bool(np.array_equal(next(iter(result.values())), expected))}


def rows(model, repeats, directory):
    """Per batch size and search: the graph loop and the SavedModel of each write."""
    vocabulary = [*SPECIAL_TOKENS, *(f"t{i}" for i in range(len(SPECIAL_TOKENS), VOCAB_SIZE))]
    run_dir = write_run(model, vocabulary, os.path.join(directory, "run"), SOURCE_LENGTH)
    exported = {}
    for search, strategy, _ in SEARCHES:
        for name in ("select", "scatter"):
            version_dir = traced_with(WRITES[name], lambda: export_run(
                run_dir, f"{search}_{name}", base_path=directory, strategy=strategy))
            exported[search, name] = tf.saved_model.load(version_dir).signatures["translate_ids"]
    figures = {}
    for batch_size in BATCH_SIZES:
        source_ids = tf.random.uniform((batch_size, SOURCE_LENGTH), 4, VOCAB_SIZE, tf.int32)
        for search, strategy, _ in SEARCHES:
            contenders, tokens = {}, {}
            for name, write in WRITES.items():
                loop = tf.function(lambda s, strategy=strategy: strategy.decode(
                    model, s, CT2_OUTPUT_LENGTH, end_id=NEVER)["tokens"])
                tokens[f"graph_{name}"] = traced_with(write, lambda: loop(source_ids)).numpy()
                contenders[f"graph_{name}"] = lambda loop=loop: loop(source_ids).numpy()
                if (search, name) in exported:
                    signature = exported[search, name]
                    tokens[f"savedmodel_{name}"] = signature(
                        source_ids=source_ids)["output_ids"].numpy()
                    contenders[f"savedmodel_{name}"] = (
                        lambda signature=signature: signature(source_ids=source_ids)["output_ids"]
                        .numpy())
            measured = timings(contenders, repeats)
            reference = tokens["graph_select"]
            for name, figure in measured.items():
                figure["ms_per_step"] = figure["wall_ms"]["median"] / CT2_OUTPUT_LENGTH
                figure["target_tokens_per_second"] = (
                    batch_size * CT2_OUTPUT_LENGTH / figure["wall_ms"]["median"] * 1000)
                figure["tokens_equal_to_graph_select"] = bool(
                    np.array_equal(tokens[name], reference))
            figures[f"batch{batch_size}_{search}"] = measured
    return figures


def main():
    args = parse_args(__doc__.splitlines()[0])
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(0)
    model = Transformer(VOCAB_SIZE, VOCAB_SIZE, max_length=128, **CONFIG)
    model.build()
    rule_out_end(model)  # the exports stop at END; every contender gives 32 tokens
    figures = {"config": {**CONFIG, "vocab_size": VOCAB_SIZE, "source_length": SOURCE_LENGTH,
                          "output_length": CT2_OUTPUT_LENGTH, "beam_width": BEAM_WIDTH},
               "load_average_at_start": os.getloadavg(),
               "decode_step_ops_batch32": {name: {"total": sum(kinds.values()), "by_type": kinds}
                                           for name, kinds in ((name, step_ops(model, write))
                                                               for name, write in WRITES.items())},
               "tflite": {name: tflite_ops(WRITES[name]) for name in ("select", "scatter")},
               "threads": 1,
               "write_alone": writes_alone(3 * args.repeats)}
    with tempfile.TemporaryDirectory() as directory:
        figures["by_batch_size"] = rows(model, args.repeats, directory)
    figures["load_average_at_end"] = os.getloadavg()
    write_result("cache_write", args, figures)


if __name__ == "__main__":
    main()
