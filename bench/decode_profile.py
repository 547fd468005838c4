"""Where a decoding step's time goes: ops per step, FLOPs per step, the matmul rate, overhead.

The Transformer of `bench/decoding_speed.py` (same configuration, random weights). For batch
sizes 1 and 32 it times one cached `decode_step` (a `tf.function` of fixed shapes, the step the
greedy and beam loops run) and reads the ops of its graph. It counts the step's FLOPs by hand
(the matmuls: projections, attention, feed-forward, output logits) and measures, in the same
run, the rate of a single `tf.matmul` of the step's largest shape and of a large square one.

    overhead per op = (step time − FLOPs ÷ matmul rate of the step's shapes) ÷ ops per step

is how long an op costs beyond its arithmetic. It explains why batch 1 is slow per token (the
same ops, 1/32 of the work) and sets the bar for "fewer ops per step". The step's CPU time
(median, min, max, all threads) is written beside its wall time: on a shared machine it is the
figure other processes disturb least.

Where the time goes by op type: the step's graph, its weights frozen into constants, run by a
`tf.compat.v1.Session` that traces each op's start and end (`RunOptions.FULL_TRACE`): the µs of
each op type and of the costliest ops, summed over the ops' own times (ops that run side by
side each count).

Usage: python bench/decode_profile.py [--quick] [--repeats N]
"""

import collections

import keras
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from cache_write import timings
from common import interleaved_medians, materialize, parse_args, write_result
from decoding_speed import CONFIG, VOCAB_SIZE
from keras_s2s.models import Transformer

SOURCE_LENGTH = 24
#: The step whose cost is measured: halfway through a 32-token output.
STEP = 16
MAX_LENGTH = 33


def step_flops(batch_size, config, source_length, step, vocab_size):
    """Multiply-add FLOPs (2 per multiply-add) of one cached decoder step, by hand."""
    d, d_ff, layers = config["d_model"], config["d_ff"], config["num_layers"]
    keys = step + 1  # self-attention attends to every position so far
    per_layer = (
        4 * d * d  # self-attention q, k, v, output projections
        + 2 * keys * d  # self-attention scores and weighted sum
        + 2 * d * d  # cross-attention q and output projections (keys, values cached)
        + 2 * source_length * d  # cross-attention scores and weighted sum
        + 2 * d * d_ff  # feed-forward
    )
    return 2 * batch_size * (layers * per_layer + d * vocab_size)


def timed(function, repeats, *args):
    """Median seconds of `function(*args)`, its result fetched to the host, after a warm-up."""
    return interleaved_medians({"run": lambda: materialize(function(*args))}, repeats)["run"]


def matmul_rate(m, k, n, repeats, chain=50):
    """FLOP/s of `chain` (m, k) · (k, n) matmuls in one `tf.function` (distinct left operands,
    which graph optimisation cannot merge into one)."""
    a = tf.random.normal([chain, m, k])
    b = tf.random.normal([k, n])

    @tf.function
    def run(a, b):
        total = tf.zeros([m, n])
        for index in range(chain):
            total += tf.matmul(a[index], b)
        return total

    return chain * 2 * m * k * n / timed(run, repeats, a, b)


def op_time_split(concrete, inputs, repeats, costliest=12):
    """µs per run of each op type of `concrete` called on `inputs` (their flat list), and of its
    `costliest` ops, from a traced `tf.compat.v1.Session` run of the frozen graph, after warm-up
    runs."""
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    op_types = {node.name: node.op for node in graph_def.node}
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    feed = {graph.get_tensor_by_name(placeholder.name): value.numpy()
            for placeholder, value in zip(frozen.inputs, inputs)}
    fetches = [graph.get_tensor_by_name(output.name) for output in frozen.outputs]
    by_type, by_op = collections.Counter(), collections.Counter()
    with tf.compat.v1.Session(graph=graph) as session:
        for _ in range(repeats):
            session.run(fetches, feed)
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        for _ in range(repeats):
            metadata = tf.compat.v1.RunMetadata()
            session.run(fetches, feed, options=options, run_metadata=metadata)
            for device in metadata.step_stats.dev_stats:
                for node in device.node_stats:
                    micros = (node.op_end_rel_micros - node.op_start_rel_micros) / repeats
                    by_type[op_types.get(node.node_name, node.node_name)] += micros
                    by_op[node.node_name] += micros
    total = sum(by_type.values())
    return {"op_us_summed": total,
            "by_type_us": dict(by_type.most_common()),
            "by_type_share": {kind: micros / total for kind, micros in by_type.most_common()},
            "costliest_ops_us": {f"{name} ({op_types.get(name, '?')})": micros
                                 for name, micros in by_op.most_common(costliest)}}


