"""Greedy decoding speed of the Transformer: our cached `decode_step` loop against two baselines.

1. Recomputation, as TensorFlow's Transformer tutorial and the keras.io examples decode. The
   tutorial runs `model((source, prefix))` on the growing prefix `tokens[:, :t]` at step t and
   keeps the last position's logits; a stronger variant encodes once and reruns only the
   decoder on the prefix. The keras.io "translation with KerasHub" example drives
   `keras_hub.samplers.GreedySampler` with `model((source, prompt))[:, t - 1]` on the whole
   padded prompt (fixed shapes, so it also compiles with XLA).
2. keras-hub: `keras_hub.samplers.GreedySampler` driving a `keras_hub.layers.TransformerDecoder`
   stack of the same size with its self-attention key/value cache (cross-attention keys and
   values computed once per sentence, as our `encode` does).

Also beam search (k = 4) against greedy search, and our loop and the keras.io loop compiled
with XLA (`jit_compile=True`; the tutorial's growing prefix cannot be). Every decoder runs
inside a `tf.function`, and no end token can stop a loop early (`end_id=-1`), so each produces
exactly N tokens.

3. CTranslate2 (`by_batch_size`): the same weights exported with `keras_s2s.exporters.ctranslate2`
   (float32 and int8), greedy and beam 4 at batch 1 and 32, side by side with our graph loop
   (and its XLA compilation, full mode), CTranslate2 held to exactly N tokens too
   (`min_decoding_length = max_decoding_length = N`) on all the machine's cores. In the same
   rows, timed in the same rounds, the deployed paths of these weights, saved as a run
   directory of maximum target length N whose END logit is ruled out by its output bias (so
   every path gives N tokens, which is checked):
   - REST: the run exported (`export_run`, greedy and beam 4) and served by
     `keras-s2s serve` in a subprocess on 127.0.0.1, as it is deployed (its own process, not
     the benchmark's), with batching off (`rest`) and on (`rest_batching`,
     `serving/batching_parameters.txt`). Predict requests to the `translate_ids` signature
     (the same ids in, ids out; the answer also carries its attention weights): one request
     of the whole batch, and at batch 32 also 32 concurrent clients of one sentence each
     (`rest_32_clients`, `rest_32_clients_batching`), where server-side batching matters.
   - TFLite (`keras_s2s.exporters.tflite.convert`, float32 and dynamic-range, one model per batch
     size and search, no prefix) run by LiteRT's `Interpreter` on all cores: greedy rows, and
     beam 4 at batch 1 (a phone translates one sentence at a time); the size of each model
     is in `tflite.bytes`.
   - REST, XLA (`rest_xla`, `--rest-rows` or full mode): the run exported with `--xla on`
     (`export_run(xla=True)`) and served with `--xla_cpu_compilation_enabled`, its warm-up
     cut to the batch sizes and signatures the rows call, so that its load compiles those
     programs and no request does.
   Each row gives the share of each deployed path's tokens equal to our graph loop's. The
   quick mode serves the greedy export alone and converts float32 alone. `--batch-1-only`
   measures the batch 1 rows alone, without REST (our graph loop, CTranslate2 and TFLite
   greedy and beam 4; a few minutes) → `decoding_speed_batch1.json`, float32 alone with
   `--quick`.
   Latency (`latency`, with the XLA rows): one sentence of LATENCY_WORDS words through REST,
   greedy (`serving_default` of the graph and the XLA export), against CTranslate2 float32's
   `translate_batch` of it, median of at least LATENCY_CALLS calls; and each server's first
   request after its load, also of the XLA export served without its warm-up.

`--rest-rows` runs the CTranslate2 rows with REST (graph and XLA) only: no recomputation
baselines, no TFLite, no server-side batching, no in-process XLA loop; it writes
`decoding_speed_rest_xla.json`. With `--row batch32_beam4` (or another row) it runs that row
alone (the latency row only with greedy search) → `decoding_speed_rest_xla_batch32_beam4.json`.

`--latency-only` runs the latency row alone (`decoding_speed_latency.json`, a few minutes), with
where its time goes, in the same interleaved rounds: the XLA export's `serving_default` called
in this process as the server calls it (strings in: tokenizer, compiled loop, detokenizer), and
the compiled loop alone on the sentence's ids padded to the export's bucket
(`ours_xla_ids`), at LATENCY_SHORT_OUTPUT tokens too, as CTranslate2 is: the two lengths give
each path's time per decoding step and its fixed cost (encoder, calls).

Usage: python bench/decoding_speed.py [--quick] [--repeats N]
       [--batch-1-only | --rest-rows [--row ROW] | --latency-only]
"""

import concurrent.futures
import contextlib
import functools
import os
import tempfile
import time

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from keras import ops

from common import (REPO_ROOT, interleaved_medians, materialize, parse_args, shown,
                    write_result)
