"""Training speed: our Transformer against keras-hub layers, Transformer against LSTM by sequence
length, and the Transformer's achieved FLOP/s as a fraction of a large matmul's.

1. Target tokens/s of `train_on_batch` (after warm-up) for our `Transformer` and the same
   architecture built from keras-hub layers (`bench/keras_hub_baseline.py`), with and without
   `jit_compile` (quick mode: without only, XLA compilation alone takes minutes), same loss
   (masked, label-smoothed) and optimizer; and, in the same interleaved run, the step's
   matmuls alone (`step_matmuls`: same shapes, random operands), the floor under any step.
2. Target tokens/s against sequence length for an LSTM `Seq2Seq` and a `Transformer` of similar
   parameter count, at a fixed number of tokens per batch (the batch shrinks as length grows).
3. CPU efficiency at d_model 512: matmul FLOPs of one training step, counted analytically
   (forward ≈ 2 · matmul parameters · tokens + attention score/context matmuls; training ≈ 3 ×
   forward), per second, divided by the FLOP/s of a 2048×2048 float32 `tf.matmul`.
4. Precision: target tokens/s of the corpus recipe's Transformer (`bench/corpora.py`, 8k shared
   vocabulary, three-way tied) in float32 against Keras's `mixed_bfloat16` policy (bfloat16
   matmuls, which this CPU's AVX512_BF16 can run through oneDNN), interleaved, same batch.

Parts 2 and 3 compile without XLA, the package's default on a CPU (`--xla auto`).

Usage: python bench/training_speed.py [--quick] [--repeats N]
"""

import keras
import tensorflow as tf

from corpora import CORPUS_MODELS
from common import (RESULTS_DIR, count_params, interleaved_medians, parse_args, shown,
                    write_result)
from keras_hub_baseline import KerasHubTransformer
from keras_s2s.models import Seq2Seq, Transformer
from keras_s2s.plotting import plot_lines
from keras_s2s.training.objectives import compile_for_training

VOCAB_SIZE = 1000
SMALL_TRANSFORMER = dict(num_layers=2, d_model=256, num_heads=4, d_ff=1024, dropout=0.1)
LSTM_CONFIG = dict(embedding_dim=256, units=512, cell="lstm", num_layers=1, dropout=0.1)
EFFICIENCY_TRANSFORMER = dict(num_layers=2, d_model=512, num_heads=8, d_ff=2048, dropout=0.1)
#: The quick mode's models in parts 2 to 4 (part 1 keeps its own: the quick test checks that a
#: backward pass takes longer than the forward one, which a tiny model's noise can hide).
QUICK_TRANSFORMER = dict(num_layers=1, d_model=32, num_heads=2, d_ff=64, dropout=0.1)
QUICK_LSTM = dict(embedding_dim=32, units=32, cell="lstm", num_layers=1, dropout=0.1)
MATMUL_SIZE = 2048
JIT_NAMES = {False: "graph", True: "xla"}


def random_batch(batch_size, length, seed=0):
    """`((source, target_in), target_out)` of random non-special ids, no padding."""
    generator = tf.random.Generator.from_seed(seed)
    source, target = (generator.uniform((batch_size, length + 1), 4, VOCAB_SIZE, tf.int32)
                      for _ in range(2))
    return (source[:, :length], target[:, :-1]), target[:, 1:]


def compiled(model, jit_compile):
    """Compile as `keras-s2s train` does (masked label-smoothed loss), with a constant-rate Adam."""
    return compile_for_training(model, keras.optimizers.Adam(1e-4), label_smoothing=0.1,
                                jit_compile=jit_compile)


def train_step_function(model, batch):
    """A zero-argument function running one training step on `batch`, for timing."""
    inputs, targets = batch
    return lambda: model.train_on_batch(inputs, targets)


def step_parts(model, batch):
    """Zero-argument functions for the parts of a training step of compiled `model` (graph
    mode): the forward pass with the loss, and that with the backward pass (the gradients);
    the rest of `train_on_batch` is the optimizer's update and the metrics."""
    inputs, targets = batch

    @tf.function
    def forward():
        return model.loss(targets, model(inputs, training=True))

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = model.loss(targets, model(inputs, training=True))
        return tape.gradient(loss, model.trainable_variables)

    return {"forward": forward, "forward_backward": forward_backward}


