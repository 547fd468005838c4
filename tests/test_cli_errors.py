"""User errors through the `keras-s2s` command: one line naming the file or value, exit status
2, nothing already written lost; and a command that starts fast and quietly."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

from keras_s2s.cli import _one_line, main
from tests.test_cli import train_tiny


def run_main(argv, capsys):
    """`main(argv)` → (exit status, stdout, stderr); usage errors exit through SystemExit."""
    try:
        status = main(argv)
    except SystemExit as exit:
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "in user code" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "transformer"
    assert train_tiny("transformer", out) == 0
    return out


def copy_of_run(run, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in os.listdir(run):
        if os.path.isfile(run / name):
            (copy / name).write_bytes((run / name).read_bytes())
    return copy


@pytest.mark.parametrize("content, fragment", [
    ('{"arch": "transformer", "colour": "blue"}', "unknown settings ['colour']"),
    ('["transformer"]', "must hold a JSON object of settings, got a list"),
    ('{"arch": "transformer",', "is not valid JSON"),
    ('{"batch_size": -4}', "batch_size must be a positive int, got -4"),
])
def test_a_broken_config_json_is_named(content, fragment, transformer_run, tmp_path, capsys):
    run = copy_of_run(transformer_run, tmp_path)
    (run / "config.json").write_text(content)
    status, _, err = run_main(["translate", str(run), "hello"], capsys)
    assert status == 2
    assert_one_line_error(err, str(run / "config.json"), fragment)


def test_a_truncated_model_file_is_not_called_missing(transformer_run, tmp_path, capsys):
    run = copy_of_run(transformer_run, tmp_path)
    data = (run / "model.keras").read_bytes()
    (run / "model.keras").write_bytes(data[:len(data) // 2])
    assert not zipfile.is_zipfile(run / "model.keras")
    status, _, err = run_main(["translate", str(run), "hello"], capsys)
    assert status == 2
    assert_one_line_error(err, "model.keras", "not a complete .keras file")


def test_lengths_past_the_models_limit_are_one_line(transformer_run, tmp_path, capsys):
    """Refused when the Translator is made, before any decoding function is traced."""
    run = copy_of_run(transformer_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["max_target_length"] = 500  # beyond the model's positional range
    (run / "config.json").write_text(json.dumps(config))
    status, _, err = run_main(["translate", str(run), "hello"], capsys)
    assert status == 2
    assert_one_line_error(err, "must not exceed the model's max_decode_length=")


def test_an_error_raised_while_tracing_shows_its_cause():
    """TensorFlow wraps an error raised inside a tf.function: the cause is the last line."""
    import tensorflow as tf

    @tf.function
    def failing():
        raise ValueError("max_length=9 exceeds the model's max_length=4")

    with pytest.raises(ValueError) as caught:
        failing()
    assert _one_line(caught.value) == "ValueError: max_length=9 exceeds the model's max_length=4"


def test_a_failed_first_run_leaves_nothing_to_resume(tmp_path, capsys):
    out = tmp_path / "run"
    # Fails after the vocabularies are learned: a bidirectional encoder needs even units.
    status, _, err = run_main(["train", "--arch", "bahdanau", "--data", "reverse",
                               "--out", str(out), "--num-pairs", "200", "--vocab-size", "60",
                               "--model-arg", "units=15"], capsys)
    assert status == 2
    assert_one_line_error(err, "units must be even")
    assert not out.exists()
    # The next run into the same --out is a fresh one, with its own vocabulary.
    assert train_tiny("transformer", out, data="copy") == 0
    assert json.loads((out / "config.json").read_text())["data"] == "copy"


def test_failure_keeps_what_was_there_before(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    status, _, err = run_main(["train", "--arch", "bahdanau", "--data", "reverse",
                               "--out", str(out), "--model-arg", "units=15"], capsys)
    assert status == 2 and out.is_dir() and os.listdir(out) == []
    (out / "notes.txt").write_text("mine")
    status, _, err = run_main(["train", "--data", "reverse", "--out", str(out)], capsys)
    assert status == 2
    assert_one_line_error(err, "is not empty (notes.txt)")
    assert (out / "notes.txt").read_text() == "mine"


def test_resuming_with_other_settings_is_refused(transformer_run, tmp_path, capsys):
    out = copy_of_run(transformer_run, tmp_path)  # trained on "reverse"
    os.remove(out / "model.keras")  # as if interrupted before the end
    status, _, err = run_main(["train", "--arch", "transformer", "--data", "dates",
                               "--out", str(out)], capsys)
    assert status == 2
    assert_one_line_error(err, "holds an interrupted run with other settings",
                          "data 'reverse' → 'dates'")


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--out", "x", "--time-budget", "-1"],
     "argument --time-budget: expected a positive number, got '-1'"),
    (["train", "--out", "x", "--batch-size", "0"],
     "argument --batch-size: expected a positive integer, got '0'"),
    (["train", "--out", "x", "--label-smoothing", "1.5"],
     "argument --label-smoothing: expected a number in [0, 1), got '1.5'"),
    (["train", "--out", "x", "--arch", "gpt"], "invalid choice: 'gpt'"),
])
def test_bad_numbers_are_one_line(argv, fragment, capsys):
    status, _, err = run_main(argv, capsys)
    assert status == 2
    assert_one_line_error(err, fragment)


def test_tflite_never_overwrites(tmp_path, capsys):
    out = tmp_path / "model.tflite"
    out.write_bytes(b"precious")
    status, _, err = run_main(["tflite", str(tmp_path), "--out", str(out)], capsys)
    assert status == 2
    assert_one_line_error(err, str(out), "already exists and is never overwritten")
    assert out.read_bytes() == b"precious"


def _quiet_environment():
    """The user's environment: without the test suite's TF_CPP_MIN_LOG_LEVEL."""
    return {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}


def test_help_imports_neither_tensorflow_nor_keras():
    script = ("import sys\nfrom keras_s2s.cli import main\n"
              "for argv in ([], ['train'], ['translate'], ['evaluate'], ['serve'], ['export'], "
              "['tflite']):\n"
              "    try:\n        main(argv + ['--help'])\n    except SystemExit:\n        pass\n"
              "print(sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, env=_quiet_environment())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_a_failing_command_prints_one_line_without_tensorflow_logs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "keras_s2s.cli", "translate", str(tmp_path / "nothing"), "x"],
        capture_output=True, text=True, timeout=300, env=_quiet_environment())
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"keras-s2s translate: error: {str(tmp_path / 'nothing')!r} is not a trained run "
        f"directory: config.json is missing (train one with `keras-s2s train --out "
        f"{tmp_path / 'nothing'}`)"]
