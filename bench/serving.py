"""Serving cost of an exported dates model: REST vs direct calls, batching, TFLite (prints JSON).

- REST (`keras_s2s.serving.ModelServer`, in this process, on 127.0.0.1) with batching off and on
  (`serving/batching_parameters.txt`): p50/p99 latency and throughput of one-sentence predict
  requests from 1 and 32 concurrent clients, the two servers taking turns round by round.
- REST overhead: one-sentence request against a direct call of the SavedModel's
  `serving_default`, interleaved.
- TFLite (`keras_s2s.tflite.convert`, quantization none/dynamic/float16): file size, latency per
  sentence against the SavedModel's `translate_ids` on the same ids, and exact match on fresh
  dates, against the reference and against the float32 SavedModel's outputs.

    python bench/serving.py --quick
"""

import concurrent.futures
import glob
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import REPO_ROOT, interleaved_medians, parse_args, write_result  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from keras_s2s import tflite  # noqa: E402
from keras_s2s.config import TrainConfig  # noqa: E402
from keras_s2s.data import synthetic  # noqa: E402
from keras_s2s.data.pipeline import encode_source  # noqa: E402
from keras_s2s.data.tokenizers import SubwordTokenizer  # noqa: E402
from keras_s2s.export import export_run  # noqa: E402
from keras_s2s.serving import Client, ModelConfig, ModelServer, ServerOptions  # noqa: E402
from keras_s2s.serving.config import parse_batching_parameters  # noqa: E402
from keras_s2s.training import train  # noqa: E402

MODEL = {"num_layers": 2, "d_model": 64, "num_heads": 4, "d_ff": 256}
MAX_SOURCE_LENGTH, MAX_TARGET_LENGTH = 32, 16
BATCHING_FILE = REPO_ROOT / "serving" / "batching_parameters.txt"
CONCURRENCY = (1, 32)


def train_and_export(workdir):
    """A small Transformer trained on dates, exported; returns (run_dir, export version dir)."""
    run_dir = os.path.join(workdir, "run")
    config = TrainConfig(arch="transformer", data="dates", out=run_dir,
                         epochs=3, num_pairs=5000, warmup_steps=200, learning_rate=0.5,
                         max_source_length=MAX_SOURCE_LENGTH,
                         max_target_length=MAX_TARGET_LENGTH, model=MODEL)
    train(config, verbose=0)
    return run_dir, export_run(run_dir, "dates", base_path=os.path.join(workdir, "export"))


def load_test(url, sentences, clients, requests_per_client, max_seconds):
    """`clients` threads each send one-sentence requests in turn (bounded in count and time).

    Returns the per-request latencies (s) and the wall time of the whole test.
    """
    deadline = time.perf_counter() + max_seconds

    def client_loop(index):
        client, latencies = Client(url, "dates"), []
        for number in range(requests_per_client):
            if time.perf_counter() > deadline:
                break
            sentence = sentences[(index * requests_per_client + number) % len(sentences)]
            start = time.perf_counter()
            client.predict(instances=[sentence])
            latencies.append(time.perf_counter() - start)
        return latencies

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        latencies = [t for result in pool.map(client_loop, range(clients)) for t in result]
    return latencies, time.perf_counter() - start


def rest_figures(export_dir, sentences, args):
    """Latency/throughput with batching off and on, and the REST overhead over a direct call."""
    base_path = os.path.dirname(export_dir)
    batching = parse_batching_parameters(BATCHING_FILE.read_text())
    options = {name: ServerOptions(models=[ModelConfig("dates", base_path)], rest_api_port=0,
                                   batching=parameters)
               for name, parameters in (("batching_off", None), ("batching_on", batching))}
    saved_model = tf.saved_model.load(export_dir).signatures["serving_default"]
    requests_per_client = 5 if args.quick else 20
    rounds = args.repeats
    with ModelServer(options["batching_off"]) as off, ModelServer(options["batching_on"]) as on:
        servers = {"batching_off": off, "batching_on": on}
        one = tf.constant(sentences[:1])
        single = interleaved_medians({
            "direct_savedmodel": lambda: saved_model(inputs=one)["outputs"].numpy(),
            **{f"rest_{name}": (lambda url=server.url: Client(url, "dates").predict(
                instances=sentences[:1])) for name, server in servers.items()},
        }, repeats=10 * args.repeats, warmup=3)
        samples = {(name, clients): ([], []) for name in servers for clients in CONCURRENCY}
        for _ in range(rounds):
            for clients in CONCURRENCY:
                for name, server in servers.items():
                    latencies, seconds = load_test(server.url, sentences, clients,
                                                   requests_per_client, max_seconds=60)
                    samples[name, clients][0].extend(latencies)
                    samples[name, clients][1].append(len(latencies) / seconds)
    load = {}
    for (name, clients), (latencies, throughputs) in samples.items():
        load[f"{name}/clients_{clients}"] = {
            "requests": len(latencies),
            "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 2),
            # one sentence a request, so sentences/s equals requests/s
            "requests_per_second": round(statistics.median(throughputs), 1),
        }
    ratios = {f"batching_on_over_off_throughput/clients_{clients}": round(
        load[f"batching_on/clients_{clients}"]["requests_per_second"]
        / load[f"batching_off/clients_{clients}"]["requests_per_second"], 2)
        for clients in CONCURRENCY}
    return {
        "single_request_median_ms": {name: round(1000 * value, 2)
                                     for name, value in single.items()},
        "rest_over_direct": {name: round(single[f"rest_{name}"] / single["direct_savedmodel"], 2)
                             for name in servers},
        "load": load,
        "ratios": ratios,
        "requests_per_client_per_round": requests_per_client,
        "rounds": rounds,
        "batching_parameters": str(BATCHING_FILE.relative_to(REPO_ROOT)),
    }


