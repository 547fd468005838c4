"""End to end through the `keras-s2s` command on tiny settings."""

import json

import numpy as np
import pytest

from keras_s2s.cli import main
from keras_s2s.translator import Translator

TINY_MODELS = {
    "seq2seq": ["embedding_dim=16", "units=32"],
    "bahdanau": ["embedding_dim=16", "units=32"],
    "luong": ["embedding_dim=16", "units=32"],
    "transformer": ["num_layers=1", "d_model=32", "num_heads=2", "d_ff=64"],
}


def train_tiny(arch, out, data="reverse", extra=()):
    model_args = [arg for item in TINY_MODELS[arch] for arg in ("--model-arg", item)]
    return main(["train", "--arch", arch, "--data", data, "--out", str(out), "--epochs", "1",
                 "--num-pairs", "200", "--batch-size", "32", "--vocab-size", "60",
                 "--max-length", "6", *model_args, *extra])


@pytest.fixture(scope="module")
def bahdanau_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "bahdanau"
    assert train_tiny("bahdanau", out) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["seq2seq", "luong", "transformer"])
def test_train_and_translate_every_architecture(arch, tmp_path, capsys):
    out = tmp_path / arch
    assert train_tiny(arch, out) == 0
    for name in ("config.json", "model.keras", "source_vocab.txt", "target_vocab.txt",
                 "history.json", "training_curves.png"):
        assert (out / name).exists(), name
    capsys.readouterr()
    assert main(["translate", str(out), "a b c", "d e"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_translate_arguments_stdin_and_attention_plot(bahdanau_run, tmp_path, capsys,
                                                      monkeypatch):
    plot = tmp_path / "attention.png"
    assert main(["translate", str(bahdanau_run), "a b c", "--attention-plot", str(plot),
                 "--beam", "3", "--scores"]) == 0
    score, text = capsys.readouterr().out.rstrip("\n").split("\t")
    float(score)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("a b\nc d e\n"))
    assert main(["translate", str(bahdanau_run)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_evaluate_prints_json(bahdanau_run, tmp_path, capsys):
    data = tmp_path / "heldout.tsv"
    data.write_text("a b c\tc b a\nd e\te d\n", encoding="utf-8")
    assert main(["evaluate", str(bahdanau_run), "--data", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 2 and 0.0 <= report["bleu"] <= 100.0
    assert 0.0 <= report["exact_match"] <= 1.0


def test_reloaded_run_translates_identically(bahdanau_run):
    texts = ["a b c d", "e f", "b b a"]
    first = Translator.load(str(bahdanau_run)).translate(texts, beam_width=2)
    second = Translator.load(str(bahdanau_run)).translate(texts, beam_width=2)
    assert [t.text for t in first] == [t.text for t in second]
    np.testing.assert_allclose([t.score for t in first], [t.score for t in second], atol=1e-6)
    for translation in first:
        assert translation.attention.shape == (len(translation.output_tokens),
                                               len(translation.source_tokens))


@pytest.mark.parametrize("beam_width", [1, 2])
def test_xla_decoding_translates_like_graph_decoding(bahdanau_run, beam_width):
    texts = ["a b c d", "e f", "b b a"]  # 3 rows and 5 ids: padded to 4 × 6 for XLA
    graph = Translator.load(str(bahdanau_run)).translate(texts, beam_width=beam_width)
    xla = Translator.load(str(bahdanau_run), jit_compile=True).translate(
        texts, beam_width=beam_width)
    assert [t.text for t in xla] == [t.text for t in graph]
    np.testing.assert_allclose([t.score for t in xla], [t.score for t in graph], atol=1e-4)
    for fast, slow in zip(xla, graph):
        np.testing.assert_allclose(fast.attention, slow.attention, atol=1e-4)


def test_translate_with_xla_on_the_command_line(bahdanau_run, capsys):
    assert main(["translate", str(bahdanau_run), "a b c", "d e", "--xla", "on"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_existing_run_is_never_overwritten(bahdanau_run, capsys):
    before = (bahdanau_run / "model.keras").read_bytes()
    assert train_tiny("bahdanau", bahdanau_run) == 2
    assert "already holds a trained model" in capsys.readouterr().err
    assert (bahdanau_run / "model.keras").read_bytes() == before


@pytest.mark.parametrize("argv, message", [
    (["translate", "/nonexistent/run", "hi"], "is not a trained run directory"),
    (["evaluate", "/nonexistent/run", "--data", "x.tsv"], "is not a trained run directory"),
    (["train", "--data", "/nonexistent/pairs.tsv", "--out", "{tmp}/r"],
     "neither a built-in task"),
])
def test_user_errors_are_one_line_without_traceback(argv, message, tmp_path, capsys):
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_empty_data_file_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty.tsv"
    empty.write_text("", encoding="utf-8")
    assert main(["train", "--data", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "empty.tsv" in capsys.readouterr().err


def test_unknown_architecture_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--arch", "lstm", "--out", "x"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'lstm'" in capsys.readouterr().err
