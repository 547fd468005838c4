"""Training that cannot have learned says so, in one line each, through `keras-s2s train`."""

import logging

from keras_s2s.cli import main

TINY = ["--model-arg", "num_layers=1", "--model-arg", "d_model=32", "--model-arg",
        "num_heads=2", "--model-arg", "d_ff=64", "--vocab-size", "100", "--batch-size", "32"]


def test_a_run_ending_inside_its_warm_up_and_saying_nothing_is_warned(tmp_path, caplog):
    """Two epochs of 400 pairs are 30 steps, far short of a 4,000-step warm-up: the learning
    rate never rose, and the model translates every validation sentence as nothing."""
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--arch", "transformer", "--data", "dates", "--num-pairs", "400",
                     "--epochs", "2", "--warmup-steps", "4000", "--out", str(tmp_path / "run"),
                     *TINY]) == 0
    warnings = [record.getMessage() for record in caplog.records
                if record.levelno == logging.WARNING and record.name.startswith("keras_s2s")]
    assert any("before the 4000 steps of the learning rate's warm-up" in message
               for message in warnings), warnings
    assert any("validation sentences as nothing: it has not learned the task" in message
               for message in warnings), warnings
    assert all(len(message.splitlines()) == 1 for message in warnings)
