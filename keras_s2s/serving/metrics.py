"""TF Serving's Prometheus metrics: same names, labels, units (microseconds) and buckets.

Every front end (REST here, gRPC beside it) records through `record_request` and
`record_runtime`, so the counts are one set whatever the entry point. The values live in a
`prometheus_client` registry of this process; `exposition()` writes them as TF Serving's
PrometheusExporter does: counters under their own name (no `_total`), histograms as
`_bucket`/`_sum`/`_count`, names from TF Serving's `/tensorflow/serving/...` with `/` as `:`.
"""

import prometheus_client

_REGISTRY = prometheus_client.CollectorRegistry()
#: monitoring::Buckets::Exponential(10, 1.8, 33): 10 µs to about 20 minutes.
_MICROSECOND_BUCKETS = tuple(10 * 1.8 ** index for index in range(33))


def _counter(name, documentation, labels):
    return prometheus_client.Counter(f":tensorflow:serving:{name}", documentation, labels,
                                     registry=_REGISTRY)


def _histogram(name, documentation, labels):
    return prometheus_client.Histogram(f":tensorflow:serving:{name}", documentation, labels,
                                       buckets=_MICROSECOND_BUCKETS, registry=_REGISTRY)


_REQUEST_COUNT = _counter("request_count", "The total number of requests.",
                          ["model_name", "status"])
_REQUEST_LATENCY = _histogram(
    "request_latency",
    "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
    ["model_name", "API", "entrypoint"])
_RUNTIME_LATENCY = _histogram(
    "runtime_latency", "Distribution of wall time (in microseconds) for Tensorflow runtime.",
    ["model_name", "API", "runtime"])
_WARMUP_LATENCY = _histogram(
    "model_warmup_latency",
    "Distribution of wall time (in microseconds) for warming up the model.",
    ["model_path", "status"])
_WARMUP_RECORDS = _counter("model_warmup_records_read",
                           "Total number of warmup records read during model warmup.",
                           ["model_path", "status"])


def record_request(model_name, api, status, seconds, entrypoint="REST"):
    """One request answered by a front end, as TF Serving's RecordModelRequestCount and
    RecordRequestLatency: counted by `status` (a TensorFlow error code name, "OK" for success);
    its latency is recorded for successes only.

    Args:
        model_name: the model the request named ("" when it named none).
        api: TF Serving's API label: REST uses the URL's verb ("predict", "classify",
            "regress"; "" for GET), gRPC the method ("Predict", "Classify", "Regress", ...).
        status: e.g. "OK", "INVALID_ARGUMENT", "NOT_FOUND".
        seconds: wall time from receiving the request to answering it.
        entrypoint: "REST" or "GRPC".
    """
    _REQUEST_COUNT.labels(model_name, status).inc()
    if status == "OK":
        _REQUEST_LATENCY.labels(model_name, api, entrypoint).observe(seconds * 1e6)


def record_runtime(model_name, api, seconds, runtime="TF1"):
    """One model execution (`api`: "Predict", "Classify" or "Regress"). `runtime` is "TF1" as
    TF Serving's classic runtime (`Session::Run`) labels every SavedModel, TF2 ones included."""
    _RUNTIME_LATENCY.labels(model_name, api, runtime).observe(seconds * 1e6)


def record_warmup(model_path, status, records, seconds):
    """One warm-up replay of the version at `model_path`: `records` read, ending with `status`
    ("OK", or TF Serving's status string "CODE: message")."""
    _WARMUP_LATENCY.labels(model_path, status).observe(seconds * 1e6)
    _WARMUP_RECORDS.labels(model_path, status).inc(records)


def _escape(value):
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def _number(value):
    if value == float("inf"):
        return "+Inf"
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def exposition():
    """Every metric in Prometheus' text format, as TF Serving's PrometheusExporter writes it."""
    lines = []
    for family in _REGISTRY.collect():
        if not family.samples:
            continue
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            name = family.name if family.type == "counter" else sample.name
            labels = ",".join(f'{key}="{_escape(value if key != "le" else _number(float(value)))}"'
                              for key, value in sample.labels.items())
            value = sample.value if sample.name.endswith("_sum") else _number(sample.value)
            lines.append(f"{name}{{{labels}}} {value}")
    return "\n".join(lines) + "\n"