def ours_against_keras_hub(repeats, jit_modes, batch_size=32, length=32):
    """Part 1: tokens/s of our Transformer and the keras-hub-built one, per `jit_compile` mode."""
    models = {}
    for jit_compile in jit_modes:
        suffix = JIT_NAMES[jit_compile]
        keras.utils.set_random_seed(0)
        models[f"ours_{suffix}"] = compiled(
            Transformer(VOCAB_SIZE, VOCAB_SIZE, max_length=length, **SMALL_TRANSFORMER),
            jit_compile)
        models[f"keras_hub_{suffix}"] = compiled(
            KerasHubTransformer(VOCAB_SIZE, **SMALL_TRANSFORMER), jit_compile)
    batch = random_batch(batch_size, length)
    matmuls = step_matmuls(SMALL_TRANSFORMER, batch_size, length, VOCAB_SIZE)
    parts = {f"{name}/{part}": function for name in ("ours_graph", "keras_hub_graph")
             if name in models for part, function in step_parts(models[name], batch).items()}
    seconds = interleaved_medians(
        {**{name: train_step_function(model, batch) for name, model in models.items()},
         "matmuls_alone": matmuls_alone(matmuls), **parts},
        repeats, warmup=2)
    alone = seconds.pop("matmuls_alone")
    parts = {name: seconds.pop(name) for name in parts}
    tokens, flops = batch_size * length, flops_of(matmuls)
    modes = [JIT_NAMES[jit_compile] for jit_compile in jit_modes]
    return {
        "config": {**SMALL_TRANSFORMER, "vocab_size": VOCAB_SIZE, "batch_size": batch_size,
                   "length": length},
        "params": {name: count_params(model) for name, model in models.items()},
        "target_tokens_per_second": {name: tokens / value for name, value in seconds.items()},
        "speedup_ours_vs_keras_hub": {
            mode: seconds[f"keras_hub_{mode}"] / seconds[f"ours_{mode}"] for mode in modes},
        # The profile of the gap: how much of a step its matmuls take. A step cannot take
        # less than its matmuls, so keras-hub's step ÷ the matmuls alone bounds any speedup
        # over keras-hub that removing the rest (transposes, masks, softmax, layer norms,
        # the optimizer) could buy.
        "training_step_gflop": flops / 1e9,
        "achieved_gflop_per_second": {name: flops / value / 1e9
                                      for name, value in seconds.items()},
        "matmuls_alone_seconds": alone,
        "matmuls_alone_gflop_per_second": flops / alone / 1e9,
        "step_seconds_over_matmuls_alone": {name: value / alone
                                            for name, value in seconds.items()},
        "speedup_ceiling_vs_keras_hub": {mode: seconds[f"keras_hub_{mode}"] / alone
                                         for mode in modes},
        # Where the rest goes (graph mode): the forward pass with the loss, the backward
        # pass, and the optimizer's update with the metrics, in seconds of a step.
        "step_parts_seconds": {
            name: {"forward": parts[f"{name}/forward"],
                   "backward": parts[f"{name}/forward_backward"] - parts[f"{name}/forward"],
                   "update_and_metrics": seconds[name] - parts[f"{name}/forward_backward"]}
            for name in ("ours_graph", "keras_hub_graph") if name in seconds},
    }