from keras_hub_baseline import KerasHubTransformer
from keras_s2s import run as run_files
from keras_s2s.exporters import tflite
from keras_s2s.training.config import TrainConfig
from keras_s2s.data.tokenizers import SubwordTokenizer
from keras_s2s.decoding import Beam, Greedy, min_compiled_inputs
from keras_s2s.data.pipeline import encode_source
from keras_s2s.exporters.savedmodel import bucketed_source_ids, export_run
from keras_s2s.models import Transformer
from keras_s2s.serving import Client
from keras_s2s.serving.models import load_servable
from keras_s2s.serving.warmup import WARMUP_PATH
from keras_s2s.special_tokens import END_ID, PAD_ID, SPECIAL_TOKENS, START_ID
from serving import BATCHING_FILE, ServerProcess
from tensorflow_serving.apis import prediction_log_pb2

CONFIG = dict(num_layers=2, d_model=256, num_heads=4, d_ff=1024, dropout=0.1)
#: The quick mode's model: every row and path once, at a fraction of the tracing and compiling.
QUICK_CONFIG = dict(num_layers=1, d_model=32, num_heads=2, d_ff=64, dropout=0.1)
VOCAB_SIZE = 1000
NEVER = -1  # an end id no step can produce, so every loop runs its full length
BEAM_WIDTH = 4
SOURCE_LENGTH = 24


def forbidden_ids_bias(vocab_size):
    """(V,) additive bias ruling out padding and the start token, as `Greedy` does."""
    ids = ops.arange(vocab_size)
    return ops.where(ops.logical_or(ids == PAD_ID, ids == START_ID), -1e9, 0.0)


def recompute_decoder(model, source_ids, num_tokens, rerun_encoder):
    """Greedy decoding without a cache: the decoder (and the encoder, if `rerun_encoder`) runs
    on the whole prefix at every step, as in the TF tutorial and keras.io examples."""
    batch_size = tf.shape(source_ids)[0]
    bias = forbidden_ids_bias(model.target_vocab_size)
    memory = None if rerun_encoder else model.encode(source_ids, training=False)
    tokens = tf.TensorArray(tf.int32, size=num_tokens + 1)
    tokens = tokens.write(0, tf.fill([batch_size], START_ID))
    for step in tf.range(num_tokens):
        prefix = tf.transpose(tokens.stack()[: step + 1])  # (B, t)
        if rerun_encoder:
            logits = model((source_ids, prefix), training=False)
        else:
            logits = model.teacher_forced_logits(prefix, memory, training=False)  # (B, t, V)
        next_ids = tf.cast(tf.argmax(logits[:, -1] + bias, axis=-1), tf.int32)
        tokens = tokens.write(step + 1, next_ids)
    return tf.transpose(tokens.stack()[1:])  # (B, N)


def keras_io_greedy(model, source_ids, num_tokens):
    """The keras.io example's decoding: GreedySampler, whole model on the whole padded prompt."""
    batch_size = tf.shape(source_ids)[0]
    bias = forbidden_ids_bias(model.target_vocab_size)
    prompt = tf.concat([tf.fill([batch_size, 1], START_ID),
                        tf.zeros([batch_size, num_tokens], tf.int32)], axis=1)

    def next_token_logits(prompt, cache, index):
        return model((source_ids, prompt), training=False)[:, index - 1, :] + bias, None, cache

    tokens = keras_hub.samplers.GreedySampler()(next_token_logits, prompt, index=1,
                                               mask=prompt != 0)
    return tokens[:, 1:]  # (B, N)


def keras_hub_greedy(model, source_ids, num_tokens):
    """keras-hub's GreedySampler over a cached keras-hub decoder stack (like BartSeq2SeqLM)."""
    batch_size, source_length = tf.shape(source_ids)[0], tf.shape(source_ids)[1]
    head_dim = model.d_model // model.num_heads
    source_mask = source_ids != PAD_ID
    encoded = model.encode(source_ids)  # (B, S, d)
    start = tf.fill([batch_size, 1], START_ID)
    # One call with update index 0 fills each layer's cross-attention cache from the encoder.
    empty_cross = tf.zeros([batch_size, 2, source_length, model.num_heads, head_dim])
    empty_self = tf.zeros([batch_size, 2, num_tokens + 1, model.num_heads, head_dim])
    x = model.embed(model.target_embedding, start)
    cross_caches = []
    for decoder in model.decoders:
        x, _, cross_cache = decoder(
            x, encoded, encoder_padding_mask=source_mask, self_attention_cache=empty_self,
            self_attention_cache_update_index=0, cross_attention_cache=empty_cross,
            cross_attention_cache_update_index=0)
        cross_caches.append(cross_cache)
    bias = forbidden_ids_bias(VOCAB_SIZE)

    def next_token_logits(prompt, cache, index):
        step = index - 1  # the token at `step` predicts the one at `index`
        x = model.embed(model.target_embedding, prompt[:, step][:, None], start_index=step)
        new_caches = []
        for layer, decoder in enumerate(model.decoders):
            x, self_cache, _ = decoder(  # the encoder output is read from the cache
                x, encoded, encoder_padding_mask=source_mask, self_attention_cache=cache[:, layer],
                self_attention_cache_update_index=step, cross_attention_cache=cross_caches[layer],
                cross_attention_cache_update_index=None)
            new_caches.append(self_cache)
        logits = model.output_projection(x)[:, 0] + bias  # (B, V)
        return logits, None, tf.stack(new_caches, axis=1)

    prompt = tf.concat([start, tf.zeros([batch_size, num_tokens], tf.int32)], axis=1)
    cache = tf.zeros([batch_size, model.num_layers, 2, num_tokens + 1, model.num_heads, head_dim])
    sampler = keras_hub.samplers.GreedySampler()
    tokens = sampler(next_token_logits, prompt, cache, index=1, mask=prompt != 0)
    return tokens[:, 1:]  # (B, N)


