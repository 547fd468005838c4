"""Training on several machines: `tf.distribute.MultiWorkerMirroredStrategy` and a training loop.

Keras 3.15's `model.fit` fails under this strategy as soon as there are two workers
(`docs/scale_out.md`, `docs/multi_worker_repro.py`), so `train(..., distribute="multi-worker")`
runs this loop instead, under `strategy.run`, driving the same Keras callbacks as `fit`.

Every worker builds the same stream of *global* batches (same pairs, same seeded shuffle, same
buckets) and each replica trains on its rows of each batch (`rows[replica::num_replicas]`). The
loss is the masked token mean over the whole global batch (the token count is all-reduced
before the backward pass), so the summed gradients are those of a one-process run with the same
batch size: the loss curves of one and of several workers agree up to float rounding (without
dropout, whose masks are drawn per replica). No worker can run out of batches before another,
which would leave the others waiting in a collective: bucketed batches make uneven shards.
The cost: every worker reads and tokenizes the whole corpus.

The cluster comes from the standard `TF_CONFIG` variable (what Kubernetes operators and Vertex AI
set). The chief (task `chief`, or `worker` 0 when there is none) writes the run directory; the
other workers write their backups, best weights and history into temporary directories that they
remove. Every worker restores from the chief's backup (`<run>/backup`), so the run directory must
be on storage all workers share; each checks that it restored the same epoch as the others, and
that its vocabularies are the chief's.
"""

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile

import keras
import tensorflow as tf

logger = logging.getLogger(__name__)

#: The epoch the latest backup ends, a checkpoint variable beside the model and optimizer.
_EPOCH = "epoch"


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


def _rows(batch):
    """This replica's rows of a global batch: `rows[replica::replicas]`."""
    context = tf.distribute.get_replica_context()
    start, step = context.replica_id_in_sync_group, context.num_replicas_in_sync
    return tf.nest.map_structure(lambda tensor: tensor[start::step], batch)


def _sums(loss, target, logits, loss_sum):
    """`[loss sum, right tokens, tokens, rows]` of this replica's rows: summed over replicas,
    they make the global batch's figures."""
    mask = loss.token_mask(target)
    hits = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32),
                            tf.cast(target, tf.int32)), tf.float32)
    return tf.stack([loss_sum, tf.reduce_sum(hits * mask), tf.reduce_sum(mask),
                     tf.cast(tf.shape(target)[0], tf.float32)])


def _clips(optimizer):
    return any((optimizer.clipnorm, optimizer.global_clipnorm, optimizer.clipvalue))


def _clip(gradients, optimizer):
    """`optimizer`'s gradient clipping (Keras's order: norm, else global norm, else value)."""
    if optimizer.clipnorm:
        return [tf.clip_by_norm(g, optimizer.clipnorm) for g in gradients]
    if optimizer.global_clipnorm:
        return tf.clip_by_global_norm(gradients, optimizer.global_clipnorm)[0]
    limit = optimizer.clipvalue
    return [tf.IndexedSlices(tf.clip_by_value(g.values, -limit, limit), g.indices, g.dense_shape)
            if isinstance(g, tf.IndexedSlices) else tf.clip_by_value(g, -limit, limit)
            for g in gradients]


def _on_first_replica(gradient, first):
    """`gradient` on the first replica, nothing (zeros, or no slices) on the others."""
    if isinstance(gradient, tf.IndexedSlices):
        rows = tf.where(first, tf.shape(gradient.indices)[0], 0)
        return tf.IndexedSlices(gradient.values[:rows], gradient.indices[:rows],
                                gradient.dense_shape)
    return gradient * tf.cast(first, gradient.dtype)


