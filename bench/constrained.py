"""Lexically constrained beam search against plain beam search: in a graph (`tf.function`), in
an XLA-compiled graph, and through REST (`keras-s2s serve`'s `ModelServer`, in this process:
the `constrained` signature against `beam`).

Beam 4 with 1 and 3 constraint phrases of 2 tokens against beam 4 without, at batch 1 and
32, on a Transformer of the size of the tests' trained dates model (1 layer, d_model 32, 2
heads, d_ff 64, 200 tokens each side, 24 source tokens, 16 output tokens). Its weights are
random and no token ends an output, so every search runs all 16 steps and the figures compare
the steps themselves: the constrained ones rank 4·width + width·C candidates with the phrases'
state instead of 2·width. The loops get `end_id=-1`; the export (the model as a run directory
of dummy tokens "t4" ...) gets END's logit biased to -1e9, and one predict request carries the
whole batch, on the served model's `beam` or `constrained` signature (no prefix). `--quick`
times batch 1 in the graph loop only (no XLA compilation, no export, no server).

Usage: python bench/constrained.py [--quick] [--repeats N]
"""

import os
import tempfile

import numpy as np
import tensorflow as tf

from common import interleaved_medians, materialize, parse_args, write_result
from keras_s2s.decoding import Beam
from keras_s2s.models import Transformer
from keras_s2s.special_tokens import SPECIAL_TOKENS

VOCAB_SIZE, SOURCE_LENGTH, MAX_LENGTH, WIDTH = 200, 24, 16, 4
CONFIG = dict(num_layers=1, d_model=32, num_heads=2, d_ff=64, dropout=0.0)
NEVER = -1  # an end id no step produces: every search runs MAX_LENGTH steps
CONSTRAINT_COUNTS = (1, 3)
#: The dummy tokens of the served run's vocabulary: token id i is "t{i}".
VOCABULARY = [*SPECIAL_TOKENS, *(f"t{i}" for i in range(len(SPECIAL_TOKENS), VOCAB_SIZE))]


def searches(model, jit_compile):
    """`{name: tf.function(source_ids, constraints)}`: plain and constrained beam search."""
    def search(with_constraints):
        return tf.function(lambda source_ids, constraints: Beam(WIDTH).decode(
            model, source_ids, MAX_LENGTH, end_id=NEVER,
            constraints=constraints if with_constraints else None), input_signature=[
            tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None, None], tf.int32)],
            jit_compile=jit_compile)

    return {"beam": search(False), "constrained": search(True)}


def inputs(batch_size, seed):
    """Source ids `(batch, SOURCE_LENGTH - 1)` and, per constraint count, phrases `(batch,
    count, 2)`: the same for every path at one batch size."""
    rng = np.random.default_rng(seed)
    source_ids = rng.integers(len(SPECIAL_TOKENS), VOCAB_SIZE,
                              (batch_size, SOURCE_LENGTH - 1)).astype("int32")
    return source_ids, {count: rng.integers(len(SPECIAL_TOKENS), VOCAB_SIZE,
                                            (batch_size, count, 2)).astype("int32")
                        for count in CONSTRAINT_COUNTS}


def loop_calls(functions, source_ids, phrases):
    """`{name: () → outputs}` of the graph searches on one batch."""
    empty = np.zeros((len(source_ids), 1, 1), "int32")
    calls = {"beam_4": lambda: materialize(functions["beam"](source_ids, empty))}
    for count, ids in phrases.items():
        calls[f"beam_4_{count}_constraints"] = (
            lambda ids=ids: materialize(functions["constrained"](source_ids, ids)))
    return calls


def texts_of(ids):
    """Rows of token ids → texts of the served run's dummy tokens."""
    return [" ".join(VOCABULARY[i] for i in row) for row in ids]


def rest_calls(client, source_ids, phrases):
    """`{name: () → outputs}`: one predict request of the batch to the `beam` signature, or to
    the `constrained` one with the phrases."""
    texts, settings = texts_of(source_ids), {"beam_width": WIDTH, "alpha": 0.6, "n_best": 1}
    calls = {"beam_4": lambda: client.predict(inputs={"inputs": texts, **settings},
                                              signature_name="beam")}
    for count, ids in phrases.items():
        guides = {"prefixes": [""] * len(texts), "constraints": [texts_of(row) for row in ids]}
        calls[f"beam_4_{count}_constraints"] = lambda guides=guides: client.predict(
            inputs={"inputs": texts, **settings, **guides}, signature_name="constrained")
    return calls


def served(model, directory):
    """A `ModelServer` (what `keras-s2s serve` runs, not started) of `model` exported from a
    run directory, END ruled out. Imported here: the quick mode serves nothing."""
    from decoding_speed import rule_out_end
    from keras_s2s import run as run_files
    from keras_s2s.data.tokenizers import SubwordTokenizer
    from keras_s2s.exporters.savedmodel import export_run
    from keras_s2s.serving.config import ModelConfig, ServerOptions
    from keras_s2s.serving.server import ModelServer
    from keras_s2s.training.config import TrainConfig

    rule_out_end(model)
    config = TrainConfig(arch="transformer", out=directory, vocab_size=VOCAB_SIZE,
                         max_source_length=SOURCE_LENGTH, max_target_length=MAX_LENGTH,
                         model=CONFIG)
    tokenizer = SubwordTokenizer(VOCABULARY)
    run_dir = run_files.save_run(os.path.join(directory, "run"), config, model, tokenizer,
                                 tokenizer)
    version_dir = export_run(run_dir, "constrained", base_path=os.path.join(directory, "export"))
    return ModelServer(ServerOptions(
        models=[ModelConfig("constrained", os.path.dirname(version_dir))], rest_api_port=0))


def rest_figures(model, batch_sizes, repeats):
    """`{batch: ratios}` of the REST requests to `model` served."""
    from keras_s2s.serving import Client

    figures = {}
    with tempfile.TemporaryDirectory() as directory:
        with served(model, directory) as server:
            client = Client(server.url, "constrained", timeout=600)
            for batch_size in batch_sizes:
                calls = rest_calls(client, *inputs(batch_size, batch_size))
                figures[f"batch_{batch_size}"] = ratios(interleaved_medians(calls, repeats))
    return figures


def ratios(seconds):
    """Milliseconds of each contender, and each constrained one's over plain beam search."""
    return {**{f"{name}_ms": round(value * 1000, 2) for name, value in seconds.items()},
            **{f"{name}_over_beam_4": round(value / seconds["beam_4"], 2)
               for name, value in seconds.items() if name != "beam_4"}}


def main():
    args = parse_args(__doc__.splitlines()[0])
    model = Transformer(VOCAB_SIZE, VOCAB_SIZE, **CONFIG,
                        max_length=max(SOURCE_LENGTH, MAX_LENGTH))
    model.build()
    batch_sizes = (1,) if args.quick else (1, 32)
    figures = {"load_average_before": [round(load, 2) for load in os.getloadavg()]}
    for path, jit_compile in (("graph", False), ("xla", True))[:1 if args.quick else 2]:
        functions = searches(model, jit_compile)
        for batch_size in batch_sizes:
            calls = loop_calls(functions, *inputs(batch_size, batch_size))
            figures.setdefault(path, {})[f"batch_{batch_size}"] = ratios(
                interleaved_medians(calls, args.repeats))
    if not args.quick:
        figures["rest"] = rest_figures(model, batch_sizes, args.repeats)
    figures["load_average_after"] = [round(load, 2) for load in os.getloadavg()]
    write_result("constrained", args, figures)


if __name__ == "__main__":
    main()
