"""Training on several machines: what `train(..., distribute="multi-worker")` adds to the one
training loop (`keras_s2s.training.loop`, `model.fit` and its callbacks) under
`tf.distribute.MultiWorkerMirroredStrategy`.

Every worker builds the same stream of *global* batches (same pairs, same seeded shuffle, same
buckets) and each replica trains on its rows of each batch (`rows[replica::num_replicas]`,
`distribute`): no worker can run out of batches before another, which would leave the others
waiting in a collective (bucketed batches make uneven shards). The cost: every worker reads and
tokenizes the whole corpus. `fit` sums the replicas' gradients of their token-mean losses, each
divided by the number of replicas, as it does under `MirroredStrategy` on one machine.

The rest adapts `fit` to a cluster (docs/scale_out.md says why each is needed): its step logs
(`reduce_logs_across_workers`), one clock for the time budget and the linear decay
(`SharedClock`), backups every worker restores (`WorkerBackup`), and a worker leaving turned
into one line (`worker_loss_as_connection_error`).

The cluster comes from the standard `TF_CONFIG` variable (what Kubernetes operators and Vertex AI
set). The chief (task `chief`, or `worker` 0 when there is none) writes the run directory; the
other workers write their backups, best weights and history into temporary directories that they
remove. Every worker restores from the chief's backup (`<run>/backup`), so the run directory must
be on storage all workers share; each checks that it restored the same epoch as the others, and
that its vocabularies are the chief's.
"""

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time

import keras
import tensorflow as tf

logger = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in the cluster that `TF_CONFIG` describes.

    Attributes:
        num_workers: the tasks that train (a `chief` task counts as one).
        rank: this task's number in [0, num_workers): 0 is the chief.
    """

    num_workers: int
    rank: int

    @property
    def is_chief(self):
        return self.rank == 0

    @classmethod
    def from_environment(cls, environ=None):
        """Read `TF_CONFIG`; a missing, malformed or unsupported one is a one-line ValueError."""
        text = (os.environ if environ is None else environ).get("TF_CONFIG")
        if not text:
            raise ValueError("--distribute multi-worker needs the TF_CONFIG environment variable "
                             "({\"cluster\": {\"worker\": [...]}, \"task\": {\"type\": \"worker\", "
                             "\"index\": N}}); see docs/scale_out.md")
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
        cluster = spec.get("cluster") if isinstance(spec, dict) else None
        task = spec.get("task") if isinstance(spec, dict) else None
        if not isinstance(cluster, dict) or not isinstance(task, dict):
            raise ValueError(f"TF_CONFIG must hold a \"cluster\" and a \"task\" object, got "
                             f"{text!r}")
        unsupported = sorted(set(cluster) - {"chief", "worker"})
        if unsupported:
            raise ValueError(f"TF_CONFIG's cluster has {unsupported} tasks; multi-worker "
                             f"training takes only \"chief\" and \"worker\" tasks")
        sizes = {}
        for kind in ("chief", "worker"):
            addresses = cluster.get(kind, [])
            if not (isinstance(addresses, list) and all(isinstance(a, str) for a in addresses)):
                raise ValueError(f"TF_CONFIG's cluster.{kind} must be a list of host:port "
                                 f"strings, got {addresses!r}")
            sizes[kind] = len(addresses)
        if sizes["chief"] > 1:
            raise ValueError(f"TF_CONFIG's cluster has {sizes['chief']} chief tasks; at most one")
        kind, index = task.get("type"), task.get("index", 0)
        if kind not in ("chief", "worker") or not sizes[kind]:
            raise ValueError(f"TF_CONFIG's task.type must be one of the cluster's tasks "
                             f"{sorted(k for k in sizes if sizes[k])}, got {kind!r}")
        if not (isinstance(index, int) and not isinstance(index, bool)
                and 0 <= index < sizes[kind]):
            raise ValueError(f"TF_CONFIG's task.index must be an int in [0, {sizes[kind]}) for "
                             f"{kind!r}, got {index!r}")
        rank = index if kind == "chief" else sizes["chief"] + index
        return cls(num_workers=sizes["chief"] + sizes["worker"], rank=rank)


def create_strategy():
    """The strategy of the `TF_CONFIG` cluster. Must come before any other TensorFlow work in
    the process (collectives are configured when the runtime starts)."""
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as error:
        raise RuntimeError(f"MultiWorkerMirroredStrategy must be created before TensorFlow "
                           f"runs anything in this process: {error}") from error


def _gather(strategy, values):
    """Every replica's `values` (a float32 vector): an array of shape (replicas, len(values))."""
    return _gather_function(strategy)(tf.constant(values, tf.float32)).numpy()


@functools.cache
def _gather_function(strategy):
    def gather(vector):
        return tf.distribute.get_replica_context().all_gather(vector[tf.newaxis], axis=0)

    @tf.function(reduce_retracing=True)
    def gather_everywhere(vector):
        return strategy.experimental_local_results(strategy.run(gather, args=(vector,)))[0]

    return gather_everywhere