#: CTranslate2 rows: batch sizes, output length and the weight types compared with our loops.
CT2_BATCH_SIZES = (1, 32)
CT2_OUTPUT_LENGTH = 32
CT2_QUANTIZATIONS = ("none", "int8")
#: The searches of those rows: (name, strategy, beam width).
SEARCHES = (("greedy", Greedy(), 1), (f"beam{BEAM_WIDTH}", Beam(BEAM_WIDTH), BEAM_WIDTH))
#: The deployed paths in those rows: concurrent one-sentence REST clients at the largest batch
#: size, and the TFLite weight types.
REST_CLIENTS = max(CT2_BATCH_SIZES)
TFLITE_QUANTIZATIONS = ("none", "dynamic")
#: The batch sizes each search's TFLite model is converted for.
TFLITE_BATCH_SIZES = {"greedy": CT2_BATCH_SIZES, f"beam{BEAM_WIDTH}": (1,)}
#: TF Serving's flag that lets a server run an XLA export.
XLA_FLAG = "--xla_cpu_compilation_enabled"
#: An XLA export's load compiles its warm-up's programs: minutes on 2 busy cores.
XLA_START_SECONDS = 1800
#: The latency row: words of its one sentence, and the fewest calls its median is of.
LATENCY_WORDS = 20
LATENCY_CALLS = 20
#: The shorter output of `--latency-only`'s per-step split.
LATENCY_SHORT_OUTPUT = 8


def ctranslate2_translators(model):
    """`{quantization: ctranslate2.Translator}` of `model`'s weights (a vocabulary of dummy
    tokens), on all cores."""
    import ctranslate2

    from keras_s2s.exporters.ctranslate2 import save_spec, transformer_spec

    vocabulary = [*SPECIAL_TOKENS, *(f"t{i}" for i in range(len(SPECIAL_TOKENS), VOCAB_SIZE))]
    translators = {}
    with tempfile.TemporaryDirectory() as directory:
        for quantize in CT2_QUANTIZATIONS:
            path = os.path.join(directory, quantize)
            os.makedirs(path)
            save_spec(transformer_spec(model), vocabulary, vocabulary, path, quantize)
            translators[quantize] = ctranslate2.Translator(path, device="cpu",
                                                           intra_threads=os.cpu_count())
    return translators, vocabulary


def rule_out_end(model):
    """Give END's logit a bias of -1e9: no path (an export's, TFLite's) can stop before its
    maximum length, so each gives as many tokens as our loops, which ignore END."""
    bias = model.output_projection.bias
    bias.assign(ops.where(ops.arange(bias.shape[0]) == END_ID, -1e9, bias))


def write_run(model, vocabulary, directory, source_length):
    """A run directory of `model`, as training writes it (configuration, tokenizers of
    `vocabulary`, model), for the export and the TFLite converter; outputs CT2_OUTPUT_LENGTH
    tokens long."""
    config = TrainConfig(arch="transformer", out=directory, vocab_size=VOCAB_SIZE,
                         max_source_length=source_length, max_target_length=CT2_OUTPUT_LENGTH,
                         model={name: getattr(model, name) for name in CONFIG})
    tokenizer = SubwordTokenizer(vocabulary)
    return run_files.save_run(directory, config, model, tokenizer, tokenizer)


def keep_warmup_of(version_dir, shapes):
    """Cut the warm-up records of the export at `version_dir` to one per (signature name, batch
    size) of `shapes`, the longest source's (the last written), so that its load compiles
    the programs the rows call and no others."""
    path = os.path.join(version_dir, WARMUP_PATH)
    kept = {}
    for record in tf.data.TFRecordDataset(path):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        texts_or_ids = "source_ids" if "source_ids" in request.inputs else "inputs"
        batch = request.inputs[texts_or_ids].tensor_shape.dim[0].size
        if (request.model_spec.signature_name, batch) in shapes:
            kept[request.model_spec.signature_name, batch] = record.numpy()
    with tf.io.TFRecordWriter(path) as writer:
        for record in kept.values():
            writer.write(record)


