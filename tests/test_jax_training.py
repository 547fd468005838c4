"""A run trained on Keras's JAX backend is an ordinary run: TensorFlow translates, evaluates and
exports it. JAX compiles the training step once a batch shape, so the pipeline pads batches to
a few shapes (`make_dataset(fixed_shapes=True)`)."""

import os
import subprocess
import sys

import pytest

from keras_s2s.cli import main
from tests.test_cli import TINY_MODELS


@pytest.mark.slow
def test_a_run_trained_on_jax_translates_evaluates_and_exports_under_tensorflow(tmp_path,
                                                                              capsys):
    run_dir = tmp_path / "run"
    model_args = [arg for item in TINY_MODELS["transformer"] for arg in ("--model-arg", item)]
    # Pairs of 1 to 3 letters: 3 lengths, so at most 3 buckets, one program each (without
    # fixed shapes, one a batch shape; with JAX's step uncompiled, none).
    result = subprocess.run(
        [sys.executable, "-m", "keras_s2s.cli", "train", "--arch", "transformer", "--data",
         "reverse", "--out", str(run_dir), "--epochs", "1", "--num-pairs", "200",
         "--batch-size", "32", "--vocab-size", "60", "--max-length", "3", *model_args],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "KERAS_BACKEND": "jax", "JAX_LOG_COMPILES": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    compiled = result.stderr.count("Finished XLA compilation of jit(train_step)")
    assert 1 <= compiled <= 3, result.stderr[-2000:]

    capsys.readouterr()
    assert main(["translate", str(run_dir), "a b c", "d e"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["evaluate", str(run_dir), "--data", "reverse", "--num-pairs", "20",
                 "--json"]) == 0
    assert '"bleu"' in capsys.readouterr().out
    assert main(["export", str(run_dir), "--model-name", "reverse", "--base-path",
                 str(tmp_path / "export")]) == 0
    assert (tmp_path / "export" / "reverse" / "1" / "saved_model.pb").exists()
