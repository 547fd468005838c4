"""Server-side batching: merging, splitting, padding, bounded queue, and concurrent HTTP
requests."""

import threading

import numpy as np
import pytest

from keras_s2s.serving.batching import BatchScheduler
from keras_s2s.serving.config import BatchingParameters, ModelConfig
from keras_s2s.serving.errors import ServingError
from keras_s2s.serving.server import ModelServer
from tests.serving.conftest import http, make_options
from tests.serving.savedmodels import publish_version


def _parameters(**overrides):
    values = dict(
        max_batch_size=8, batch_timeout_micros=100_000, max_enqueued_batches=4, num_batch_threads=1
    )
    values.update(overrides)
    return BatchingParameters(**values)


def test_tasks_are_merged_and_split_back():
    seen_shapes = []

    def run(inputs):
        seen_shapes.append(inputs["x"].shape)
        return {"y": inputs["x"] * 10}

    scheduler = BatchScheduler(_parameters(max_batch_size=6))
    try:
        futures = [
            scheduler.submit("key", run, {"x": np.full((size, 2), size)}) for size in (1, 2, 3)
        ]
        results = [future.result(timeout=10) for future in futures]
    finally:
        scheduler.stop()
    assert seen_shapes == [(6, 2)]
    for size, result in zip((1, 2, 3), results):
        np.testing.assert_array_equal(result["y"], np.full((size, 2), size * 10))


def test_padding_to_allowed_batch_sizes_and_common_shape():
    seen = []

    def run(inputs):
        seen.append(inputs["x"].copy())
        return {"y": inputs["x"].sum(axis=1)}

    parameters = _parameters(
        max_batch_size=4, allowed_batch_sizes=(2, 4), pad_variable_length_inputs=True
    )
    scheduler = BatchScheduler(parameters)
    try:
        first = scheduler.submit("key", run, {"x": np.array([[1, 2, 3]])})
        second = scheduler.submit("key", run, {"x": np.array([[5]])})
        assert first.result(timeout=10)["y"].tolist() == [6]
        assert second.result(timeout=10)["y"].tolist() == [15]  # [5] padded with its first element
    finally:
        scheduler.stop()
    assert seen[0].tolist() == [
        [1, 2, 3],
        [5, 5, 5],
    ]  # batch of 2 is an allowed size: no row padding


def test_different_shapes_without_padding_are_batched_apart():
    batches = []

    def run(inputs):
        batches.append(inputs["x"].shape)
        return {"y": inputs["x"].sum(axis=1)}

    scheduler = BatchScheduler(_parameters(batch_timeout_micros=200_000))
    try:
        futures = [scheduler.submit("key", run, {"x": np.ones((1, width))}) for width in (2, 3, 2)]
        assert [future.result(timeout=10)["y"].tolist() for future in futures] == [
            [2.0],
            [3.0],
            [2.0],
        ]
    finally:
        scheduler.stop()
    assert sorted(batches) == [(1, 3), (2, 2)]


def test_a_failing_task_fails_alone():
    def run(inputs):
        if (inputs["x"] < 0).any():
            raise ValueError("negative input")
        return {"y": inputs["x"] * 2}

    scheduler = BatchScheduler(_parameters(batch_timeout_micros=200_000))
    try:
        futures = [
            scheduler.submit("key", run, {"x": np.array([value])}) for value in (1.0, -1.0, 3.0)
        ]
        assert futures[0].result(timeout=10)["y"].tolist() == [2.0]
        assert futures[2].result(timeout=10)["y"].tolist() == [6.0]
        with pytest.raises(ServingError, match="negative input"):
            futures[1].result(timeout=10)
    finally:
        scheduler.stop()


def test_full_queue_and_oversized_tasks_are_refused():
    started, release = threading.Event(), threading.Event()

    def slow_run(inputs):
        started.set()
        release.wait(10)
        return inputs

    scheduler = BatchScheduler(
        _parameters(max_batch_size=1, max_enqueued_batches=1, batch_timeout_micros=0)
    )
    try:
        running = scheduler.submit("key", slow_run, {"x": np.zeros(1)})
        assert started.wait(10)
        queued = scheduler.submit("key", slow_run, {"x": np.zeros(1)})
        with pytest.raises(ServingError) as refused:
            scheduler.submit("key", slow_run, {"x": np.zeros(1)})
        assert refused.value.http_status == 503
        assert (
            refused.value.message
            == "The batch scheduling queue to which this task was submitted is full"
        )
        with pytest.raises(
            ServingError, match="Task size 2 is larger than maximum input batch size 1"
        ):
            scheduler.submit("other", slow_run, {"x": np.zeros(2)})
        release.set()
        assert running.result(timeout=10)["x"].shape == (1,)
        assert queued.result(timeout=10)["x"].shape == (1,)
    finally:
        release.set()
        scheduler.stop()


@pytest.fixture
def base_path(tmp_path, built_models):
    publish_version(built_models["half_plus_two"], str(tmp_path), 1)
    return str(tmp_path)


def test_concurrent_requests_are_batched_with_separate_answers(base_path):
    options = make_options(
        [ModelConfig("model", base_path)],
        batching=_parameters(
            max_batch_size=16, batch_timeout_micros=200_000, max_enqueued_batches=8
        ),
    )
    with ModelServer(options) as server:
        count = 12
        barrier, results = threading.Barrier(count), [None] * count

        def send(index):
            values = [float(index), float(index) + 0.5]
            barrier.wait(10)
            body = {"signature_name": "with_batch_size", "instances": values}
            results[index] = http(server.url, "POST", "/v1/models/model:predict", body)

        threads = [threading.Thread(target=send, args=(index,)) for index in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        batch_sizes = set()
        for index, response in enumerate(results):
            assert response.status == 200, response.text
            predictions = response.json["predictions"]
            assert [p["y"] for p in predictions] == [0.5 * index + 2, 0.5 * (index + 0.5) + 2]
            batch_sizes.update(p["batch_size"] for p in predictions)
        assert max(batch_sizes) > 2  # requests were merged
        assert http(server.url, "POST", "/v1/models/model:predict", {"inputs": [1.0]}).json == {
            "outputs": [2.5]
        }


def test_request_waiting_past_the_deadline_gets_504(base_path):
    options = make_options(
        [ModelConfig("model", base_path)],
        batching=_parameters(max_batch_size=64, batch_timeout_micros=5_000_000),
        rest_api_timeout_in_ms=300,
    )
    with ModelServer(options) as server:
        response = http(server.url, "POST", "/v1/models/model:predict", {"instances": [1.0]})
        assert response.status == 504
        assert "Deadline Exceeded" in response.json["error"]
