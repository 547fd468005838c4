"""`bench/training_speed.py --quick` runs, writes a sane CPU efficiency, the matmul floor of a
step and its plot; the step's matmuls match the model's own kernels."""

import numpy as np
import pytest

from tests.bench.quick import REPO_ROOT, load, run_quick


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_quick(tmp_path_factory, "training_speed")


def test_training_speed_quick(results):
    figures = load(results, "training_speed")
    assert 0 < figures["cpu_efficiency"]["efficiency"] < 1.5
    assert (results / "tokens_per_second_vs_length.png").stat().st_size > 0
    assert figures["precision"]["speedup_bfloat16_vs_float32"] > 0
    versus = figures["ours_vs_keras_hub"]
    assert set(versus["step_seconds_over_matmuls_alone"]) == {"ours_graph", "keras_hub_graph"}
    assert versus["speedup_ceiling_vs_keras_hub"]["graph"] > 0
    for parts in versus["step_parts_seconds"].values():
        assert set(parts) == {"forward", "backward", "update_and_metrics"}
        assert parts["forward"] > 0 and parts["backward"] > 0


def test_a_steps_matmuls_are_the_models_kernels_three_times(monkeypatch):
    """The forward weight matmuls of `step_matmuls` hold each kernel weight of our Transformer
    once per token, and the backward pass twice the forward's FLOPs."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    import training_speed
    from keras_s2s.models import Transformer

    config, batch_size, length = training_speed.SMALL_TRANSFORMER, 3, 12
    model = Transformer(1000, 1000, max_length=length, **config)
    model.build()
    kernel_weights = sum(int(np.prod(weight.shape)) for weight in model.weights
                         if weight.path.endswith("kernel"))
    matmuls = training_speed.step_matmuls(config, batch_size, length, 1000)
    forward = matmuls[::3]
    weight_matmuls = [(m, k, n) for b, m, k, n in forward if b == 1]
    assert sum(m * k * n for m, k, n in weight_matmuls) == batch_size * length * kernel_weights
    assert training_speed.flops_of(matmuls) == 3 * training_speed.flops_of(forward)
