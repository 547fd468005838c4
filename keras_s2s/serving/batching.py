"""Server-side batching: concurrent requests to one signature run as one batch.

Modelled on TF's SharedBatchScheduler behind TF Serving's BatchingSession: one queue per
(model version, signature, input shapes); a task (one request's inputs, all with the same dim 0)
joins the open batch of its queue if it fits in `max_batch_size`, else opens a new batch; at most
`max_enqueued_batches` batches wait per queue (more -> UNAVAILABLE, HTTP 503). `num_batch_threads`
threads run a batch once it is full or its oldest task has waited `batch_timeout_micros`. Inputs are
concatenated along dim 0 (padded in the other dims with `pad_variable_length_inputs`, and up to an
allowed batch size), run once, and the outputs are split back per task.

A client's request never fails because of another's: tasks are queued with those of the same
input dtypes and shapes past dim 0 (the same ranks when padding), so that they concatenate; and
should a batch still fail, each of its tasks is run again alone, to fail or succeed on its own.
"""

import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time

import numpy as np

from keras_s2s.serving.errors import ServingError, error_from_exception

logger = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class _Task:
    inputs: dict
    size: int
    future: concurrent.futures.Future


@dataclasses.dataclass(eq=False)
class _Batch:
    opened: float
    tasks: list = dataclasses.field(default_factory=list)
    size: int = 0


@dataclasses.dataclass(eq=False)
class _Queue:
    run: object  # {name: array} -> {name: array}
    batches: collections.deque = dataclasses.field(default_factory=collections.deque)


def task_size(inputs):
    """The dim 0 shared by all of a request's inputs."""
    if not inputs:
        raise ServingError("INVALID_ARGUMENT", "Batching Run() must have at least one input tensor")
    sizes = {}
    for name, array in inputs.items():
        if array.ndim == 0:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Batching Run() input tensors must have at least one dimension; {name} is a "
                "scalar",
            )
        sizes[name] = array.shape[0]
    if len(set(sizes.values())) > 1:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"Batching Run() input tensors must have equal 0th-dimension size, got {sizes}",
        )
    return next(iter(sizes.values()))