def saved_model_bytes(export_dir):
    """The SavedModel's graph and weights (not `assets.extra/`, the run's files)."""
    paths = [os.path.join(export_dir, "saved_model.pb"),
             *glob.glob(os.path.join(export_dir, "variables", "*"))]
    return sum(os.path.getsize(path) for path in paths)


def share_equal(outputs, expected):
    """The fraction of `outputs` equal to `expected`, position by position."""
    return sum(o == e for o, e in zip(outputs, expected)) / len(expected)


def tflite_figures(run_dir, export_dir, workdir, args):
    """Size, latency and exact match of each quantization against the SavedModel."""
    source_tokenizer = SubwordTokenizer.load(run_dir, "source")
    target_tokenizer = SubwordTokenizer.load(run_dir, "target")
    pairs = synthetic.generate("dates", 200, seed=20261123)
    ids = encode_source([s for s, _ in pairs], source_tokenizer, MAX_SOURCE_LENGTH).numpy()
    ids = np.pad(ids, [(0, 0), (0, MAX_SOURCE_LENGTH - ids.shape[1])]).astype(np.int32)
    translate_ids = tf.saved_model.load(export_dir).signatures["translate_ids"]

    def saved_model_ids(row):
        return translate_ids(source_ids=tf.constant(row))["output_ids"].numpy()

    runners, sizes = {}, {}
    for mode in tflite.QUANTIZATIONS:
        path = os.path.join(workdir, f"dates-{mode}.tflite")
        sizes[mode] = tflite.convert(export_dir, path, quantize=mode,
                                     max_source_length=MAX_SOURCE_LENGTH,
                                     max_target_length=MAX_TARGET_LENGTH)
        runners[mode] = Interpreter(model_path=path).get_signature_runner("serving_default")

    def tflite_ids(mode, row):
        return runners[mode](source_ids=row)["output_ids"]

    def texts(decode):
        rows = np.concatenate([decode(ids[i:i + 1]) for i in range(len(ids))])
        return [t.decode("utf-8") for t in target_tokenizer.detokenize(rows).numpy()]

    one = ids[:1]
    latency = interleaved_medians(
        {"savedmodel": lambda: saved_model_ids(one),
         **{mode: (lambda mode=mode: tflite_ids(mode, one)) for mode in tflite.QUANTIZATIONS}},
        repeats=20 * args.repeats, warmup=3)
    reference = [t for _, t in pairs]
    float32 = texts(saved_model_ids)
    modes = {"savedmodel": {"bytes": saved_model_bytes(export_dir), "outputs": float32}}
    for mode in tflite.QUANTIZATIONS:
        modes[f"tflite_{mode}"] = {"bytes": sizes[mode],
                                   "outputs": texts(lambda row, mode=mode: tflite_ids(mode, row))}
    figures = {}
    for name, mode in modes.items():
        outputs = mode["outputs"]
        seconds = latency[name.removeprefix("tflite_")]
        figures[name] = {
            "bytes": mode["bytes"],
            "median_ms_per_sentence": round(1000 * seconds, 2),
            "speedup_over_savedmodel": round(latency["savedmodel"] / seconds, 2),
            "exact_match": share_equal(outputs, reference),
            "agreement_with_savedmodel": share_equal(outputs, float32),
        }
    return {"sentences": len(pairs), "max_source_length": MAX_SOURCE_LENGTH,
            "max_target_length": MAX_TARGET_LENGTH, "models": figures}


def main():
    args = parse_args(__doc__.splitlines()[0])
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        run_dir, export_dir = train_and_export(workdir)
        train_seconds = time.perf_counter() - started
        sentences = [s for s, _ in synthetic.generate("dates", 500, seed=4242)]
        figures = {
            "model": {"arch": "transformer", **MODEL,
                      "train_and_export_seconds": round(train_seconds, 1)},
            "rest": rest_figures(export_dir, sentences, args),
            "tflite": tflite_figures(run_dir, export_dir, workdir, args),
        }
    write_result("serving", args, figures)


if __name__ == "__main__":
    main()