def check_same_everywhere(strategy, what, values):
    """Raise a one-line ValueError unless every worker passed equal `values` (JSON-able)."""
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).digest()
    # Three 20-bit parts of the digest: float32 holds each exactly.
    parts = _gather(strategy, [float(int.from_bytes(digest[i:i + 3], "big") >> 4)
                               for i in (0, 3, 6)])
    differ = [rank for rank, row in enumerate(parts) if (row != parts[0]).any()]
    if differ:
        raise ValueError(f"the {what} of worker(s) {differ} differ from the chief's; every "
                         f"worker must train on the same data with the same settings")


def distribute(strategy, dataset):
    """`dataset`'s global batches as `fit` takes them on this worker: each replica of the
    cluster gets its rows of every batch (`rows[replica::replicas]`).

    Every worker reads the same global batches (same pairs, seeded shuffle, buckets), so no
    worker runs out of batches before another (which would leave the others waiting in a
    collective, as `tf.data` sharding by file or by element does with bucketed batches). A
    batch with fewer rows than replicas (a bucket's last) is left out: a replica would get none.
    """
    replicas = strategy.num_replicas_in_sync
    dataset = dataset.filter(lambda inputs, target: tf.shape(target)[0] >= replicas)

    def replica_batches(context):
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def rows(batch, replica):
            return tf.nest.map_structure(lambda tensor: tensor[replica::replicas], batch)

        def local_batches(*batch):  # the local replicas take the elements in turn
            return functools.reduce(tf.data.Dataset.concatenate, [
                tf.data.Dataset.from_tensors(rows(batch, first + index))
                for index in range(local)])

        return dataset.flat_map(local_batches)

    return strategy.distribute_datasets_from_function(replica_batches)


def reduce_logs_across_workers(model):
    """Let `fit` reduce `model`'s step logs over the cluster.

    Keras 3.15's `fit` and `evaluate` reduce each step's logs with
    `strategy.reduce("MEAN", value, axis=0)` under a multi-worker strategy
    (`keras/src/backend/tensorflow/trainer.py`, `reduce_per_replica`), which fails on the
    scalars that `train_step` and `test_step` return ("Invalid reduction dimension 0 for input
    with 0 dimensions"). As one-element vectors they reduce to the scalar mean over the
    replicas (the epoch's logs are read from the metrics, summed over every replica)."""
    for name in ("train_step", "test_step"):
        setattr(model, name, functools.partial(_logs_as_vectors, getattr(model, name)))


def _logs_as_vectors(step, data):
    return tf.nest.map_structure(lambda value: tf.reshape(value, [1]), step(data))


class SharedClock:
    """Seconds since it was made on the cluster's slowest clock: the same value on every
    worker, so that a time budget stops all of them after the same step (a worker stopping
    alone would leave the others waiting in a collective) and `--decay linear` gives all the
    same rate. It is a collective: every worker must read it at the same points."""

    def __init__(self, strategy):
        self.strategy = strategy
        self.start = time.monotonic()

    def __call__(self):
        return float(_gather(self.strategy, [time.monotonic() - self.start]).max())


class WorkerBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` for one worker: every worker restores the chief's backup (in
    `directory`, on storage all workers share) and checks that all restored the same epoch;
    each saves its own (reading mirrored and summed variables takes every worker): the chief
    into `directory`, the others into a temporary directory, removed after each save."""

    def __init__(self, directory, cluster, strategy):
        super().__init__(directory)
        self.cluster, self.strategy = cluster, strategy

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        restored = _gather(self.strategy, [self.model._initial_epoch or 0])[:, 0]
        if (restored != restored[0]).any():
            raise ValueError(f"the workers restored backups of different epochs "
                             f"({restored.astype(int).tolist()}, by worker): the run directory "
                             f"must be on storage every worker shares")
        if not self.cluster.is_chief:
            self._write_into(tempfile.mkdtemp(prefix=f"keras_s2s_backup_{self.cluster.rank}_"))

    def _write_into(self, directory):
        chief_backup = self.backup_dir
        for name in ("backup_dir", "_weights_path", "_training_metadata_path",
                     "_prev_weights_path", "_prev_training_metadata_path"):
            setattr(self, name, getattr(self, name).replace(chief_backup, directory, 1))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if not self.cluster.is_chief:
            shutil.rmtree(self.backup_dir, ignore_errors=True)


@contextlib.contextmanager
def worker_loss_as_connection_error():
    """A collective that fails because a worker left is a ConnectionError saying what to do."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.CancelledError,
            tf.errors.DeadlineExceededError, tf.errors.AbortedError) as error:
        first_line = str(error.message).strip().splitlines()[0]
        raise ConnectionError(
            f"a worker left the cluster ({type(error).__name__}: {first_line}); start every "
            f"worker again with the same command: training resumes from the last "
            f"backup") from error