class BatchScheduler:
    """Batches tasks per key and runs them on `num_batch_threads` threads."""

    def __init__(self, parameters):
        self._parameters = parameters
        self._timeout_seconds = parameters.batch_timeout_micros / 1e6
        self._queues = {}
        self._condition = threading.Condition()
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{index}", daemon=True)
            for index in range(parameters.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key, run, inputs):
        """Queues one request's inputs for `run` (the same for every task of `key`); returns a
        Future
        of its outputs. Raises ServingError when the task is too large or the queue is full."""
        size = task_size(inputs)
        limit = self._parameters.max_batch_size
        if size > limit:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Task size {size} is larger than maximum input batch size {limit}",
            )
        task = _Task(inputs, size, concurrent.futures.Future())
        key = (key, self._shape_key(inputs))
        with self._condition:
            if self._stopped:
                raise ServingError("UNAVAILABLE", "The batch scheduler is shutting down")
            queue = self._queues.setdefault(key, _Queue(run))
            if not queue.batches or queue.batches[-1].size + size > limit:
                if len(queue.batches) >= self._parameters.max_enqueued_batches:
                    raise ServingError(
                        "UNAVAILABLE",
                        "The batch scheduling queue to which this task was submitted is full",
                    )
                queue.batches.append(_Batch(opened=time.monotonic()))
            batch = queue.batches[-1]
            batch.tasks.append(task)
            batch.size += size
            self._condition.notify()
        return task.future

    def _shape_key(self, inputs):
        """What tasks must share to be concatenated: dtypes and dims past 0 (ranks if padding)."""
        pad = self._parameters.pad_variable_length_inputs
        return tuple(
            (name, array.dtype.str, array.ndim if pad else array.shape[1:])
            for name, array in sorted(inputs.items())
        )

    def stop(self):
        """Stops the threads; tasks still queued fail with UNAVAILABLE."""
        with self._condition:
            self._stopped = True
            pending = [
                task
                for queue in self._queues.values()
                for batch in queue.batches
                for task in batch.tasks
            ]
            self._queues.clear()
            self._condition.notify_all()
        for task in pending:
            if task.future.set_running_or_notify_cancel():
                task.future.set_exception(
                    ServingError("UNAVAILABLE", "The server is shutting down")
                )
        for thread in self._threads:
            thread.join()

    def _work(self):
        while True:
            with self._condition:
                while True:
                    if self._stopped:
                        return
                    ready, wait_seconds = self._take_ready_batch()
                    if ready is not None:
                        break
                    self._condition.wait(wait_seconds)
            run, batch = ready
            self._process(run, batch)

    def _take_ready_batch(self):
        """Pops the oldest batch that is full, followed by another, or past its timeout."""
        now = time.monotonic()
        best_key, wait_seconds = None, None
        for key, queue in self._queues.items():
            first = queue.batches[0]
            deadline = first.opened + self._timeout_seconds
            if (
                first.size >= self._parameters.max_batch_size
                or len(queue.batches) > 1
                or now >= deadline
            ):
                if best_key is None or first.opened < self._queues[best_key].batches[0].opened:
                    best_key = key
            else:
                remaining = deadline - now
                wait_seconds = remaining if wait_seconds is None else min(wait_seconds, remaining)
        if best_key is None:
            return None, wait_seconds
        queue = self._queues[best_key]
        batch = queue.batches.popleft()
        if not queue.batches:
            del self._queues[best_key]
        return (queue.run, batch), None

    def _process(self, run, batch):
        tasks = [task for task in batch.tasks if task.future.set_running_or_notify_cancel()]
        if not tasks:
            return
        try:
            merged, padded_size = self._merge(tasks)
            outputs = run(merged)
            results = _split(outputs, tasks, padded_size)
        except Exception as exception:
            if len(tasks) == 1:
                tasks[0].future.set_exception(error_from_exception(exception))
                return
            logger.warning(
                "A batch of %d tasks failed (%s); running them one by one", len(tasks), exception
            )
            for (
                task
            ) in tasks:  # so that a bad request fails alone (TF Serving fails the whole batch)
                self._run_alone(run, task)
            return
        for task, result in zip(tasks, results, strict=True):
            task.future.set_result(result)

    def _run_alone(self, run, task):
        try:
            merged, padded_size = self._merge([task])
            task.future.set_result(_split(run(merged), [task], padded_size)[0])
        except Exception as exception:
            task.future.set_exception(error_from_exception(exception))

    def _merge(self, tasks):
        """Concatenates the tasks' inputs; returns them and the (padded) batch size."""
        total = sum(task.size for task in tasks)
        padded_size = next(
            (size for size in self._parameters.allowed_batch_sizes if size >= total), total
        )
        merged = {}
        for name in tasks[0].inputs:
            arrays = [task.inputs[name] for task in tasks]
            if (
                self._parameters.pad_variable_length_inputs
            ):  # else their shapes are equal (`_shape_key`)
                arrays = _pad_to_common_shape(arrays)
            if padded_size > total:  # pad the batch with copies of the first task's first row
                arrays.append(np.repeat(arrays[0][:1], padded_size - total, axis=0))
            merged[name] = np.concatenate(arrays, axis=0)
        return merged, padded_size


def _pad_to_common_shape(arrays):
    """Pads dims 1.. of each array (all of one rank) to the largest size, with its first element."""
    target = tuple(max(sizes) for sizes in zip(*(array.shape[1:] for array in arrays)))
    padded = []
    for array in arrays:
        if array.shape[1:] == target:
            padded.append(array)
            continue
        fill = array.flat[0] if array.size else (b"" if array.dtype == object else 0)
        result = np.full((array.shape[0],) + target, fill, dtype=array.dtype)
        result[tuple(slice(0, size) for size in array.shape)] = array
        padded.append(result)
    return padded


def _split(outputs, tasks, padded_size):
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != padded_size:
            raise ServingError(
                "INTERNAL",
                f"Batched output tensor {name} has shape {list(array.shape)}; its 0th dimension "
                "must equal "
                f"the batch size {padded_size}",
            )
    results, offset = [], 0
    for task in tasks:
        results.append(
            {name: array[offset : offset + task.size] for name, array in outputs.items()}
        )
        offset += task.size
    return results