class _Steps:
    """The replicated training and evaluation steps (`tf.function`s over `strategy.run`)."""

    def __init__(self, strategy, model, loss, batch_spec, jit_compile):
        self.strategy = strategy
        self.model = model
        self.loss = loss
        # Traced once for all batch shapes (buckets differ in length, and batches in rows).
        batch_spec = tf.nest.map_structure(
            lambda spec: tf.TensorSpec([None] * len(spec.shape), spec.dtype), batch_spec)
        self.forward_backward = tf.function(self._forward_backward, jit_compile=jit_compile)
        self.train = tf.function(self._train, input_signature=[
            batch_spec, tf.TensorSpec([], tf.float32)])
        self.evaluate = tf.function(self._evaluate, input_signature=[batch_spec])

    def _forward_backward(self, inputs, target, tokens):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(inputs, training=True)
            loss_sum = tf.reduce_sum(self.loss.token_losses(target, logits))
            share = loss_sum / tf.maximum(tokens, 1.0)
        gradients = tape.gradient(share, variables)
        return gradients, _sums(self.loss, target, logits, loss_sum)

    def _replica_train(self, batch, stop_request):
        context = tf.distribute.get_replica_context()
        inputs, target = _rows(batch)
        tokens = context.all_reduce("SUM", tf.reduce_sum(self.loss.token_mask(target)))
        gradients, sums = self.forward_backward(inputs, target, tokens)
        optimizer = self.model.optimizer
        if _clips(optimizer):
            # The optimizer would clip each replica's gradients before summing them (as Keras
            # does under `fit`). Clip the sum instead, as one process would, and let the first
            # replica alone pass it on: the optimizer's sum is then the clipped sum, which its
            # own clipping leaves as it is. (Embedding gradients may be `IndexedSlices`, which a
            # plain Keras Adam takes slice by slice: no replica may add slices, even zeros.)
            first = tf.equal(context.replica_id_in_sync_group, 0)
            gradients = [_on_first_replica(g, first)
                         for g in _clip(context.all_reduce("SUM", gradients), optimizer)]
        optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
        return context.all_reduce("SUM", tf.concat([sums, [stop_request]], axis=0))

    def _train(self, batch, stop_request):
        result = self.strategy.run(self._replica_train, args=(batch, stop_request))
        return self.strategy.experimental_local_results(result)[0]

    def _replica_evaluate(self, batch):
        inputs, target = _rows(batch)
        logits = self.model(inputs, training=False)
        loss_sum = tf.reduce_sum(self.loss.token_losses(target, logits))
        return tf.distribute.get_replica_context().all_reduce(
            "SUM", _sums(self.loss, target, logits, loss_sum))

    def _evaluate(self, batch):
        result = self.strategy.run(self._replica_evaluate, args=(batch,))
        return self.strategy.experimental_local_results(result)[0]


class _Figures:
    """An epoch's loss and accuracy as `fit` reports them: the loss is the mean of the batches'
    token-mean losses weighted by their rows, the accuracy is over all tokens."""

    def __init__(self):
        self.weighted_loss = self.right = self.tokens = self.rows = 0.0

    def add(self, loss_sum, right, tokens, rows):
        self.weighted_loss += loss_sum / max(tokens, 1.0) * rows
        self.right += right
        self.tokens += tokens
        self.rows += rows

    def logs(self, prefix=""):
        return {f"{prefix}loss": self.weighted_loss / max(self.rows, 1.0),
                f"{prefix}masked_accuracy": self.right / max(self.tokens, 1.0)}


def _whole_batches(dataset, num_replicas):
    """Global batches with a row for every replica (a bucket's last batch may be smaller)."""
    return dataset.filter(
        lambda inputs, target: tf.shape(target)[0] >= num_replicas)


class _Backup:
    """Epoch-end backups of the model, the optimizer and the epoch (`tf.train.Checkpoint`): the
    chief's in `directory`, the others' in temporary directories removed after each save (every
    worker saves, as `tf.distribute` asks). All restore from the chief's."""

    def __init__(self, directory, cluster, model, optimizer):
        self.directory = directory
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name=_EPOCH)
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=self.epoch)
        self.write_directory = (directory if cluster.is_chief else
                                tempfile.mkdtemp(prefix=f"keras_s2s_backup_{cluster.rank}_"))
        self.cluster = cluster
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.write_directory,
                                                  max_to_keep=1)

    def restore(self):
        """The epoch to start from: 0, or the one after the chief's latest backup."""
        latest = tf.train.latest_checkpoint(self.directory)
        if latest:
            self.checkpoint.restore(latest).expect_partial()
            logger.info("restored the backup of epoch %d from %s", int(self.epoch), latest)
        return int(self.epoch)

    def save(self, epochs_done):
        self.epoch.assign(epochs_done)
        self.manager.save()
        if not self.cluster.is_chief:
            shutil.rmtree(self.write_directory, ignore_errors=True)

    def remove(self):
        """Drop the backups once the run has finished (as `keras.callbacks.BackupAndRestore`)."""
        shutil.rmtree(self.write_directory, ignore_errors=True)


