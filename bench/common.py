"""Shared helpers of the benchmarks: command-line flags, timing, machine description, JSON output.

CPU timings on a shared machine are noisy, so every comparison is a ratio of medians measured in
one process, with the contenders interleaved round by round (a slow spell then hits them all).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Where the JSON and plots go: docs/results, unless $KERAS_S2S_BENCH_RESULTS names another
#: directory (the test of the quick mode uses one, so it never overwrites published figures).
RESULTS_DIR = Path(os.environ.get("KERAS_S2S_BENCH_RESULTS") or REPO_ROOT / "docs" / "results")
_STARTED = time.perf_counter()


def parse_args(description, add_arguments=None):
    """`--quick` (small sizes, few repeats, for CI and `run_all.py --quick`) and `--repeats`,
    and the arguments `add_arguments(parser)` adds."""
    parser = argparse.ArgumentParser(description=description)
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("--quick", action="store_true",
                        help="fewer sizes and repeats; minutes instead of tens of minutes")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per measurement (default: 1 quick, 7 full)")
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 1 if args.quick else 7
    return args


def interleaved_medians(contenders, repeats, warmup=1):
    """Median seconds per call of each `{name: zero-argument function}`.

    Each function is first called `warmup` times (tracing, XLA compilation, caches), then the
    contenders take turns, `repeats` rounds, so that machine noise is shared between them.
    """
    for function in contenders.values():
        for _ in range(warmup):
            function()
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, function in contenders.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def take_turns(workers, repeats, field):
    """Worker processes timed in turns, so that machine noise falls on all of them round by
    round (a process has one Keras backend, so contenders on different backends cannot share
    one): `repeats` rounds in which every worker of `workers` (`{key: subprocess.Popen}` with
    text pipes) is sent `go` and answers one JSON line `{"seconds": ..., field: ...}`.

    Returns:
        `({key: [seconds, ...]}, {key: reply[field] of the last round})`.
    """
    times, last = {key: [] for key in workers}, {}
    for _ in range(repeats):
        for key, process in workers.items():
            process.stdin.write("go\n")
            process.stdin.flush()
            reply = json.loads(process.stdout.readline())
            times[key].append(reply["seconds"])
            last[key] = reply[field]
    return times, last


def materialize(outputs):
    """Force a result (nested tensors) to the host, so timing covers the whole computation."""
    return keras.tree.map_structure(lambda tensor: np.asarray(tensor), outputs)


def environment():
    """The machine and software the figures were measured on."""
    cpu_model = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu_model = next(line.split(":", 1)[1].strip() for line in cpuinfo
                             if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu_model,
        "cores_usable": usable_cores,
        "cores_total": os.cpu_count(),
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_hub": keras_hub.__version__,
        "numpy": np.__version__,
        "keras_backend": keras.backend.backend(),
    }


def shown(path):
    """`path` as the JSON records it: relative to the repository when it lies inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)


def write_result(name, args, figures):
    """Print the result as JSON and write it to `RESULTS_DIR/<name>.json`."""
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(REPO_ROOT):
        script = script.relative_to(REPO_ROOT)
    result = {
        "benchmark": name,
        "command": " ".join(["python", str(script), *sys.argv[1:]]),
        "mode": "quick" if args.quick else "full",
        "repeats": getattr(args, "repeats", None),
        "wall_seconds": round(time.perf_counter() - _STARTED, 1),
        "environment": environment(),
        "figures": figures,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    text = json.dumps(result, indent=2)
    path.write_text(text + "\n")
    print(text)
    return path


def count_params(model):
    """Trainable parameters, so that compared models can be shown to be the same size."""
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))
