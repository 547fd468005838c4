import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# `--xla on` keeps compiled programs (keras_s2s.cli.XLA_CACHE): not in the home of the machine
# running the tests.
os.environ.setdefault("KERAS_S2S_XLA_CACHE", tempfile.mkdtemp(prefix="keras-s2s-xla-"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def dates_transformer(tmp_path_factory):
    """A run directory of a tiny Transformer trained briefly on the built-in dates task (its
    next-token distributions are peaked, as a trained model's are; six epochs, so that int8
    weights change its choices no more than a trained model's)."""
    from keras_s2s.training.config import TrainConfig
    from keras_s2s.training.loop import train

    run_dir = str(tmp_path_factory.mktemp("dates") / "transformer")
    train(TrainConfig(arch="transformer", data="dates", out=run_dir, epochs=6, num_pairs=3000,
                      batch_size=64, vocab_size=200, max_source_length=24,
                      max_target_length=16, warmup_steps=100, learning_rate=1.0,
                      model={"num_layers": 1, "d_model": 32, "num_heads": 2, "d_ff": 64,
                             "dropout": 0.0}), verbose=0)
    return run_dir


def pytest_configure(config):
    """Hand out test files to the xdist workers in collection order (tests/bench first).

    With `--dist loadfile`, pytest-xdist by default sorts the files by their number of tests,
    most first (`--loadscope-reorder`), which puts the one-test benchmark files, minutes each,
    last: one worker then runs them while the other idles. Collected first, they start at
    once, one on each worker, and the many short files fill in around them.
    """
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False