@contextlib.contextmanager
def rest_servers(run_dir, directory, searches, batching=True, xla=False):
    """`{(search, suffix): ServerProcess}`: `keras-s2s serve` of the run exported with each of
    `searches`, batching off (suffix "") and on ("_batching", with `batching`), and its XLA
    export ("_xla", with `xla`: warm-up of the signatures and batch sizes of the rows, and
    of the latency row for greedy search); stopped on leaving."""
    variants = [("", (), False)]
    if batching:
        variants.append(("_batching", ("--enable_batching=true",
                                       f"--batching_parameters_file={BATCHING_FILE}"), False))
    if xla:
        variants.append(("_xla", (XLA_FLAG,), True))
    with contextlib.ExitStack() as stack:
        servers = {}
        for search, strategy, _ in SEARCHES:
            if search not in searches:
                continue
            version_dirs = {}  # one export per kind, served by each of its servers
            for suffix, flags, compiled in variants:
                if compiled in version_dirs:
                    version_dir = version_dirs[compiled]
                else:
                    version_dir = version_dirs[compiled] = export_run(
                        run_dir, search, base_path=os.path.join(directory, "_xla" if compiled
                                                                else "graph"),
                        strategy=strategy, xla=compiled,
                        warmup_batch_sizes=CT2_BATCH_SIZES if compiled else None)
                if compiled:
                    keep_warmup_of(version_dir, {("translate_ids", size) for size in
                                                 CT2_BATCH_SIZES} | (
                        {("serving_default", 1)} if search == "greedy" else set()))
                server = ServerProcess(str(REPO_ROOT), os.path.dirname(version_dir), *flags,
                                       model_name=search, start_seconds=XLA_START_SECONDS)
                stack.callback(server.stop)
                servers[search, suffix] = server
        yield servers


def tflite_runners(run_dir, directory, quantizations, batch_sizes):
    """`{(search, quantization, batch size): signature runner}` and `{"<search>_<weights>":
    bytes}` (at batch 1): the run converted to TFLite for each search's `TFLITE_BATCH_SIZES`
    among `batch_sizes`, run by LiteRT on all cores (as CTranslate2 is)."""
    runners, sizes = {}, {}
    for search, strategy, _ in SEARCHES:
        for quantize in quantizations:
            for batch_size in set(TFLITE_BATCH_SIZES[search]) & set(batch_sizes):
                path = os.path.join(directory, f"{search}-{quantize}-{batch_size}.tflite")
                size = tflite.convert(run_dir, path, quantize=quantize, batch_size=batch_size,
                                      strategy=strategy)
                if batch_size == 1:
                    sizes[f"{search}_{tflite_weights(quantize)}"] = size
                runners[search, quantize, batch_size] = Interpreter(
                    model_path=path, num_threads=os.cpu_count()).get_signature_runner()
    return runners, sizes


def tflite_weights(quantize):
    """The name of a TFLite model's weight type in the results: float32, dynamic."""
    return "float32" if quantize == "none" else quantize


def rest_translate_ids(server, model_name, source_ids):
    """(output ids, lengths) of one predict request of `source_ids` to `translate_ids`."""
    outputs = Client(server.url, model_name).predict(inputs={"source_ids": source_ids.tolist()},
                                                     signature_name="translate_ids")
    return np.array(outputs["output_ids"]), np.array(outputs["lengths"])


def one_request_a_row(pool, translate, source_ids):
    """`translate` of each row of `source_ids` as a request of its own, all sent at once by
    `pool`'s threads; their (output ids, lengths) stacked."""
    answers = list(pool.map(lambda row: translate(row[None]), source_ids))
    return tuple(np.concatenate(parts) for parts in zip(*answers))


def tflite_translate_ids(runner, source_ids):
    """(output ids, lengths) of a TFLite signature runner on `source_ids`, with no prefix."""
    prefix_shape = runner.get_input_details()["prefix_ids"]["shape"]
    outputs = runner(source_ids=source_ids, prefix_ids=np.zeros(prefix_shape, np.int32))
    return outputs["output_ids"], outputs["lengths"]


def deployed_contenders(search, source_ids, servers, runners, pool):
    """`{name: () → (output ids, lengths)}` of the REST and TFLite paths of one row."""
    batch_size = len(source_ids)
    contenders = {}
    for (name, suffix), server in servers.items():
        if name == search:
            translate = functools.partial(rest_translate_ids, server, search)
            contenders[f"rest{suffix}"] = functools.partial(translate, source_ids)
            if batch_size == REST_CLIENTS:
                contenders[f"rest_{REST_CLIENTS}_clients{suffix}"] = functools.partial(
                    one_request_a_row, pool, translate, source_ids)
    for (name, quantize, size), runner in runners.items():
        if name == search and size == batch_size:
            contenders[f"tflite_{tflite_weights(quantize)}"] = functools.partial(
                tflite_translate_ids, runner, source_ids)
    return contenders


def latency_sentence(vocabulary):
    """The latency row's sentence: LATENCY_WORDS words of `vocabulary`, one token each."""
    return " ".join(vocabulary[len(SPECIAL_TOKENS):][:LATENCY_WORDS])