def profile_step(model, batch_size, repeats):
    source = tf.random.uniform([batch_size, SOURCE_LENGTH], 3, VOCAB_SIZE, dtype=tf.int32)
    memory = model.encode(source, training=False)
    state = model.initial_state(memory, MAX_LENGTH)
    tokens = tf.fill([batch_size], 5)

    @tf.function
    def step(tokens, memory, state):
        return model.decode_step(tokens, memory, state, tf.constant(STEP), training=False)

    concrete = step.get_concrete_function(tokens, memory, state)
    operations = concrete.graph.get_operations()
    kinds = collections.Counter(op.type for op in operations)
    compute = {kind: count for kind, count in kinds.items()
               if kind not in ("Placeholder", "Const", "NoOp", "Identity", "ReadVariableOp")}
    # Wall and CPU time of the same calls: on a shared machine the CPU time (all threads) is
    # the step's own work, the wall time also what other processes took.
    measured = timings({"step": lambda: materialize(step(tokens, memory, state))}, repeats)
    seconds = measured["step"]["wall_ms"]["median"] / 1000
    flops = step_flops(batch_size, CONFIG, SOURCE_LENGTH, STEP, VOCAB_SIZE)
    # The step's largest matmul: the output logits (B, d) · (d, V).
    shape_rate = matmul_rate(batch_size, CONFIG["d_model"], VOCAB_SIZE, repeats)
    arithmetic = flops / shape_rate
    ops_per_step = sum(compute.values())
    return {
        "step_ms": 1000 * seconds,
        "step_cpu_ms": measured["step"]["cpu_ms"],
        "ops_per_step": ops_per_step,
        "graph_ops_all": len(operations),
        "matmul_ops": sum(count for kind, count in compute.items() if "MatMul" in kind
                          or kind == "Einsum"),
        "op_types": dict(sorted(compute.items(), key=lambda item: -item[1])),
        "flops_per_step": flops,
        "achieved_gflops": flops / seconds / 1e9,
        "matmul_gflops_at_step_shape": shape_rate / 1e9,
        "arithmetic_ms_at_that_rate": 1000 * arithmetic,
        "overhead_us_per_op": 1e6 * max(seconds - arithmetic, 0.0) / ops_per_step,
        "target_tokens_per_second": batch_size / seconds,
        "op_time_split": op_time_split(
            concrete, [tokens, *keras.tree.flatten(memory), *keras.tree.flatten(state)], repeats),
    }


def main():
    args = parse_args(__doc__.splitlines()[0])
    repeats = 10 * args.repeats  # a step is milliseconds: ten timed calls per repeat
    keras.utils.set_random_seed(0)
    model = Transformer(VOCAB_SIZE, VOCAB_SIZE, **CONFIG)
    model.build()
    figures = {"config": CONFIG, "source_length": SOURCE_LENGTH, "step": STEP,
               "large_matmul_gflops": matmul_rate(1024, 1024, 1024, max(repeats // 10, 2),
                                                  chain=4) / 1e9,
               "by_batch_size": {str(size): profile_step(model, size, repeats)
                                 for size in (1, 32)}}
    write_result("decode_profile", args, figures)


if __name__ == "__main__":
    main()
