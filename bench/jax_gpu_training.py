"""Keras-on-JAX training of the corpus Transformer recipe on a GPU, and its BLEU at convergence.

The models and what they optimize (`keras_s2s.models`, `training.objectives`) use `keras.ops`
only, so they train where TensorFlow is not installed: on a JAX GPU machine. Three steps:

    # here (TensorFlow): tokenize Multi30k with a run's tokenizers into fixed-shape batches
    python bench/jax_gpu_training.py prepare --tokenizers RUN_DIR --out .gpu
    # on the GPU machine (JAX, keras and keras_s2s importable): train, print JSON, save weights
    KERAS_BACKEND=jax python bench/jax_gpu_training.py train --data .gpu --epochs 30 --out $OUT
    # here: the weights into a run directory, scored with beam search on val.tsv
    python bench/jax_gpu_training.py score --tokenizers RUN_DIR --weights DIR --out RUN

Batches have a few fixed shapes (lengths padded up to `LENGTHS`, `BATCH_SIZE` rows; short
batches get all-padding rows, which the masked loss ignores), so XLA compiles each shape once.
`train` also times `mixed_bfloat16` against float32 for a few hundred steps, interleaved.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

#: Padded sequence lengths (source and target alike) and rows per batch: the corpus recipe's
#: batch of 32 pairs.
LENGTHS = (16, 24, 32, 48, 64)
BATCH_SIZE = 32
#: The corpus recipe's model and schedule (`bench/corpora.py`, which imports TensorFlow);
#: `train --dropout` sets the dropout.
MODEL = {"num_layers": 2, "d_model": 256, "num_heads": 4, "d_ff": 1024, "dropout": 0.1,
         "normalize_first": True, "tie_embeddings": True, "share_embeddings": True}
SCHEDULE = {"warmup_steps": 400, "scale": 0.3, "label_smoothing": 0.1}


def _batches(source_ids, target_ids, rng=None):
    """Lists of `(source (B, L), target_in (B, L), target_out (B, L))` int32 arrays of the fixed
    shapes, from ragged id lists (START/END added as the training pipeline does)."""
    from keras_s2s.special_tokens import END_ID, START_ID

    buckets = {length: [] for length in LENGTHS}
    for source, target in zip(source_ids, target_ids):
        longest = max(len(source) + 1, len(target) + 1)
        length = next((n for n in LENGTHS if n >= longest), None)
        if length is not None:
            buckets[length].append((source + [END_ID], [START_ID] + target, target + [END_ID]))
    batches = []
    for length, rows in buckets.items():
        if rng is not None:
            rng.shuffle(rows)
        for start in range(0, len(rows), BATCH_SIZE):
            arrays = np.zeros((3, BATCH_SIZE, length), "int32")
            for row, sequences in enumerate(rows[start:start + BATCH_SIZE]):
                for array, sequence in zip(arrays, sequences):
                    array[row, :len(sequence)] = sequence
            batches.append(arrays)
    return batches


def prepare(args):
    """Tokenize the training split and validation set with the run's tokenizers (TensorFlow)."""
    from corpora import CORPORA, TEST_SETS, corpus_config

    from keras_s2s import run as run_files
    from keras_s2s.data.corpus import load_pairs

    config = corpus_config("multi30k", "transformer", "unused", 1)
    train_pairs, validation_pairs = load_pairs(config)
    source_tokenizer, target_tokenizer = run_files.load_tokenizers(args.tokenizers)

    def ids(tokenizer, texts):
        return tokenizer.tokenize(texts).to_list()

    os.makedirs(args.out, exist_ok=True)
    for name, pairs in (("train", train_pairs), ("validation", validation_pairs)):
        source = ids(source_tokenizer, [s for s, _ in pairs])
        target = ids(target_tokenizer, [t for _, t in pairs])
        np.savez_compressed(os.path.join(args.out, f"{name}.npz"),
                            **{f"{i:05d}": b for i, b in enumerate(_batches(source, target))})
    with open(os.path.join(args.out, "meta.json"), "w") as file:
        json.dump({"vocab_size": source_tokenizer.vocabulary_size, "corpus": CORPORA["multi30k"]
                   ["data"], "scored_on": TEST_SETS["multi30k"]}, file)
    print(f"wrote {args.out}: {len(train_pairs)} training pairs")


def _compiled(vocab_size, dropout):
    """The recipe's Transformer (with `dropout`), compiled with XLA as `keras-s2s train`
    compiles it (masked label-smoothed loss, Adam on the warm-up schedule)."""
    from keras_s2s.models import Transformer
    from keras_s2s.training.objectives import compile_for_training, transformer_optimizer

    model = Transformer(vocab_size, vocab_size, max_length=LENGTHS[-1] + 2,
                        **{**MODEL, "dropout": dropout})
    model.build()
    optimizer = transformer_optimizer(MODEL["d_model"], SCHEDULE["warmup_steps"],
                                      SCHEDULE["scale"])
    return compile_for_training(model, optimizer, SCHEDULE["label_smoothing"],
                                jit_compile=True)


def _load(path):
    with np.load(path) as data:
        return [data[key] for key in sorted(data.files)]


