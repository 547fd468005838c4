"""Tokens/s of `keras-s2s train`'s own loop by Keras backend, on Multi30k.

`bench/backend_training.py` times fixed-shape steps; this times what the command does: the
README's Multi30k recipe (Transformer 2 × 256, unigram 8k shared vocabulary, batch 32), its
pipeline (`keras_s2s.training.loop.make_datasets`: length buckets, and batches padded to their
bucket's longest pair when the step is compiled per shape), `compile_for_training` with the
loop's XLA setting (`accelerator_settings`: on for JAX), and whole epochs of `fit` with
validation, on the first `--pairs` training pairs of the recipe's split. Each contender runs in
a worker process of its own (one Keras backend a process); the first epoch (which compiles) is
timed apart, then the workers take turns of one epoch each, round by round.

Tokens/s counts the real target tokens of an epoch (padding left out), so padding to bucket
lengths is charged to the contender that pads.

Usage: python bench/cli_training.py [--quick] [--repeats N] [--pairs N] [--contenders A,B]
       [--data TSV]
"""

import json
import os
import statistics
import subprocess
import sys
import time

#: `{contender: (KERAS_BACKEND, --xla, fixed shapes)}`; None: what the loop chooses.
CONTENDERS = {"tensorflow_graph": ("tensorflow", "off", None),
              "tensorflow_graph_fixed_shapes": ("tensorflow", "off", True),
              "tensorflow_xla": ("tensorflow", "on", None),
              "jax": ("jax", "auto", None)}
DEFAULT_CONTENDERS = ("tensorflow_graph", "tensorflow_graph_fixed_shapes", "jax")
RECIPE_MODEL = dict(num_layers=2, d_model=256, d_ff=1024, dropout=0.1, normalize_first=True,
                    tie_embeddings=True, share_embeddings=True)


def worker(name, pairs, data):
    """In a worker process: the recipe's model and datasets, a first epoch, then `ready`;
    then for every `go` line on stdin one epoch of `fit`, printing its seconds."""
    import keras
    import numpy as np

    from keras_s2s import architectures
    from keras_s2s.data.corpus import load_pairs, vocabulary_pairs
    from keras_s2s.data.tokenizers import train_tokenizers
    from keras_s2s.training.config import TrainConfig
    from keras_s2s.training.loop import accelerator_settings, make_datasets
    from keras_s2s.training.objectives import compile_for_training

    _, xla, fixed_shapes = CONTENDERS[name]
    config = TrainConfig(arch="transformer", data=data, out="unused",
                         tokenizer="unigram", vocab_size=8000, shared_vocab=True, batch_size=32,
                         warmup_steps=400, learning_rate=0.3, model=RECIPE_MODEL,
                         jit_compile=xla)
    keras.utils.set_random_seed(config.seed)
    train_pairs, validation_pairs = load_pairs(config)  # the split's share, on fewer pairs
    validation_pairs = validation_pairs[:max(1, pairs * len(validation_pairs)
                                             // len(train_pairs))]
    train_pairs = train_pairs[:pairs]
    source, target = train_tokenizers(vocabulary_pairs(train_pairs), config.vocab_size,
                                      shared=True, kind=config.tokenizer)
    _, jit_compile = accelerator_settings(config)
    train_data, validation_data, _ = make_datasets(
        config, source, target, train_pairs, validation_pairs,
        fixed_shapes=jit_compile if fixed_shapes is None else fixed_shapes)
    tokens = int(sum(np.sum(labels != target.pad_id) for _, labels in train_data))
    shapes = len({(inputs[0].shape, inputs[1].shape) for inputs, _ in train_data})
    model = config.build_model(source.vocabulary_size, target.vocabulary_size)
    compile_for_training(model, architectures.get("transformer").make_optimizer(model, config),
                         config.label_smoothing, jit_compile=jit_compile, pad_id=target.pad_id)

    def epoch():
        start = time.perf_counter()
        history = model.fit(train_data, validation_data=validation_data, epochs=1, verbose=0)
        return time.perf_counter() - start, history.history["val_loss"][-1]

    first, _ = epoch()
    print(json.dumps({"ready": True, "first_epoch_seconds": first, "tokens": tokens,
                      "train_batch_shapes": shapes, "jit_compile": jit_compile,
                      "pairs": [len(train_pairs), len(validation_pairs)]}), flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        seconds, val_loss = epoch()
        print(json.dumps({"seconds": seconds, "val_loss": val_loss}), flush=True)


def _root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start(name, pairs, data):
    environment = {**os.environ, "KERAS_BACKEND": CONTENDERS[name][0], "TF_CPP_MIN_LOG_LEVEL": "3",
                   "PYTHONPATH": os.pathsep.join(filter(None, [_root(),
                                                               os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", name,
                                str(pairs), data], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env=environment)
    return process, json.loads(process.stdout.readline())


def main():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import parse_args, shown, take_turns, write_result

    from corpora import CORPORA

    def add_arguments(parser):
        parser.add_argument("--data", default=CORPORA["multi30k"]["data"],
                            help="the Multi30k training TSV (default: ../shared/data's)")
        parser.add_argument("--pairs", type=int, default=None,
                            help="training pairs (default: 3000; 600 with --quick)")
        parser.add_argument("--contenders", default=",".join(DEFAULT_CONTENDERS),
                            help=f"comma-separated, of {', '.join(CONTENDERS)}")

    args = parse_args(__doc__.splitlines()[0], add_arguments)
    pairs = args.pairs or (600 if args.quick else 3000)
    names = args.contenders.split(",")
    unknown = sorted(set(names) - set(CONTENDERS))
    if unknown:
        raise SystemExit(f"unknown contenders {unknown}; known: {sorted(CONTENDERS)}")
    workers, ready, load = {}, {}, [os.getloadavg()]
    try:
        for name in names:  # one at a time: each first epoch compiles on a machine of its own
            workers[name], ready[name] = _start(name, pairs, args.data)
        times, losses = take_turns(workers, args.repeats, "val_loss")
    finally:
        for process in workers.values():
            process.stdin.close()
            process.wait()
    load.append(os.getloadavg())
    seconds = {name: statistics.median(values) for name, values in times.items()}
    baseline = names[0]
    figures = {
        "config": {"data": shown(args.data), "model": RECIPE_MODEL, "batch_size": 32,
                   "pairs": pairs, "vocab_size": 8000, "tokenizer": "unigram"},
        "load_average_start_end": load,
        "workers": ready,
        "epoch_seconds": times,
        "target_tokens_per_second": {name: ready[name]["tokens"] / value
                                     for name, value in seconds.items()},
        f"speedup_over_{baseline}": {name: seconds[baseline] / value
                                     for name, value in seconds.items()},
        "last_val_loss": losses,
    }
    write_result("cli_training", args, figures)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