def latency_row(servers, translators, vocabulary, repeats, xla_base_path, in_process=None):
    """Median seconds of one LATENCY_WORDS-word sentence through REST, greedy (the graph and
    XLA exports' `serving_default`), and through CTranslate2 float32, over at least
    LATENCY_CALLS interleaved calls (`repeats` in quick mode), with the `in_process`
    contenders (`{name: function}`) in the same rounds; and the first request of each
    server, and of the XLA export at `xla_base_path` served again without its warm-up."""
    sentence = latency_sentence(vocabulary)
    length = CT2_OUTPUT_LENGTH
    rest = {f"rest{suffix}": functools.partial(Client(server.url, "greedy").translate,
                                               [sentence])
            for (search, suffix), server in servers.items() if search == "greedy"}
    first_request = {name: _seconds(function) for name, function in rest.items()}
    cold = ServerProcess(str(REPO_ROOT), xla_base_path, XLA_FLAG, "--enable_model_warmup=false",
                         model_name="greedy", start_seconds=XLA_START_SECONDS)
    try:
        first_request["rest_xla_without_warmup"] = _seconds(functools.partial(
            Client(cold.url, "greedy").translate, [sentence]))
    finally:
        cold.stop()
    ctranslate2 = translators["none"]
    seconds = interleaved_medians({**rest, "ctranslate2_float32": lambda: (
        ctranslate2.translate_batch([sentence.split()], beam_size=1, min_decoding_length=length,
                                    max_decoding_length=length)), **(in_process or {})}, repeats)
    return {"words": LATENCY_WORDS, "calls": repeats, "p50_seconds": seconds,
            "p50_vs_ctranslate2_float32": {name: seconds[name] / seconds["ctranslate2_float32"]
                                           for name in rest},
            "first_request_seconds": first_request}


def latency_breakdown(model, translator, vocabulary, version_dir):
    """`--latency-only`'s in-process contenders of the latency row: the XLA export at
    `version_dir` (`serving_default`, as the server runs it), the compiled loop alone on the
    sentence's bucketed ids, and it and CTranslate2 float32 (`translator`) at
    LATENCY_SHORT_OUTPUT tokens."""
    sentence = latency_sentence(vocabulary)
    signature = load_servable("greedy", 1, version_dir).signature("serving_default")
    tokenizer = SubwordTokenizer(vocabulary)
    source_ids = bucketed_source_ids(encode_source(tf.constant([sentence]), tokenizer,
                                                   SOURCE_LENGTH), SOURCE_LENGTH, PAD_ID,
                                     min_compiled_inputs(Greedy().rows_per_input))
    contenders = {"savedmodel_xla_in_process": functools.partial(
        signature.run, {"inputs": np.array([sentence], object)})}
    for length in (CT2_OUTPUT_LENGTH, LATENCY_SHORT_OUTPUT):
        suffix = "" if length == CT2_OUTPUT_LENGTH else f"_{length}_tokens"
        loop = tf.function(lambda s, n=length: Greedy().decode(model, s, n)["tokens"],
                           jit_compile=True)
        contenders[f"ours_xla_ids{suffix}"] = lambda f=loop: materialize(f(source_ids))
        if suffix:
            contenders[f"ctranslate2_float32{suffix}"] = functools.partial(
                translator.translate_batch, [sentence.split()], beam_size=1,
                min_decoding_length=length, max_decoding_length=length)
    return contenders


def per_step(seconds, name):
    """(seconds per decoding step, fixed seconds) of contender `name` of a latency row, from
    its times at CT2_OUTPUT_LENGTH and LATENCY_SHORT_OUTPUT tokens."""
    long, short = seconds[name], seconds[f"{name}_{LATENCY_SHORT_OUTPUT}_tokens"]
    step = (long - short) / (CT2_OUTPUT_LENGTH - LATENCY_SHORT_OUTPUT)
    return step, long - CT2_OUTPUT_LENGTH * step


def latency_only(args):
    """`--latency-only`: the latency row and `latency_breakdown`'s contenders, greedy export
    alone."""
    keras.utils.set_random_seed(0)
    ours = Transformer(VOCAB_SIZE, VOCAB_SIZE, max_length=128,
                       **(QUICK_CONFIG if args.quick else CONFIG))
    ours.build()
    rule_out_end(ours)
    translators, vocabulary = ctranslate2_translators(ours)
    with tempfile.TemporaryDirectory() as directory:
        run_dir = write_run(ours, vocabulary, os.path.join(directory, "run"), SOURCE_LENGTH)
        export_dir = os.path.join(directory, "export")
        with rest_servers(run_dir, export_dir, ["greedy"], batching=False, xla=True) as servers:
            xla_base_path = os.path.join(export_dir, "_xla", "greedy")
            in_process = latency_breakdown(ours, translators["none"], vocabulary,
                                           os.path.join(xla_base_path, "1"))
            latency = latency_row(servers, translators, vocabulary,
                                  max(args.repeats, LATENCY_CALLS), xla_base_path, in_process)
    seconds = latency["p50_seconds"]
    steps = {name: dict(zip(("seconds_per_step", "fixed_seconds"), per_step(seconds, name)))
             for name in ("ours_xla_ids", "ctranslate2_float32")}
    load = os.getloadavg()
    write_result("decoding_speed_latency", args, {
        "config": {**(QUICK_CONFIG if args.quick else CONFIG), "vocab_size": VOCAB_SIZE,
                   "source_length": SOURCE_LENGTH, "output_length": CT2_OUTPUT_LENGTH,
                   "threads": os.cpu_count()},
        "latency": latency, "per_step": steps,
        "rest_xla_over_savedmodel_in_process_seconds":
            seconds["rest_xla"] - seconds["savedmodel_xla_in_process"],
        "load_average_at_end": load[0],
        "goal_rest_xla_p50_le_1_2x_ctranslate2_float32":
            latency["p50_vs_ctranslate2_float32"]["rest_xla"] <= 1.2})