def train(args):
    """Train with Keras on JAX for `--epochs` epochs; JSON figures; weights into `--out`."""
    import jax
    import keras

    meta = json.load(open(os.path.join(args.data, "meta.json")))
    train_batches = _load(os.path.join(args.data, "train.npz"))
    validation_batches = _load(os.path.join(args.data, "validation.npz"))
    vocab_size = meta["vocab_size"]
    figures = {"backend": keras.backend.backend(), "devices": [str(d) for d in jax.devices()],
               "keras": keras.__version__, "jax": jax.__version__,
               "model": {**MODEL, "dropout": args.dropout},
               "schedule": SCHEDULE, "batches_per_epoch": len(train_batches)}

    def target_tokens(batches):
        return int(sum((b[2] != 0).sum() for b in batches))

    # Precision: float32 against mixed_bfloat16, interleaved, after each compiled its shapes.
    timed = {}
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(0)
        timed[policy] = _compiled(vocab_size, args.dropout)
    keras.mixed_precision.set_global_policy("float32")
    sample = train_batches[: args.timing_batches]
    seconds = {policy: [] for policy in timed}
    for round_ in range(3):
        for policy, model in timed.items():
            started = time.perf_counter()
            for source, target_in, target_out in sample:
                logs = model.train_on_batch((source, target_in), target_out, return_dict=True)
            float(logs["loss"])
            if round_:  # the first round compiles
                seconds[policy].append(time.perf_counter() - started)
    figures["precision_target_tokens_per_second"] = {
        policy: target_tokens(sample) / float(np.median(values))
        for policy, values in seconds.items()}
    del timed

    keras.utils.set_random_seed(0)
    model = _compiled(vocab_size, args.dropout)
    rng = np.random.default_rng(0)
    history, started = [], time.perf_counter()
    for epoch in range(args.epochs):
        epoch_started = time.perf_counter()
        for index in rng.permutation(len(train_batches)):
            source, target_in, target_out = train_batches[index]
            logs = model.train_on_batch((source, target_in), target_out, return_dict=True)
        train_loss = float(logs["loss"])
        seconds_epoch = time.perf_counter() - epoch_started
        losses, tokens = 0.0, 0
        for source, target_in, target_out in validation_batches:
            count = int((target_out != 0).sum())
            logs = model.test_on_batch((source, target_in), target_out, return_dict=True)
            losses += float(logs["loss"]) * count
            tokens += count
        history.append({"epoch": epoch + 1, "seconds": round(seconds_epoch, 2),
                        "last_batch_loss": round(train_loss, 4),
                        "val_loss": round(losses / tokens, 4)})
        print(json.dumps(history[-1]), flush=True)
        if epoch + 1 in args.save_at:
            _save(model, os.path.join(args.out, f"epoch{epoch + 1:03d}"))
    figures["history"] = history
    figures["tensorflow_imported"] = "tensorflow" in sys.modules
    figures["train_seconds"] = round(time.perf_counter() - started, 1)
    if history:  # the first epoch compiles each batch shape: timed from the second on
        timed_epochs = history[1:] or history
        figures["target_tokens_per_second"] = (target_tokens(train_batches) * len(timed_epochs)
                                               / sum(h["seconds"] for h in timed_epochs))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "jax_gpu_training.json"), "w") as file:
        json.dump(figures, file, indent=2)
    print(json.dumps({k: v for k, v in figures.items() if k != "history"}, indent=2))


#: Bytes of weights per saved part (the GPU machine's files come back 16 MiB at most each).
PART_BYTES = 12 * 2**20


def _save(model, prefix):
    """The weights in float32 `.npz` parts `<prefix>a.npz`, `b`, ... of at most `PART_BYTES`
    each (a weight larger than that alone in its part)."""
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    parts = [[]]
    for weight in (np.asarray(w) for w in model.get_weights()):
        if parts[-1] and sum(w.nbytes for w in parts[-1]) + weight.nbytes > PART_BYTES:
            parts.append([])
        parts[-1].append(weight)
    for letter, part in zip("abcdefgh", parts):
        np.savez(f"{prefix}{letter}.npz", *part)


def score(args):
    """The saved weights in a run directory (the tokenizers' run's config), beam-scored."""
    import shutil

    import quality
    from corpora import TEST_SETS

    from keras_s2s import run as run_files
    from keras_s2s.training.config import TrainConfig
    from keras_s2s.data.tsv import read_tsv

    weights = []
    for letter in "abcdefgh":
        if not os.path.exists(f"{args.weights}{letter}.npz"):
            break
        with np.load(f"{args.weights}{letter}.npz") as data:
            weights += [data[f"arr_{i}"] for i in range(len(data.files))]
    os.makedirs(args.out)
    for name in run_files.portable_files():
        if name != run_files.MODEL:
            shutil.copyfile(os.path.join(args.tokenizers, name), os.path.join(args.out, name))
    config = TrainConfig.load(run_files.config_path(args.out))
    config.model = dict(MODEL)
    config.max_source_length = config.max_target_length = LENGTHS[-1]
    config.save(run_files.config_path(args.out))
    model = config.build_model(weights[0].shape[0], weights[0].shape[0])
    model.build()
    model.set_weights(weights)
    model.save(run_files.model_path(args.out))
    scores = quality.evaluate_corpus(args.out, read_tsv(TEST_SETS["multi30k"]), [1, 4])
    print(json.dumps({name: {k: v for k, v in s.items() if k in ("bleu", "chrf", "alpha")}
                      for name, s in scores.items()}, indent=2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("prepare")
    command.add_argument("--tokenizers", required=True, help="a Multi30k run directory")
    command.add_argument("--out", required=True)
    command = commands.add_parser("train")
    command.add_argument("--data", required=True)
    command.add_argument("--epochs", type=int, default=30)
    command.add_argument("--dropout", type=float, default=0.1)
    command.add_argument("--save-at", type=int, nargs="*", default=[])
    command.add_argument("--timing-batches", type=int, default=100)
    command.add_argument("--out", required=True)
    command = commands.add_parser("score")
    command.add_argument("--tokenizers", required=True)
    command.add_argument("--weights", required=True, help="path prefix of the saved parts")
    command.add_argument("--out", required=True, help="run directory to create")
    args = parser.parse_args()
    {"prepare": prepare, "train": train, "score": score}[args.command](args)


if __name__ == "__main__":
    main()
