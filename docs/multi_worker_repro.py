"""Minimal reproduction: Keras 3's `model.fit` under `tf.distribute.MultiWorkerMirroredStrategy`
with two workers on 127.0.0.1 (no keras_s2s involved). See docs/scale_out.md.

    python docs/multi_worker_repro.py            # both workers fail in fit (Keras 3.15.1, TF 2.21)
    python docs/multi_worker_repro.py --patched  # with the two Keras code paths replaced: trains

`--patched` only shows that the two paths named in docs/scale_out.md are what stands in the way;
it patches Keras's private code, which keras-s2s does not: it avoids the first path and adapts
its step logs to the second (`keras_s2s/training/multi_worker.py`).
"""

import json
import os
import re
import socket
import subprocess
import sys

WORKER = r'''
import json, os, sys
import keras, numpy as np, tensorflow as tf
from keras.src.backend.tensorflow import trainer

keras.config.disable_traceback_filtering()
if "--patched" in sys.argv:
    def build_from_local_batch(self, iterator=None, data_batch=None):
        # Keras reduces the first (nested) batch across replicas: strategy.reduce("MEAN", batch)
        # takes one value, not a structure, once there are several workers.
        for _, _, it in iterator:
            batch = tf.nest.map_structure(
                lambda v: self.distribute_strategy.experimental_local_results(v)[0], next(it))
            break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=batch)

    original_reduce = trainer.reduce_per_replica

    def reduce_scalars(values, strategy, reduction):
        # Keras reduces the step's logs with strategy.reduce("MEAN", v, axis=0): they are scalars.
        if trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("auto", "mean"):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = build_from_local_batch
    trainer.reduce_per_replica = reduce_scalars

strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
x = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
data = tf.data.Dataset.from_tensor_slices((x, x.sum(1, keepdims=True))).batch(32)
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
# One backup directory per worker: Keras 3's BackupAndRestore has no multi-worker file layout
# (Keras 2's wrote the chief's files and temporary ones for the others); a shared one fails
# with an HDF5 file-lock error.
backup = keras.callbacks.BackupAndRestore(os.path.join(sys.argv[1], f"backup{index}"))
history = model.fit(data, epochs=2, verbose=0, callbacks=[backup])
print("worker", index, "loss", history.history["loss"])
'''


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main():
    import tempfile
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    with tempfile.TemporaryDirectory() as directory:
        processes = [subprocess.Popen(
            [sys.executable, "-c", WORKER, directory, *sys.argv[1:]],
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for index in range(2)]
        for index, process in enumerate(processes):
            out, err = process.communicate(timeout=300)
            errors = [line for line in err.splitlines()
                      if re.match(r"\w+(Error|Exception): ", line)]
            print(f"worker {index}: exit {process.returncode}: "
                  f"{(out.strip() or (errors[-1] if errors else err[-300:]))[:300]}")


if __name__ == "__main__":
    main()
