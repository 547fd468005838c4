"""Serving cost of an exported dates model: REST vs direct calls, batching, TFLite (prints JSON).

- REST (`keras_s2s.serving.ModelServer`, in this process, on 127.0.0.1) with batching off and on
  (`serving/batching_parameters.txt`): p50/p99 latency and throughput of one-sentence predict
  requests from 1 and 32 concurrent clients, the two servers taking turns round by round.
- REST overhead: one-sentence request against a direct call of the SavedModel's
  `serving_default`, interleaved.
- Protocols: gRPC (`--port`) against REST on the same server, batching off: the median
  one-sentence predict, interleaved, and p50/p99 latency and throughput from 1 and 32 clients.
- TFLite (`exporters.tflite.convert`, quantization none/dynamic/float16): file size, latency per
  sentence against the SavedModel's `translate_ids` on the same ids, and exact match on fresh
  dates, against the reference and against the float32 SavedModel's outputs.
- Hardening, on a y = x/2 + 2 SavedModel, each server a `keras-s2s serve` subprocess
  on 127.0.0.1: the 1M-float predict round trip of the server before its hardening (the
  package as of commit `BEFORE_COMMIT`, extracted with `git archive`) and now, interleaved; 8
  concurrent 1M-float predicts with status requests meanwhile; a 10,000-request soak at 32 clients
  (errors, p50/p99, server RSS before and after); idle connections past the connection limit.
- Overload, on the exported dates model, each server a `keras-s2s serve` subprocess with a 10 s
  deadline: the server before lanes and admission (the package as of `LOAD_BEFORE_COMMIT`) and
  after, one after the other: K clients at once each posting 256 strings of 2,000 characters
  (513 KB): statuses, latency min/median/max, completed large requests per second; then 16
  clients posting 256 strings of 500 characters (129 KB) in a loop for 8 s (0.5 s apart after a
  503), with small
  requests (a one-instance predict, status, metadata) meanwhile: their p50/p99/max latency, and
  the completed medium requests per second. The load average is noted before each.
- Warm-up, on the exported dates model, each server a `keras-s2s serve` subprocess, with
  `--enable_model_warmup` false and true in turn: seconds from start to serving, and the
  latency of the first, the tenth and the median of the 2nd..10th one-sentence predicts.

    python bench/serving.py --quick
    KERAS_S2S_BENCH_SERVING_PART=hardening python bench/serving.py   # the hardening part alone
    KERAS_S2S_BENCH_SERVING_PART=overload python bench/serving.py    # the overload part alone
    KERAS_S2S_BENCH_SERVING_PART=protocols python bench/serving.py   # gRPC against REST alone
    KERAS_S2S_BENCH_SERVING_PART=warmup python bench/serving.py      # the warm-up part alone
"""

import concurrent.futures
import glob
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import REPO_ROOT, interleaved_medians, parse_args, write_result  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from keras_s2s.exporters import tflite  # noqa: E402
from keras_s2s.training.config import TrainConfig  # noqa: E402
from keras_s2s.data import synthetic  # noqa: E402
from keras_s2s.data.pipeline import encode_source  # noqa: E402
from keras_s2s.data.tokenizers import load_tokenizer  # noqa: E402
from keras_s2s.exporters.savedmodel import export_run  # noqa: E402
from keras_s2s.serving import Client, ModelConfig, ModelServer, ServerOptions  # noqa: E402
from keras_s2s.serving.config import parse_batching_parameters  # noqa: E402
from keras_s2s.training.loop import train  # noqa: E402

MODEL = {"num_layers": 2, "d_model": 64, "num_heads": 4, "d_ff": 256}
MAX_SOURCE_LENGTH, MAX_TARGET_LENGTH = 32, 16
BATCHING_FILE = REPO_ROOT / "serving" / "batching_parameters.txt"
CONCURRENCY = (1, 32)


def train_and_export(workdir, quick):
    """A small Transformer trained on dates, exported; returns (run_dir, export version dir).

    The quick mode's model learns little: its latencies, not its translations, are the figure.
    """
    run_dir = os.path.join(workdir, "run")
    config = TrainConfig(arch="transformer", data="dates", out=run_dir,
                         epochs=1 if quick else 3, num_pairs=1000 if quick else 5000,
                         warmup_steps=200, learning_rate=0.5,
                         max_source_length=MAX_SOURCE_LENGTH,
                         max_target_length=MAX_TARGET_LENGTH, model=MODEL)
    train(config, verbose=0)
    return run_dir, export_run(run_dir, "dates", base_path=os.path.join(workdir, "export"))


