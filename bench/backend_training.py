"""Training speed by Keras backend on this CPU: TensorFlow (graph and XLA) against JAX.

The models train through `keras.ops` only, so the backend is a choice. Each contender (our
Transformer and the same architecture built from keras-hub layers, `bench/keras_hub_baseline.py`,
on each backend) runs in its own worker process (a process has one Keras backend), builds and
compiles its model as `bench/training_speed.py` part 1 does (masked label-smoothed loss, Adam,
`train_on_batch` on batch 32 × 32 tokens, dropout 0.1), warms up (tracing, XLA compilation),
then waits. The parent then gives the workers turns, round by round, each timing a few steps
while the others sleep: machine noise falls on all of them, as `interleaved_medians` does within
one process.

Usage: python bench/backend_training.py [--quick] [--repeats N]
"""

import json
import statistics
import os
import subprocess
import sys
import time

#: `{contender: (KERAS_BACKEND, jit_compile)}`.
BACKENDS = {"tensorflow_graph": ("tensorflow", False), "tensorflow_xla": ("tensorflow", True),
            "jax": ("jax", True)}
MODELS = ("ours", "keras_hub")
BATCH_SIZE, LENGTH = 32, 32


def worker(model_name, jit_compile, steps):
    """In a worker process: build, compile and warm up, print `ready`, then for every `go`
    line on stdin time `steps` training steps and print the seconds."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import keras
    import numpy as np

    from keras_hub_baseline import KerasHubTransformer
    from keras_s2s.models import Transformer
    from keras_s2s.training.objectives import compile_for_training
    from training_speed import SMALL_TRANSFORMER, VOCAB_SIZE

    keras.utils.set_random_seed(0)
    if model_name == "ours":
        model = Transformer(VOCAB_SIZE, VOCAB_SIZE, max_length=LENGTH, **SMALL_TRANSFORMER)
    else:
        model = KerasHubTransformer(VOCAB_SIZE, **SMALL_TRANSFORMER)
    compile_for_training(model, keras.optimizers.Adam(1e-4), label_smoothing=0.1,
                         jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    source, target = (rng.integers(4, VOCAB_SIZE, (BATCH_SIZE, LENGTH + 1), dtype="int32")
                      for _ in range(2))
    inputs, targets = (source[:, :LENGTH], target[:, :-1]), target[:, 1:]
    for _ in range(3):
        model.train_on_batch(inputs, targets)
    print(json.dumps({"ready": True, "params": model.count_params()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        start = time.perf_counter()
        for _ in range(steps):
            loss = model.train_on_batch(inputs, targets)
        print(json.dumps({"seconds": (time.perf_counter() - start) / steps,
                          "loss": float(np.ravel(loss)[0])}), flush=True)


def _start(name, model_name, steps):
    backend, jit_compile = BACKENDS[name]
    environment = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", model_name, str(int(jit_compile)),
         str(steps)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment)
    reply = json.loads(process.stdout.readline())
    return process, reply["params"]


def main():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import parse_args, take_turns, write_result

    args = parse_args(__doc__.splitlines()[0])
    steps = 1 if args.quick else 5
    names = [(model, backend) for model in MODELS
             for backend in (("tensorflow_graph", "jax") if args.quick else BACKENDS)]
    workers, params = {}, {}
    try:
        for model, backend in names:
            workers[model, backend], params[f"{model}_{backend}"] = _start(backend, model, steps)
        times, losses = take_turns(workers, args.repeats, "loss")
    finally:
        for process in workers.values():
            process.stdin.close()
            process.wait()

    seconds = {f"{model}_{backend}": statistics.median(values)
               for (model, backend), values in times.items()}
    tokens = BATCH_SIZE * LENGTH
    figures = {
        "config": {"batch_size": BATCH_SIZE, "length": LENGTH, "steps_per_turn": steps},
        "params": params,
        "target_tokens_per_second": {name: tokens / value for name, value in seconds.items()},
        "last_loss": {f"{model}_{backend}": value for (model, backend), value in losses.items()},
        "speedup_over_tensorflow_graph": {
            f"{model}_{backend}": seconds[f"{model}_tensorflow_graph"] / seconds[
                f"{model}_{backend}"] for model, backend in names},
        "speedup_ours_vs_keras_hub": {
            backend: seconds[f"keras_hub_{backend}"] / seconds[f"ours_{backend}"]
            for backend in dict.fromkeys(backend for _, backend in names)},
    }
    write_result("backend_training", args, figures)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]))
    else:
        main()