def tokens_per_second_by_length(repeats, lengths, tokens_per_batch, lstm_config=LSTM_CONFIG,
                                transformer_config=SMALL_TRANSFORMER):
    """Part 2: tokens/s of an LSTM Seq2Seq and a Transformer by length, plotted to a PNG."""
    keras.utils.set_random_seed(0)
    models = {
        "LSTM Seq2Seq": Seq2Seq(VOCAB_SIZE, VOCAB_SIZE, **lstm_config),
        "Transformer": Transformer(VOCAB_SIZE, VOCAB_SIZE, max_length=max(lengths),
                                   **transformer_config),
    }
    for model in models.values():
        model.build()
        compiled(model, jit_compile=False)
    by_length = {}
    for length in lengths:
        batch = random_batch(tokens_per_batch // length, length)
        seconds = interleaved_medians(
            {name: train_step_function(model, batch) for name, model in models.items()},
            repeats, warmup=2)
        by_length[length] = {name: tokens_per_batch / value for name, value in seconds.items()}
    plot_path = RESULTS_DIR / "tokens_per_second_vs_length.png"
    plot_lines({name: (list(lengths), [by_length[length][name] for length in lengths])
                for name in models},
               plot_path, "sequence length (source = target)", "training target tokens / s",
               f"Training throughput, {tokens_per_batch} target tokens per batch, CPU")
    return {
        "configs": {"LSTM Seq2Seq": lstm_config, "Transformer": transformer_config,
                    "vocab_size": VOCAB_SIZE, "tokens_per_batch": tokens_per_batch},
        "params": {name: count_params(model) for name, model in models.items()},
        "target_tokens_per_second": by_length,
        "plot": shown(plot_path),
    }


def step_matmuls(config, batch_size, length, vocab_size):
    """The matmuls of one Transformer training step (source = target length), as `(batch, m,
    k, n)` shapes: each forward matmul, then the two of its backward pass (the gradients of
    both operands, as many FLOPs each), so a step is 3 × forward. Weight matmuls run over
    all tokens; attention's QKᵀ and weighted sum per sequence and head."""
    d, d_ff, layers = config["d_model"], config["d_ff"], config["num_layers"]
    heads, tokens = config["num_heads"], batch_size * length
    feed_forward = [(1, tokens, d, d_ff), (1, tokens, d_ff, d)]
    attention = [(batch_size * heads, length, d // heads, length),
                 (batch_size * heads, length, length, d // heads)]
    forward = (layers * ([(1, tokens, d, d)] * 4 + feed_forward)  # encoder: q, k, v, o; FFN
               + layers * ([(1, tokens, d, d)] * 8 + feed_forward)  # decoder: self, cross
               + [(1, tokens, d, vocab_size)]  # output projection
               + 3 * layers * attention)  # encoder self-, decoder self- and cross-attention
    return [shape for b, m, k, n in forward for shape in ((b, m, k, n), (b, m, n, k), (b, k, m, n))]


def flops_of(matmuls):
    return sum(2 * b * m * k * n for b, m, k, n in matmuls)


def matmuls_alone(matmuls):
    """A zero-argument function running `matmuls` on random operands, and nothing else: the
    time a step would take if everything but its matmuls were free."""
    operands = [(tf.random.normal((b, m, k)), tf.random.normal((b, k, n)))
                for b, m, k, n in matmuls]
    run = tf.function(lambda: [tf.matmul(a, b) for a, b in operands])
    return lambda: run()


def cpu_efficiency(repeats, batch_size, length, config=EFFICIENCY_TRANSFORMER):
    """Part 3: achieved training FLOP/s ÷ FLOP/s of a 2048×2048 matmul, timed interleaved."""
    keras.utils.set_random_seed(0)
    model = compiled(Transformer(VOCAB_SIZE, VOCAB_SIZE, max_length=length, **config),
                     jit_compile=False)
    batch = random_batch(batch_size, length)
    step = train_step_function(model, batch)
    matrix = tf.random.normal((MATMUL_SIZE, MATMUL_SIZE))
    matmul = tf.function(lambda a: tf.reduce_sum(tf.matmul(a, a)))
    seconds = interleaved_medians({"train_step": step,
                                   "matmul": lambda: matmul(matrix).numpy()},
                                  repeats, warmup=2)
    flops = flops_of(step_matmuls(config, batch_size, length, VOCAB_SIZE))
    achieved = flops / seconds["train_step"]
    peak = 2 * MATMUL_SIZE ** 3 / seconds["matmul"]
    return {
        "config": {**config, "vocab_size": VOCAB_SIZE, "batch_size": batch_size,
                   "length": length, "jit_compile": False},
        "params": count_params(model),
        "training_step_gflop": flops / 1e9,
        "training_step_seconds": seconds["train_step"],
        "achieved_gflop_per_second": achieved / 1e9,
        "matmul_2048_gflop_per_second": peak / 1e9,
        "efficiency": achieved / peak,
        "goal_efficiency_ge_0_35": achieved / peak >= 0.35,
    }


def precision(repeats, batch_size, length, vocab_size, shrink=None):
    """Part 4: tokens/s of the corpus Transformer recipe under float32 and mixed_bfloat16
    (`shrink`: model fields to override, for the quick mode)."""
    config = {**CORPUS_MODELS["transformer"], "share_embeddings": True,  # three-way tied
              **(shrink or {})}
    models = {}
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        try:
            keras.utils.set_random_seed(0)
            models[policy] = compiled(Transformer(vocab_size, vocab_size, max_length=length,
                                                  **config), jit_compile=False)
        finally:
            keras.mixed_precision.set_global_policy("float32")
    batch = random_batch(batch_size, length)
    seconds = interleaved_medians(
        {name: train_step_function(model, batch) for name, model in models.items()},
        repeats, warmup=2)
    return {"config": {**config, "vocab_size": vocab_size, "batch_size": batch_size,
                       "length": length},
            "target_tokens_per_second": {name: batch_size * length / value
                                         for name, value in seconds.items()},
            "speedup_bfloat16_vs_float32": seconds["float32"] / seconds["mixed_bfloat16"]}


def main():
    args = parse_args(__doc__.splitlines()[0])
    lengths = (16,) if args.quick else (16, 32, 64, 128)
    figures = {
        "ours_vs_keras_hub": ours_against_keras_hub(
            args.repeats, jit_modes=(False,) if args.quick else (False, True),
            batch_size=8 if args.quick else 32),
        "by_sequence_length": tokens_per_second_by_length(
            args.repeats, lengths, tokens_per_batch=256 if args.quick else 4096,
            lstm_config=QUICK_LSTM if args.quick else LSTM_CONFIG,
            transformer_config=QUICK_TRANSFORMER if args.quick else SMALL_TRANSFORMER),
        "cpu_efficiency": cpu_efficiency(
            args.repeats, batch_size=4 if args.quick else 32, length=16 if args.quick else 32,
            config=QUICK_TRANSFORMER if args.quick else EFFICIENCY_TRANSFORMER),
        "precision": precision(args.repeats, batch_size=4 if args.quick else 32,
                               length=8 if args.quick else 16,
                               vocab_size=VOCAB_SIZE if args.quick else 8000,
                               shrink=QUICK_TRANSFORMER if args.quick else None),
    }
    figures["goal_speedup_vs_keras_hub_ge_1_2"] = {
        mode: speedup >= 1.2
        for mode, speedup in figures["ours_vs_keras_hub"]["speedup_ours_vs_keras_hub"].items()}
    write_result("training_speed", args, figures)


if __name__ == "__main__":
    main()
