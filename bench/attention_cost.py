"""Self-attention costs O(N²): forward time and attention memory of a Transformer encoder stack
against sequence length N, with the log-log slope of time against N.

The stack is our `TransformerEncoderLayer` (2 layers, d_model 256, 4 heads, d_ff 1024), batch 1,
run in a `tf.function`. Peak memory is TensorFlow's CPU allocator peak during one forward pass
above what was allocated before it (`tf.config.experimental.reset_memory_stats` /
`get_memory_info("CPU:0")`), next to the analytic size of one layer's attention weights,
heads · N² float32 values. Time has terms linear in N (projections, feed-forward: 2·(4d² +
2·d·d_ff) FLOPs per token and layer) and quadratic ones (QKᵀ and weights·V: 4·N²·d per layer),
so the slope approaches 2 only once the quadratic FLOPs dominate; their share is reported.

Beside it, side by side: the same stack's forward time when `MultiHeadAttention` takes its
fused path (`keras.ops.dot_product_attention`, nobody asks for the weights) and when it
materialises the weights (asked for and dropped) — whether the fusion pays on this backend.

Usage: python bench/attention_cost.py [--quick] [--repeats N]
"""

import os

import keras
import numpy as np
import tensorflow as tf

from common import RESULTS_DIR, interleaved_medians, parse_args, shown, write_result
from keras_s2s.layers import TransformerEncoderLayer
from keras_s2s.plotting import plot_lines

CONFIG = dict(d_model=256, num_heads=4, d_ff=1024)
NUM_LAYERS = 2
BATCH_SIZE = 1
FLOAT_BYTES = 4


def log_log_slope(lengths, values):
    """Least-squares slope of log(value) on log(length): 2 for a quadratic cost."""
    return float(np.polyfit(np.log(lengths), np.log(values), 1)[0])


def quadratic_flop_share(length):
    """Fraction of one encoder layer's forward FLOPs in QKᵀ and weights·V."""
    d, d_ff = CONFIG["d_model"], CONFIG["d_ff"]
    linear = 2 * (4 * d * d + 2 * d * d_ff) * length
    quadratic = 4 * length ** 2 * d
    return quadratic / (linear + quadratic)


def forward_peak_bytes(encode, inputs):
    """Peak bytes the CPU allocator held during one forward pass, above its level before; None
    where TensorFlow's CPU allocator keeps no statistics ("Cannot reset memory stats": so it
    runs on some machines)."""
    try:
        tf.config.experimental.reset_memory_stats("CPU:0")
    except ValueError:
        return None
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    encode(inputs).numpy()
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - before


def main():
    args = parse_args(__doc__.splitlines()[0])
    lengths = (64, 128, 256, 512) if args.quick else (64, 128, 256, 512, 1024, 2048)
    keras.utils.set_random_seed(0)
    layers = [TransformerEncoderLayer(**CONFIG) for _ in range(NUM_LAYERS)]

    @tf.function
    def encode(x):
        for layer in layers:
            x = layer(x, training=False)
        return tf.reduce_sum(x)

    @tf.function
    def encode_materialised(x):
        for layer in layers:
            x, _ = layer(x, return_attention_scores=True, training=False)
        return tf.reduce_sum(x)

    inputs = {length: tf.random.normal((BATCH_SIZE, length, CONFIG["d_model"]))
              for length in lengths}
    seconds = interleaved_medians(
        {length: lambda x=inputs[length]: encode(x).numpy() for length in lengths},
        args.repeats)
    times = [seconds[length] for length in lengths]
    paths = {length: interleaved_medians(
        {"fused": lambda x=inputs[length]: encode(x).numpy(),
         "materialised": lambda x=inputs[length]: encode_materialised(x).numpy()},
        args.repeats) for length in lengths}
    peak_bytes = [forward_peak_bytes(encode, inputs[length]) for length in lengths]
    attention_bytes = [BATCH_SIZE * CONFIG["num_heads"] * length ** 2 * FLOAT_BYTES
                       for length in lengths]
    plot_path = RESULTS_DIR / "attention_cost.png"
    quadratic = [times[-1] * (length / lengths[-1]) ** 2 for length in lengths]
    plot_lines({"measured forward time": (list(lengths), [1000 * t for t in times]),
                "c·N² through the longest": (list(lengths), [1000 * t for t in quadratic])},
               plot_path, "sequence length N", "forward time (ms)",
               f"Encoder stack ({NUM_LAYERS}×d{CONFIG['d_model']}) forward, batch 1, CPU")
    figures = {
        "config": {**CONFIG, "num_layers": NUM_LAYERS, "batch_size": BATCH_SIZE},
        "by_length": {length: {"forward_ms": 1000 * seconds[length],
                               "peak_memory_mib": None if peak is None else peak / 2 ** 20,
                               "attention_weights_one_layer_mib": size / 2 ** 20,
                               "quadratic_flop_share": quadratic_flop_share(length)}
                      for length, peak, size in zip(lengths, peak_bytes, attention_bytes)},
        "time_log_log_slope_all": log_log_slope(lengths, times),
        "time_log_log_slope_two_longest": log_log_slope(lengths[-2:], times[-2:]),
        **({} if None in peak_bytes else {
            "peak_memory_log_log_slope_all": log_log_slope(lengths, peak_bytes),
            "peak_memory_log_log_slope_two_longest": log_log_slope(lengths[-2:],
                                                                   peak_bytes[-2:])}),
        "plot": shown(plot_path),
        "fused_vs_materialised_weights": {
            length: {"fused_ms": 1000 * row["fused"], "materialised_ms": 1000 * row["materialised"],
                     "materialised_over_fused": row["materialised"] / row["fused"]}
            for length, row in paths.items()},
        "loadavg": os.getloadavg(),
    }
    write_result("attention_cost", args, figures)


if __name__ == "__main__":
    main()