def _seconds(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def side_by_side_row(model, source_ids, strategy, width, translators, vocabulary, deployed,
                     repeats, xla):
    """Seconds, target tokens/s and sentences/s of our loops, CTranslate2's and the `deployed`
    paths on `source_ids`, and the share of each deployed path's tokens equal to our loop's."""
    batch_size, length = len(source_ids), CT2_OUTPUT_LENGTH
    tokens = [[vocabulary[i] for i in row] for row in source_ids.numpy()]

    def loop(s):
        return strategy.decode(model, s, length, end_id=NEVER)["tokens"]

    graph = tf.function(loop)
    contenders = {"ours_graph": lambda: materialize(graph(source_ids))}
    if xla:  # on the rows an XLA export gives its compiled loop (a batch of 1 grows to 2)
        compiled = tf.function(loop, jit_compile=True)
        padded = bucketed_source_ids(source_ids, source_ids.shape[1], PAD_ID,
                                     min_compiled_inputs(strategy.rows_per_input))
        contenders["ours_xla"] = lambda: materialize(compiled(padded)[:batch_size])
    for quantize, translator in translators.items():
        contenders[f"ctranslate2_{'float32' if quantize == 'none' else quantize}"] = (
            lambda t=translator: t.translate_batch(
                tokens, beam_size=width, min_decoding_length=length, max_decoding_length=length,
                length_penalty=0.0))
    ours = contenders["ours_graph"]()
    agreement = {}
    for name, function in deployed.items():
        output_ids, lengths = function()
        assert output_ids.shape == ours.shape and (lengths == length).all(), (name, lengths)
        agreement[name] = float(np.mean(output_ids == ours))
    seconds = interleaved_medians({**contenders, **deployed}, repeats)
    ours_best = min(value for name, value in seconds.items() if name.startswith("ours"))
    return {
        "seconds": seconds,
        "target_tokens_per_second": {name: batch_size * length / value
                                     for name, value in seconds.items()},
        "sentences_per_second": {name: batch_size / value for name, value in seconds.items()},
        "ours_best_vs_ctranslate2_float32": seconds["ctranslate2_float32"] / ours_best,
        "ctranslate2_int8_vs_ours_graph": seconds["ours_graph"] / seconds["ctranslate2_int8"],
        "rest_speed_vs_ctranslate2": {
            name: {quantize: seconds[f"ctranslate2_{quantize}"] / seconds[name]
                   for quantize in ("float32", "int8")}
            for name in seconds if name in ("rest", "rest_xla")},
        "share_of_tokens_equal_to_ours_graph": agreement,
    }


def ctranslate2_side_by_side(model, source_length, repeats, xla, rest_searches,
                             tflite_quantizations, batch_sizes=CT2_BATCH_SIZES, batching=True,
                             rest_xla=False, searches=None):
    """`side_by_side_row` per batch size and search, every output exactly CT2_OUTPUT_LENGTH
    tokens; REST rows for `rest_searches` (`rest_servers`' `batching` and `xla`: `rest_xla`),
    TFLite ones of `tflite_quantizations`; rows of `searches` alone (None: every search; the
    latency row needs greedy search). Returns the rows by name, the servers' figures (their
    start (load and warm-up) seconds and, with `rest_xla`, the `latency_row`, measured first)
    and the TFLite models' sizes (`tflite_runners`)."""
    translators, vocabulary = ctranslate2_translators(model)
    rows, serving = {}, {}
    with (tempfile.TemporaryDirectory() as directory,
          concurrent.futures.ThreadPoolExecutor(REST_CLIENTS) as pool):
        run_dir = write_run(model, vocabulary, os.path.join(directory, "run"), source_length)
        runners, sizes = tflite_runners(run_dir, directory, tflite_quantizations, batch_sizes)
        export_dir = os.path.join(directory, "export")
        with rest_servers(run_dir, export_dir, rest_searches, batching, rest_xla) as servers:
            serving["start_seconds"] = {f"{search}{suffix}": server.start_seconds
                                        for (search, suffix), server in servers.items()}
            if rest_xla and "greedy" in rest_searches:
                serving["latency"] = latency_row(servers, translators, vocabulary,
                                              max(repeats, LATENCY_CALLS),
                                              os.path.join(export_dir, "_xla", "greedy"))
                print("latency", serving, flush=True)
            for batch_size in batch_sizes:
                source_ids = tf.random.uniform((batch_size, source_length), 4, VOCAB_SIZE,
                                               tf.int32)
                for search, strategy, width in SEARCHES:
                    if searches is not None and search not in searches:
                        continue
                    deployed = deployed_contenders(search, source_ids.numpy(), servers, runners,
                                                   pool)
                    rows[f"batch{batch_size}_{search}"] = side_by_side_row(
                        model, source_ids, strategy, width, translators, vocabulary, deployed,
                        repeats, xla)
                    print(f"batch{batch_size}_{search}", rows[f"batch{batch_size}_{search}"],
                          flush=True)  # a long run's rows, as they come
    return rows, serving, sizes


def tflite_figures(quantizations, sizes, batch_sizes=CT2_BATCH_SIZES):
    """The `tflite` entry of the results: what was converted and each model's size."""
    return {"quantizations": quantizations, "threads": os.cpu_count(),
            "batch_sizes": {search: [size for size in converted if size in batch_sizes]
                            for search, converted in TFLITE_BATCH_SIZES.items()},
            "bytes": sizes}


def batch_one_rows(model, source_length, repeats, tflite_quantizations):
    """`--batch-1-only`: the batch 1 rows of our graph loop, CTranslate2 and TFLite (greedy and
    beam 4, of `tflite_quantizations`), and the TFLite models' sizes."""
    rule_out_end(model)
    rows, _, sizes = ctranslate2_side_by_side(model, source_length, repeats, xla=False,
                                           rest_searches=[],
                                           tflite_quantizations=tflite_quantizations,
                                           batch_sizes=(1,))
    return {"output_length": CT2_OUTPUT_LENGTH, "threads": os.cpu_count(),
            "tflite": tflite_figures(tflite_quantizations, sizes, batch_sizes=(1,)),
            "by_batch_size": rows}


def _options(parser):
    """The benchmark's own flags: the parts measured alone."""
    parts = parser.add_mutually_exclusive_group()
    parts.add_argument("--batch-1-only", action="store_true",
                       help="the batch 1 rows of CTranslate2, TFLite and our graph loop alone")
    parts.add_argument("--rest-rows", action="store_true",
                       help="only the CTranslate2 rows, with REST on the graph and the XLA export")
    parser.add_argument("--row", choices=[f"batch{size}_{search}" for size in CT2_BATCH_SIZES
                                          for search, _, _ in SEARCHES],
                        help="with --rest-rows: that row alone (no latency row unless greedy)")
    parts.add_argument("--latency-only", action="store_true",
                       help="only the latency row, with where its time goes")


def main():
    args = parse_args(__doc__.splitlines()[0], _options)
    if args.row and not args.rest_rows:
        raise SystemExit(f"--row {args.row} picks a row of --rest-rows; give both")
    if args.rest_rows:
        return rest_rows(args)
    if args.latency_only:
        return latency_only(args)
    batch_size, source_length = 8, SOURCE_LENGTH
    output_lengths = (16,) if args.quick else (16, 32, 64)
    keras.utils.set_random_seed(0)
    config = QUICK_CONFIG if args.quick else CONFIG
    ours = Transformer(VOCAB_SIZE, VOCAB_SIZE, max_length=128, **config)
    ours.build()
    tflite_quantizations = ["none"] if args.quick else list(TFLITE_QUANTIZATIONS)
    if args.batch_1_only:
        write_result("decoding_speed_batch1", args, batch_one_rows(
            ours, source_length, args.repeats, tflite_quantizations))
        return
    hub = KerasHubTransformer(VOCAB_SIZE, **config)
    source_ids = tf.random.uniform((batch_size, source_length), 4, VOCAB_SIZE, tf.int32)
    hub((source_ids, source_ids[:, :2]))

    figures = {"config": {**config, "vocab_size": VOCAB_SIZE, "batch_size": batch_size,
                          "source_length": source_length, "beam_width": BEAM_WIDTH},
               "params_ours": ours.count_params(), "params_keras_hub": hub.count_params(),
               "by_output_length": {}}
    for num_tokens in output_lengths:
        def cached(s, n=num_tokens):
            return Greedy().decode(ours, s, n, end_id=NEVER)["tokens"]

        def keras_io(s, n=num_tokens):
            return keras_io_greedy(ours, s, n)

        decoders = {
            "cached_greedy_ours": tf.function(cached),
            "cached_greedy_ours_xla": tf.function(cached, jit_compile=True),
            "recompute_encoder_and_decoder": tf.function(
                lambda s, n=num_tokens: recompute_decoder(ours, s, n, rerun_encoder=True)),
            "recompute_decoder": tf.function(
                lambda s, n=num_tokens: recompute_decoder(ours, s, n, rerun_encoder=False)),
            "recompute_keras_io": tf.function(keras_io),
            "recompute_keras_io_xla": tf.function(keras_io, jit_compile=True),
            "keras_hub_greedy_sampler": tf.function(
                lambda s, n=num_tokens: keras_hub_greedy(hub, s, n)),
            "beam_search_ours": tf.function(lambda s, n=num_tokens: Beam(BEAM_WIDTH).decode(
                ours, s, n, end_id=NEVER)["tokens"]),
        }
        seconds = interleaved_medians(
            {name: lambda f=function: materialize(f(source_ids))
             for name, function in decoders.items()}, args.repeats)
        cached = seconds["cached_greedy_ours"]
        figures["by_output_length"][num_tokens] = {
            "seconds": seconds,
            "speedup_vs_recompute_encoder_and_decoder":
                seconds["recompute_encoder_and_decoder"] / cached,
            "speedup_vs_recompute_decoder": seconds["recompute_decoder"] / cached,
            "speedup_vs_recompute_keras_io": seconds["recompute_keras_io"] / cached,
            "speedup_xla_vs_recompute_keras_io_xla":
                seconds["recompute_keras_io_xla"] / seconds["cached_greedy_ours_xla"],
            "xla_speedup_of_cached_greedy": cached / seconds["cached_greedy_ours_xla"],
            "speedup_vs_keras_hub_greedy_sampler": seconds["keras_hub_greedy_sampler"] / cached,
            "beam4_cost_relative_to_greedy": seconds["beam_search_ours"] / cached,
            "greedy_ms_per_token": 1000 * cached / num_tokens,
        }
    rest_searches = ["greedy"] if args.quick else [search for search, _, _ in SEARCHES]
    rule_out_end(ours)  # for the deployed paths, which stop at END; our loops ignore it
    figures["ctranslate2"] = {
        "output_length": CT2_OUTPUT_LENGTH, "threads": os.cpu_count(),
        "rest": {"server": "keras-s2s serve, a subprocess on 127.0.0.1",
                 "signature": "translate_ids", "searches": rest_searches,
                 "concurrent_clients": REST_CLIENTS, "batching_parameters": shown(BATCHING_FILE)},
    }
    rows, serving, sizes = ctranslate2_side_by_side(
        ours, source_length, args.repeats, xla=not args.quick, rest_searches=rest_searches,
        tflite_quantizations=tflite_quantizations, rest_xla=not args.quick)
    figures["ctranslate2"].update(tflite=tflite_figures(tflite_quantizations, sizes),
                                  by_batch_size=rows)
    figures["ctranslate2"]["rest"].update(serving)
    batch32 = figures["ctranslate2"]["by_batch_size"][f"batch{max(CT2_BATCH_SIZES)}_greedy"]
    figures["goal_ours_best_ge_half_ctranslate2_float32_at_batch32"] = (
        batch32["ours_best_vs_ctranslate2_float32"] >= 0.5)
    figures["goal_ctranslate2_int8_ge_3x_ours_graph"] = (
        batch32["ctranslate2_int8_vs_ours_graph"] >= 3)
    longest = figures["by_output_length"][max(output_lengths)]
    figures["goal_speedup_vs_recompute_at_64_ge_5"] = {
        baseline: longest[f"speedup_vs_{baseline}"] >= 5
        for baseline in ("recompute_encoder_and_decoder", "recompute_decoder",
                         "recompute_keras_io")}
    write_result("decoding_speed", args, figures)


def rest_rows(args):
    """`--rest-rows`: the CTranslate2 rows with our graph loop and REST (graph and XLA export)
    alone, the latency row, and the goals of REST against CTranslate2."""
    keras.utils.set_random_seed(0)
    ours = Transformer(VOCAB_SIZE, VOCAB_SIZE, max_length=128, **CONFIG)
    ours.build()
    rule_out_end(ours)
    searches = ["greedy"] if args.quick else [search for search, _, _ in SEARCHES]
    batch_sizes = CT2_BATCH_SIZES
    if args.row:  # "batch<size>_<search>"
        size, search = args.row.removeprefix("batch").split("_")
        batch_sizes, searches = (int(size),), [search]
    rows, serving, _ = ctranslate2_side_by_side(
        ours, SOURCE_LENGTH, args.repeats, xla=False, rest_searches=searches,
        tflite_quantizations=[], batch_sizes=batch_sizes, batching=False, rest_xla=True,
        searches=searches)
    speeds = {name: row["rest_speed_vs_ctranslate2"]["rest_xla"] for name, row in rows.items()
              if "rest_xla" in row["rest_speed_vs_ctranslate2"]}
    latency = serving.get("latency", {}).get("p50_vs_ctranslate2_float32", {}).get("rest_xla")
    write_result("decoding_speed_rest_xla" + (f"_{args.row}" if args.row else ""), args, {
        "config": {**CONFIG, "vocab_size": VOCAB_SIZE, "source_length": SOURCE_LENGTH,
                   "output_length": CT2_OUTPUT_LENGTH, "threads": os.cpu_count()},
        "by_batch_size": rows, "serving": serving,
        "goal_rest_xla_ge_ctranslate2_float32": {name: speed["float32"] >= 1.0
                                                 for name, speed in speeds.items()},
        "goal_rest_xla_ge_half_ctranslate2_int8": {name: speed["int8"] >= 0.5
                                                   for name, speed in speeds.items()},
        "goal_rest_xla_p50_le_1_2x_ctranslate2_float32": None if latency is None
        else latency <= 1.2})


if __name__ == "__main__":
    main()