def fit(strategy, cluster, model, loss, train_data, validation_data, epochs, callbacks,
        backup_directory, jit_compile=False, verbose=0):
    """Train `model` (compiled, built under `strategy`'s scope) for `epochs` on global batches.

    Args:
        strategy: the cluster's `MultiWorkerMirroredStrategy` (`create_strategy`).
        cluster: this worker's `Cluster`.
        model: the model; its `optimizer` is used.
        loss: a `MaskedSparseCrossentropy` (its `token_losses` and `token_mask`).
        train_data, validation_data: the same global `((source, target_in), target_out)`
            batches on every worker.
        epochs: the epoch to stop after; a restored backup sets the first.
        callbacks: Keras callbacks, driven as `fit` drives them (the chief's write the run).
        backup_directory: the chief's backups (on storage every worker reads).
        jit_compile: compile each replica's forward and backward pass with XLA.
        verbose: Keras's progress bar (`fit`'s `verbose`; chief only).

    Raises:
        ConnectionError: a worker left the cluster (the others' collectives fail): start every
            worker again with the same command, and training resumes from the last backup.
    """
    steps = _Steps(strategy, model, loss, train_data.element_spec, jit_compile)
    backup = _Backup(backup_directory, cluster, model, model.optimizer)
    first_epoch = backup.restore()
    restored = _gather(strategy, [first_epoch])[:, 0]
    if (restored != restored[0]).any():
        raise ValueError(f"the workers restored backups of different epochs "
                         f"({restored.astype(int).tolist()}, by worker): the run directory must "
                         f"be on storage every worker shares")
    train_data = _whole_batches(train_data, strategy.num_replicas_in_sync)
    validation_data = _whole_batches(validation_data, strategy.num_replicas_in_sync)
    progress = verbose if cluster.is_chief else 0  # Keras's progress bar, as `fit` shows it
    callback_list = keras.callbacks.CallbackList(callbacks, add_progbar=bool(progress),
                                                 model=model, epochs=epochs, verbose=progress,
                                                 steps=None)
    model.stop_training = False
    callback_list.on_train_begin()
    try:
        for epoch in range(first_epoch, epochs):
            callback_list.on_epoch_begin(epoch)
            figures = _Figures()
            for step, batch in enumerate(train_data):
                loss_sum, right, tokens, rows, stop = steps.train(
                    batch, tf.constant(float(model.stop_training))).numpy()
                figures.add(loss_sum, right, tokens, rows)
                callback_list.on_train_batch_end(step, figures.logs())
                if stop:  # a callback asked on some worker: all stop after the same step
                    model.stop_training = True
                    break
            validation = _Figures()
            for batch in validation_data:
                validation.add(*steps.evaluate(batch).numpy())
            logs = {**figures.logs(), **validation.logs("val_")}
            callback_list.on_epoch_end(epoch, logs)
            backup.save(epoch + 1)
            model.stop_training = bool(_gather(strategy, [model.stop_training]).any())
            if model.stop_training:
                break
    except (tf.errors.UnavailableError, tf.errors.CancelledError,
            tf.errors.DeadlineExceededError, tf.errors.AbortedError) as error:
        first_line = str(error.message).strip().splitlines()[0]
        raise ConnectionError(
            f"a worker left the cluster ({type(error).__name__}: {first_line}); start every "
            f"worker again with the same command: training resumes from the last backup "
            f"(epoch {int(backup.epoch)})") from error
    callback_list.on_train_end()
    backup.remove()