def load_test(url, sentences, clients, requests_per_client, max_seconds, warm=False):
    """`clients` threads each send one-sentence requests in turn (bounded in count and time);
    `warm`: each first sends one untimed request (a gRPC client's first one also fetches the
    signature's input types).

    Returns the per-request latencies (s) and the wall time of the whole test.
    """
    deadline = time.perf_counter() + max_seconds

    def client_loop(index):
        client, latencies = Client(url, "dates"), []
        if warm:
            client.predict(instances=sentences[:1])
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


def protocol_figures(export_dir, sentences, args):
    """gRPC against REST on one server (batching off): the median one-sentence predict,
    interleaved, and p50/p99 latency and throughput from 1 and 32 clients, the protocols taking
    turns round by round."""
    options = ServerOptions(models=[ModelConfig("dates", os.path.dirname(export_dir))],
                            rest_api_port=0, port=0)
    requests_per_client = 5 if args.quick else 20
    with ModelServer(options) as server:
        urls = {"rest": server.url, "grpc": f"grpc://127.0.0.1:{server.grpc_port}"}
        clients = {name: Client(url, "dates") for name, url in urls.items()}
        single = interleaved_medians(
            {name: (lambda client=client: client.predict(instances=sentences[:1]))
             for name, client in clients.items()},
            repeats=10 * args.repeats, warmup=3)
        samples = {(name, count): ([], []) for name in urls for count in CONCURRENCY}
        for _ in range(args.repeats):
            for count in CONCURRENCY:
                for name, url in urls.items():
                    latencies, seconds = load_test(url, sentences, count, requests_per_client,
                                                   max_seconds=60, warm=True)
                    samples[name, count][0].extend(latencies)
                    samples[name, count][1].append(len(latencies) / seconds)
    load = {f"{name}/clients_{count}": {
        "requests": len(latencies), **_percentiles_ms(latencies),
        "requests_per_second": round(statistics.median(throughputs), 1),
    } for (name, count), (latencies, throughputs) in samples.items()}
    return {
        "single_request_median_ms": {name: round(1000 * value, 2)
                                     for name, value in single.items()},
        "load": load,
        "grpc_over_rest_throughput": {
            f"clients_{count}": round(load[f"grpc/clients_{count}"]["requests_per_second"]
                                      / load[f"rest/clients_{count}"]["requests_per_second"], 2)
            for count in CONCURRENCY},
        "requests_per_client_per_round": requests_per_client,
        "rounds": args.repeats,
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
    source_tokenizer = load_tokenizer(run_dir, "source")
    target_tokenizer = load_tokenizer(run_dir, "target")
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


#: The last commit before the server's hardening fixes: the "before" server of those figures.
BEFORE_COMMIT = "df9ddcc"


class HalfPlusTwo(tf.Module):
    """TF Serving's half_plus_two: y = x / 2 + 2 on float32 [batch]."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def predict(self, x):
        return {"y": 0.5 * x + 2.0}


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`python -m keras_s2s.serving.server` in a subprocess, importing keras_s2s from `pythonpath`
    (the working tree, or an older commit's extracted package), serving `model_name`."""

    def __init__(self, pythonpath, base_path, *flags, model_name="half", start_seconds=120):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "keras_s2s.serving.server", f"--model_name={model_name}",
                   f"--model_base_path={base_path}", f"--rest_api_port={self.port}",
                   "--rest_api_timeout_in_ms=600000", *flags]
        if not any(flag.startswith("--port") for flag in flags):
            # gRPC on a free port too: `serve` takes TF Serving's 8500 unless told, and
            # benchmarks run several servers at once.
            command.append(f"--port={_free_port()}")
        env = dict(os.environ, PYTHONPATH=pythonpath, TF_CPP_MIN_LOG_LEVEL="2")
        self.process = subprocess.Popen(command, env=env, cwd=pythonpath, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + start_seconds
        while time.monotonic() < deadline:
            try:
                if _get(f"{self.url}/v1/models/{model_name}", timeout=2)[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server on port {self.port} did not start")

    def memory_mb(self):
        """Resident and peak resident memory of the server process, MB."""
        with open(f"/proc/{self.process.pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status)
        return {"rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
                "peak_rss_mb": round(int(fields["VmHWM"].split()[0]) / 1024, 1)}

    def open_files(self):
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)


def _get(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def _post(url, body, timeout=600):
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _before_tree(workdir, commit=BEFORE_COMMIT):
    """The package as of `commit`, extracted into `workdir`; None without git history."""
    archive = os.path.join(workdir, f"before-{commit}.tar")
    try:
        subprocess.run(["git", "-C", str(REPO_ROOT), "archive", "-o", archive, commit,
                        "keras_s2s"], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    tree = os.path.join(workdir, f"before-{commit}")
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def _percentiles_ms(latencies):
    return {"p50_ms": round(1000 * float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 2),
            "max_ms": round(1000 * max(latencies), 2)}


def big_request_figures(before, after, rows, repeats):
    """Round trip of one `rows`-float predict, before and after, interleaved; medians."""
    values = np.round(np.random.default_rng(0).random(rows), 3)
    numbers = ", ".join("%g" % value for value in values.tolist())
    body = ('{"instances": [' + numbers + "]}").encode()
    servers = {"before": before, "after": after} if before is not None else {"after": after}
    times = {name: [] for name in servers}
    answers = {}
    for _ in range(repeats):
        for name, server in servers.items():
            start = time.perf_counter()
            status, answer = _post(server.url + "/v1/models/half:predict", body)
            times[name].append(time.perf_counter() - start)
            assert status == 200, (name, status, answer[:300])
            answers[name] = answer
    figures = {"rows": rows, "body_bytes": len(body), "repeats": repeats,
               **{f"{name}_seconds": round(statistics.median(t), 3) for name, t in times.items()}}
    if before is not None:
        speedup = statistics.median(times["before"]) / statistics.median(times["after"])
        figures["speedup"] = round(speedup, 1)
        figures["same_response_text"] = answers["before"] == answers["after"]
    return figures


def concurrent_big_figures(server, rows, clients):
    """`clients` concurrent `rows`-float predicts; status and metadata requests sent meanwhile."""
    body = ('{"instances": [' + ", ".join(["0.5"] * rows) + "]}").encode()
    memory_before = server.memory_mb()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        url = server.url + "/v1/models/half:predict"
        big = [pool.submit(_post, url, body) for _ in range(clients)]
        small = []
        while not all(future.done() for future in big) and time.perf_counter() - start < 300:
            for path in ("/v1/models/half", "/v1/models/half/metadata"):
                begin = time.perf_counter()
                assert _get(server.url + path, timeout=60)[0] == 200
                small.append(time.perf_counter() - begin)
            time.sleep(0.05)
        statuses = [future.result()[0] for future in big]
        wall = time.perf_counter() - start
    return {"clients": clients, "rows": rows, "body_bytes": len(body), "statuses": statuses,
            "wall_seconds": round(wall, 2), "status_and_metadata_requests": len(small),
            "status_and_metadata_latency": _percentiles_ms(small),
            "server_memory_before": memory_before, "server_memory_after": server.memory_mb()}


def soak_figures(server, requests, clients):
    """`requests` small predicts from `clients` keep-alive clients; errors and latency."""
    body = b'{"instances": [1.0, 2.0, 3.0]}'
    expected = b'{"predictions": [2.5, 3.0, 3.5]}'
    memory_before = server.memory_mb()

    def client(count):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        latencies, errors = [], 0
        for _ in range(count):
            start = time.perf_counter()
            try:
                connection.request("POST", "/v1/models/half:predict", body)
                response = connection.getresponse()
                ok = response.status == 200 and response.read() == expected
            except (OSError, http.client.HTTPException):
                connection.close()
                ok = False
            latencies.append(time.perf_counter() - start)
            errors += not ok
        connection.close()
        return latencies, errors

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        counts = [requests // clients + (index < requests % clients) for index in range(clients)]
        results = list(pool.map(client, counts))
    wall = time.perf_counter() - start
    latencies = [t for result in results for t in result[0]]
    return {"requests": len(latencies), "clients": clients, "errors": sum(r[1] for r in results),
            "requests_per_second": round(len(latencies) / wall, 1), **_percentiles_ms(latencies),
            "server_memory_before": memory_before, "server_memory_after": server.memory_mb()}


def idle_connection_figures(pythonpath, base_path, connections, max_connections, header_seconds):
    """`connections` connections that never send a byte, against a server allowing
    `max_connections` and `header_seconds` for headers: what it closes, and when."""
    server = ServerProcess(pythonpath, base_path, f"--rest_api_max_connections={max_connections}",
                           f"--rest_api_header_timeout_in_ms={int(header_seconds * 1000)}")
    sockets = []
    try:
        files_before = server.open_files()
        start = time.perf_counter()
        opened_at = []
        for _ in range(connections):
            sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
            opened_at.append(time.perf_counter())
        opened = time.perf_counter() - start
        time.sleep(0.5)
        files_peak = server.open_files()
        begin = time.perf_counter()
        status = _post(server.url + "/v1/models/half:predict", b'{"instances": [1.0]}', 30)[0]
        request_ms = round(1000 * (time.perf_counter() - begin), 2)
        for sock in sockets:
            sock.settimeout(0)
        closed_at = {}
        give_up = start + opened + header_seconds + 30
        while len(closed_at) < len(sockets) and time.perf_counter() < give_up:
            for index, sock in enumerate(sockets):
                if index not in closed_at:
                    try:
                        if sock.recv(1) == b"":
                            closed_at[index] = time.perf_counter() - opened_at[index]
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed_at[index] = time.perf_counter() - opened_at[index]
            time.sleep(0.05)
        closed_early = sum(t < header_seconds * 0.9 for t in closed_at.values())
        return {"connections": connections, "max_connections": max_connections,
                "header_timeout_seconds": header_seconds, "open_seconds": round(opened, 2),
                "server_open_files_before": files_before, "server_open_files_peak": files_peak,
                "predict_meanwhile": {"status": status, "ms": request_ms},
                "closed_by_server": len(closed_at),
                "closed_before_the_header_timeout_to_make_room": closed_early,
                "longest_open_seconds": round(max(closed_at.values()), 2) if closed_at else None,
                "server_open_files_after": server.open_files()}
    finally:
        for sock in sockets:
            sock.close()
        server.stop()


def hardening_figures(args):
    """The hardening figures (see the module docstring)."""
    rows = 20_000 if args.quick else 1_000_000
    with tempfile.TemporaryDirectory() as workdir:
        base_path = os.path.join(workdir, "half")
        tf.saved_model.save(HalfPlusTwo(), os.path.join(base_path, "1"),
                            signatures={"serving_default": HalfPlusTwo().predict})
        # The quick mode (CI) checks the script, not the fix: no server of the old commit.
        before_tree = None if args.quick else _before_tree(workdir)
        after = ServerProcess(str(REPO_ROOT), base_path)
        before = ServerProcess(before_tree, base_path) if before_tree is not None else None
        try:
            big = big_request_figures(before, after, rows, repeats=1 if args.quick else 3)
        finally:
            if before is not None:
                before.stop()
        try:
            concurrent_big = concurrent_big_figures(after, rows, clients=4 if args.quick else 8)
            soak = soak_figures(after, 200 if args.quick else 10_000,
                                clients=8 if args.quick else 32)
        finally:
            after.stop()
        idle = idle_connection_figures(str(REPO_ROOT), base_path, 60 if args.quick else 2000,
                                       max_connections=20 if args.quick else 1024,
                                       header_seconds=2.0 if args.quick else 20.0)
    before_commit = (BEFORE_COMMIT if before_tree is not None
                     else "skipped (quick mode, or no git history)")
    return {"before_commit": before_commit,
            "loadavg_at_start": os.getloadavg(), "big_request_round_trip": big,
            "concurrent_big_requests": concurrent_big, "soak": soak, "idle_connections": idle}


#: The last commit before requests ran in lanes with admission: the "before" server of the
#: overload figures.
LOAD_BEFORE_COMMIT = "5e59385"


def _strings_body(count, characters, seed):
    """`{"instances": [...]}` of `count` strings of `characters` characters (dates and filler)."""
    rng = np.random.default_rng(seed)
    words = [s for s, _ in synthetic.generate("dates", 64, seed=seed)]
    strings = []
    for _ in range(count):
        text = ""
        while len(text) < characters:
            text += words[int(rng.integers(len(words)))] + " "
        strings.append(text[:characters])
    return json.dumps({"instances": strings}).encode()


def heavy_burst_figures(server, body, clients):
    """`clients` at once, each posting `body` once."""
    url = server.url + "/v1/models/dates:predict"

    def post(_):
        start = time.perf_counter()
        try:
            status = _post(url, body, timeout=120)[0]
        except OSError:  # connection refused or reset: counted as status 0
            status = 0
        return status, time.perf_counter() - start

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(post, range(clients)))
    wall = time.perf_counter() - start
    done = [seconds for status, seconds in results if status == 200]
    statuses = {str(code): sum(status == code for status, _ in results)
                for code in sorted({status for status, _ in results})}
    figures = {"clients": clients, "body_bytes": len(body), "statuses": statuses,
               "wall_seconds": round(wall, 2),
               "completed_per_second": round(len(done) / wall, 2)}
    if done:
        figures["completed_seconds_min_median_max"] = [
            round(min(done), 2), round(statistics.median(done), 2), round(max(done), 2)]
    refused = [seconds for status, seconds in results if status in (429, 503)]
    if refused:
        figures["refused_seconds_max"] = round(max(refused), 3)
    return figures


#: How long a client of the saturation figures waits after being refused, before it retries.
REFUSED_BACKOFF_SECONDS = 0.5


def saturated_figures(server, body, clients, seconds):
    """`clients` posting `body` in a loop for `seconds`; small requests meanwhile."""
    url = server.url + "/v1/models/dates:predict"
    stop_at = time.perf_counter() + seconds
    small = {"predict_one": ("POST", url, b'{"instances": ["March 3, 2021"]}'),
             "status": ("GET", server.url + "/v1/models/dates", None),
             "metadata": ("GET", server.url + "/v1/models/dates/metadata", None)}

    def medium_client(_):
        statuses = []
        while time.perf_counter() < stop_at:
            statuses.append(_post(url, body, timeout=120)[0])
            if statuses[-1] in (429, 503):
                time.sleep(REFUSED_BACKOFF_SECONDS)
        return statuses

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        futures = [pool.submit(medium_client, index) for index in range(clients)]
        latencies = {kind: [] for kind in small}
        small_statuses = []
        while time.perf_counter() < stop_at:
            for kind, (method, target, data) in small.items():
                begin = time.perf_counter()
                if method == "GET":
                    try:
                        small_statuses.append(_get(target, timeout=120)[0])
                    except urllib.error.HTTPError as error:
                        small_statuses.append(error.code)
                else:
                    small_statuses.append(_post(target, data, timeout=120)[0])
                latencies[kind].append(time.perf_counter() - begin)
            time.sleep(0.1)
        statuses = [status for future in futures for status in future.result()]
        wall = time.perf_counter() - start
    every_small = [seconds for values in latencies.values() for seconds in values]
    return {"clients": clients, "body_bytes": len(body), "seconds": seconds,
            "medium_statuses": {str(code): statuses.count(code) for code in sorted(set(statuses))},
            "medium_completed_per_second": round(statuses.count(200) / wall, 2),
            "refused_backoff_seconds": REFUSED_BACKOFF_SECONDS,
            "small_requests": len(every_small),
            "small_statuses": {str(code): small_statuses.count(code)
                               for code in sorted(set(small_statuses))},
            "small_latency": _percentiles_ms(every_small),
            "small_latency_by_kind": {kind: _percentiles_ms(values)
                                      for kind, values in latencies.items()}}


def overload_figures(export_dir, args):
    """Before and after, one after the other, on the exported dates model (module docstring)."""
    base_path = os.path.dirname(export_dir)
    bursts = (4,) if args.quick else (16, 40)
    heavy = _strings_body(256, 2000, seed=1)
    medium = _strings_body(256, 500, seed=2)
    with tempfile.TemporaryDirectory() as workdir:
        trees = {"after": str(REPO_ROOT)}
        before_tree = None if args.quick else _before_tree(workdir, LOAD_BEFORE_COMMIT)
        if before_tree is not None:
            trees = {"before": before_tree, **trees}
        figures = {"before_commit": LOAD_BEFORE_COMMIT if before_tree is not None else
                   "skipped (quick mode, or no git history)", "deadline_ms": 10000}
        for name, tree in trees.items():
            server = ServerProcess(tree, base_path, "--rest_api_timeout_in_ms=10000",
                                   model_name="dates")
            try:
                _post(server.url + "/v1/models/dates:predict", medium)  # warm-up
                _post(server.url + "/v1/models/dates:predict", heavy)
                result = {"loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
                for clients in bursts:
                    result[f"heavy_burst_{clients}"] = heavy_burst_figures(server, heavy, clients)
                result["saturated_by_medium"] = saturated_figures(
                    server, medium, clients=4 if args.quick else 16,
                    seconds=3 if args.quick else 8)
                result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
            finally:
                server.stop()
            figures[name] = result
    return figures


def warmup_figures(export_dir, args):
    """First-request latency after load without and with warm-up (module docstring)."""
    body = json.dumps({"instances": ["March 3, 2021"]}).encode()
    samples = {}
    for _ in range(args.repeats):
        for enabled in ("false", "true"):
            started = time.perf_counter()
            server = ServerProcess(str(REPO_ROOT), os.path.dirname(export_dir),
                                   f"--enable_model_warmup={enabled}", model_name="dates")
            load_seconds = time.perf_counter() - started
            try:
                latencies = []
                for _ in range(10):
                    start = time.perf_counter()
                    assert _post(server.url + "/v1/models/dates:predict", body)[0] == 200
                    latencies.append(time.perf_counter() - start)
            finally:
                server.stop()
            sample = samples.setdefault(f"warmup_{enabled}", {
                "load_seconds": [], "first_ms": [], "tenth_ms": [], "median_2_to_10_ms": []})
            sample["load_seconds"].append(load_seconds)
            sample["first_ms"].append(1000 * latencies[0])
            sample["tenth_ms"].append(1000 * latencies[9])
            sample["median_2_to_10_ms"].append(1000 * statistics.median(latencies[1:]))
    figures = {name: {key: round(statistics.median(values), 2) for key, values in sample.items()}
               for name, sample in samples.items()}
    for figure in figures.values():
        figure["first_over_tenth"] = round(figure["first_ms"] / figure["tenth_ms"], 2)
    figures["rounds"] = args.repeats
    return figures


def main():
    args = parse_args(__doc__.splitlines()[0])
    part = os.environ.get("KERAS_S2S_BENCH_SERVING_PART")
    if part == "hardening":
        write_result("serving_hardening_quick" if args.quick else "serving_hardening", args,
                     {"hardening": hardening_figures(args)})
        return
    # The parts measured on one quickly trained export each: {part: its figures}.
    export_parts = {
        "overload": lambda export_dir: overload_figures(export_dir, args),
        "protocols": lambda export_dir: protocol_figures(export_dir, [
            s for s, _ in synthetic.generate("dates", 500, seed=4242)], args),
        "warmup": lambda export_dir: warmup_figures(export_dir, args),
    }
    if part in export_parts:
        with tempfile.TemporaryDirectory() as workdir:
            _, export_dir = train_and_export(workdir, quick=True)
            write_result(f"serving_{part}_quick" if args.quick else f"serving_{part}", args,
                         {part: export_parts[part](export_dir)})
        return
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        run_dir, export_dir = train_and_export(workdir, args.quick)
        train_seconds = time.perf_counter() - started
        sentences = [s for s, _ in synthetic.generate("dates", 500, seed=4242)]
        figures = {
            "model": {"arch": "transformer", **MODEL,
                      "train_and_export_seconds": round(train_seconds, 1)},
            "rest": rest_figures(export_dir, sentences, args),
            "protocols": protocol_figures(export_dir, sentences, args),
            "tflite": tflite_figures(run_dir, export_dir, workdir, args),
            "hardening": hardening_figures(args),
            "overload": overload_figures(export_dir, args),
        }
        if not args.quick:
            figures["warmup"] = warmup_figures(export_dir, args)
    write_result("serving", args, figures)


if __name__ == "__main__":
    main()
