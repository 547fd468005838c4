"""End to end through the `keras-s2s` command on tiny settings."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_s2s.cli import main
from keras_s2s.decoding import Beam, Greedy, Sample
from keras_s2s.inference.translator import Translator

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


RUN_FILES = ("config.json", "model.keras", "source_vocab.txt", "target_vocab.txt",
             "history.json", "training_curves.png")


# Bahdanau trains in `bahdanau_run`, Seq2Seq in the streamed test at the end (same checks).
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["luong", "transformer"])
def test_train_and_translate_every_architecture(arch, tmp_path, capsys):
    out = tmp_path / arch
    assert train_tiny(arch, out) == 0
    for name in RUN_FILES:
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
    monkeypatch.setattr("sys.stdin", io.StringIO("a b\nc d e\n"))
    assert main(["translate", str(bahdanau_run)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


@pytest.mark.parametrize("decoding", [[], ["--beam", "2", "--alpha", "0"]])
def test_evaluate_prints_json(decoding, bahdanau_run, tmp_path, capsys):
    data = tmp_path / "heldout.tsv"
    data.write_text("a b c\tc b a\nd e\te d\n", encoding="utf-8")
    assert main(["evaluate", str(bahdanau_run), "--data", str(data), "--json", *decoding]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 2 and 0.0 <= report["bleu"] <= 100.0
    assert 0.0 <= report["exact_match"] <= 1.0


def test_reloaded_run_translates_identically(bahdanau_run):
    texts = ["a b c d", "e f", "b b a"]
    first = Translator.load(str(bahdanau_run)).translate(texts, strategy=Beam(2))
    second = Translator.load(str(bahdanau_run)).translate(texts, strategy=Beam(2))
    assert [t.text for t in first] == [t.text for t in second]
    np.testing.assert_allclose([t.score for t in first], [t.score for t in second], atol=1e-6)
    for translation in first:
        assert translation.attention.shape == (len(translation.output_tokens),
                                               len(translation.source_tokens))


@pytest.mark.parametrize("strategy", [Greedy(), Beam(2, n_best=2),
                                      Sample(temperature=0.8, top_p=0.9, seed=3)])
def test_xla_decoding_translates_like_graph_decoding(bahdanau_run, strategy):
    texts = ["a b c d", "e f", "b b a"]  # 3 rows and 5 ids: padded to 4 × 6 for XLA
    graph = Translator.load(str(bahdanau_run)).translate(texts, strategy=strategy)
    xla = Translator.load(str(bahdanau_run), jit_compile=True).translate(
        texts, strategy=strategy)
    assert [t.text for t in xla] == [t.text for t in graph]
    np.testing.assert_allclose([t.score for t in xla], [t.score for t in graph], atol=1e-4)
    for fast, slow in zip(xla, graph):
        np.testing.assert_allclose(fast.attention, slow.attention, atol=1e-4)
        assert [t.text for t in fast.alternatives] == [t.text for t in slow.alternatives]


def test_translate_with_xla_on_the_command_line(bahdanau_run, capsys):
    assert main(["translate", str(bahdanau_run), "a b c", "d e", "--xla", "on"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_xla_programs_are_kept_between_commands(bahdanau_run, tmp_path):
    """`--xla on` keeps its compiled programs in KERAS_S2S_XLA_CACHE: a second command
    compiles nothing new and translates as the first did, and as graph decoding does."""
    cache = tmp_path / "xla"
    env = {name: value for name, value in os.environ.items() if name != "TF_XLA_FLAGS"}
    env["KERAS_S2S_XLA_CACHE"] = str(cache)

    def translate_in_a_new_process(xla):
        result = subprocess.run(
            [sys.executable, "-m", "keras_s2s.cli", "translate", str(bahdanau_run), "a b c",
             "d e", "--beam", "2", "--xla", xla], capture_output=True, text=True, timeout=300,
            env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    first = translate_in_a_new_process("on")
    programs = sorted(os.listdir(cache))
    assert programs and all(name.startswith("xla_compile_cache") for name in programs)
    assert translate_in_a_new_process("on") == first
    assert sorted(os.listdir(cache)) == programs
    assert translate_in_a_new_process("off") == first


def translate(argv, capsys):
    """`keras-s2s translate ARGV`'s exit status and printed lines."""
    capsys.readouterr()
    status = main(["translate", *argv])
    return status, capsys.readouterr().out.splitlines()


def test_sampling_on_the_command_line_is_repeatable_with_a_seed(bahdanau_run, capsys):
    sampling = [str(bahdanau_run), "a b c", "d e", "--temperature", "0.8", "--top-k", "10"]
    status, first = translate(sampling + ["--seed", "1"], capsys)
    assert status == 0 and len(first) == 2
    assert translate(sampling + ["--seed", "1"], capsys) == (0, first)
    nucleus = [str(bahdanau_run), "a b c", "--top-p", "0.9", "--temperature", "1.5"]
    assert translate(nucleus, capsys)[0] == 0
    outputs = {tuple(translate(nucleus + ["--seed", str(seed)], capsys)[1])
               for seed in range(4)}
    assert len(outputs) > 1  # the seed matters


def test_temperature_zero_is_greedy_search(bahdanau_run, capsys):
    greedy = translate([str(bahdanau_run), "a b c", "d e", "--scores"], capsys)
    assert translate([str(bahdanau_run), "a b c", "d e", "--scores", "--temperature", "0"],
                     capsys) == greedy


def test_n_best_prints_n_lines_per_input_best_first(bahdanau_run, capsys):
    status, lines = translate([str(bahdanau_run), "a b c", "d e", "--beam", "3", "--n-best",
                               "3", "--scores"], capsys)
    assert status == 0 and len(lines) == 6
    scores = [float(line.split("\t")[0]) for line in lines]
    assert scores[:3] == sorted(scores[:3], reverse=True)
    assert scores[3:] == sorted(scores[3:], reverse=True)
    best = translate([str(bahdanau_run), "a b c", "d e", "--beam", "3", "--scores"], capsys)
    assert best == (0, [lines[0], lines[3]])


def test_empty_inputs_give_empty_lines(bahdanau_run, capsys, monkeypatch):
    status, lines = translate([str(bahdanau_run), "", "a b c", "   "], capsys)
    assert status == 0 and len(lines) == 3 and lines[0] == lines[2] == ""
    status, lines = translate([str(bahdanau_run), "", "a b c", "--scores"], capsys)
    assert lines[0] == "0.0000\t" and float(lines[1].split("\t")[0]) < 0  # decoded
    monkeypatch.setattr("sys.stdin", io.StringIO("a b\n\nc d e\n"))
    status, lines = translate([str(bahdanau_run), "--scores"], capsys)
    assert status == 0 and len(lines) == 3 and lines[1] == "0.0000\t"
    translations = Translator.load(str(bahdanau_run)).translate(["", " \t"])
    assert [(t.text, t.score, t.output_tokens) for t in translations] == [("", 0.0, [])] * 2


@pytest.mark.parametrize("flags, message", [
    (["--beam", "3", "--attention-plot", "a.png"],
     "--server cannot honour --attention-plot: the server's export decodes, without attention"),
    (["--n-best", "2", "--xla", "on"], "--server cannot honour --xla on"),
    (["--temperature", "0.8", "--beam", "2"], "choose beam search (--beam, --alpha, --n-best) "
                                              "or sampling"),
])
def test_server_translation_refuses_what_it_cannot_honour(flags, message, capsys):
    argv = ["translate", "--server", "http://127.0.0.1:9", "--model", "m", "hi", *flags]
    assert main(argv) == 2  # before any connection: nothing listens on port 9
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, message", [
    (["--beam", "2", "--temperature", "0.5"], "choose beam search"),
    (["--seed", "1"], "--seed applies to sampling"),
    (["--n-best", "2"], "apply to beam search: give --beam WIDTH"),
    (["--beam", "2", "--n-best", "3"], "n_best must be at most the beam width 2, got 3"),
    (["--temperature", "-1"], "temperature must be 0 (greedy search) or a number in [0.001, "
                              "100.0], got -1.0"),
    (["--top-p", "0"], r"top_p must be a number in (0.0, 1.0], got 0.0"),
])
def test_bad_decoding_flags_are_one_line(flags, message, bahdanau_run, capsys):
    assert main(["translate", str(bahdanau_run), "a b", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


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
    (["train", "--data", "reverse", "--out", "{tmp}/r", "--batch-tokens", "40"],
     "batch_tokens=40 cannot hold one sequence of the longest length allowed (64"),
    (["train", "--arch", "transformer", "--data", "reverse", "--out", "{tmp}/r",
      "--num-pairs", "50", "--model-arg", "share_embeddings=true"],
     "share_embeddings needs one vocabulary for source and target"),
    (["train", "--data", "{tmp}/pairs.tsv", "--out", "{tmp}/r", "--stream", "--decay",
      "linear"], "a streamed corpus has no known length, so give a time budget"),
])
def test_user_errors_are_one_line_without_traceback(argv, message, tmp_path, capsys):
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_transformer_trains_with_the_corpus_levers(tmp_path, capsys):
    """The corpus recipes' levers through the command: a SentencePiece vocabulary shared by
    both sides, token-based batches, one embedding matrix for source, target and output, word
    dropout."""
    out = tmp_path / "tied"
    assert train_tiny("transformer", out, extra=[
        "--shared-vocab", "--tokenizer", "unigram", "--batch-tokens", "64", "--model-arg",
        "share_embeddings=true", "--model-arg", "tie_embeddings=true", "--word-dropout",
        "0.1"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["batch_tokens"] == 64 and config["model"]["share_embeddings"] is True
    assert config["word_dropout"] == 0.1
    assert json.loads((out / "source_tokenizer.json").read_text())["type"] == "sentencepiece"
    translator = Translator.load(out)
    assert any(token.startswith("▁") for token in translator.source_tokenizer.vocabulary)
    model = translator.model
    assert model.source_embedding is model.target_embedding
    capsys.readouterr()
    assert main(["translate", str(out), "a b c"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


@pytest.mark.parametrize("arch, peak", [("transformer", 0.5 * (32 * 2) ** -0.5), ("luong", 0.01)])
def test_linear_decay_takes_the_rate_to_zero_as_the_epochs_run_out(arch, peak, tmp_path):
    """`--decay linear` (budgeted training): from the family's peak rate (the Transformer's
    warm-up schedule's, scale · (d_model · warm-up)^-0.5; Adam's for the RNNs), a rate falling
    linearly to zero at the last of the epochs. Each epoch records the rate that Keras set before
    asking its dataset for one more batch: at step (epoch + 1) · steps of an epoch, which is
    (epoch + 1) / 3 of the way, whatever the steps of an epoch are (they must be counted right)."""
    out = tmp_path / arch
    assert train_tiny(arch, out, extra=[
        "--epochs", "3", "--patience", "5", "--decay", "linear", "--warmup-steps", "2",
        "--learning-rate", str(0.5 if arch == "transformer" else peak)]) == 0
    rates = json.loads((out / "history.json").read_text())["learning_rate"]
    np.testing.assert_allclose(rates, [peak * 2 / 3, peak / 3, 0.0], rtol=1e-6)
    assert rates[-1] == 0.0  # the budget's end, reached after the last step


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


def test_train_streamed_from_a_glob_and_translate(tmp_path, capsys):
    """`--stream` on two TSV files: trains Seq2Seq, and the run translates like any other."""
    from keras_s2s.data import synthetic
    pairs = synthetic.generate("reverse", 200, seed=0, max_length=6)
    for name, part in (("a.tsv", pairs[:100]), ("b.tsv", pairs[100:])):
        (tmp_path / name).write_text("".join(f"{s}\t{t}\n" for s, t in part), encoding="utf-8")
    out = tmp_path / "run"
    assert train_tiny("seq2seq", out, data=str(tmp_path / "*.tsv"), extra=["--stream"]) == 0
    for name in RUN_FILES:
        assert (out / name).exists(), name
    assert json.loads((out / "config.json").read_text())["stream"] is True
    vocabulary = set((out / "source_vocab.txt").read_text(encoding="utf-8").split())
    assert {token for source, _ in pairs for token in source.split()} <= vocabulary
    capsys.readouterr()
    assert main(["translate", str(out), "a b c", "d e"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_tune_alpha_stores_the_best_length_penalty_which_beam_search_then_uses(
        bahdanau_run, tmp_path, capsys):
    """`tune-alpha` keeps the α of the best validation BLEU (sacreBLEU on the run's own
    validation split, decoded here independently); `translate --beam` without `--alpha` then
    decodes exactly as with `--alpha` set to it."""
    import sacrebleu

    from keras_s2s.training.config import TrainConfig
    from keras_s2s.data.corpus import load_pairs

    run = tmp_path / "run"
    run.mkdir()
    for path in bahdanau_run.iterdir():
        if path.is_file():
            (run / path.name).write_bytes(path.read_bytes())
    capsys.readouterr()
    assert main(["tune-alpha", str(run), "--beam", "2", "--alphas", "0", "1.5",
                 "--max-pairs", "40"]) == 0
    assert "stored in" in capsys.readouterr().out
    report = json.loads((run / "decoding.json").read_text())
    pairs = load_pairs(TrainConfig.load(run / "config.json"))[1][:40]
    translator = Translator.load(run)
    for alpha in (0.0, 1.5):
        texts = [t.text for t in translator.translate([s for s, _ in pairs], Beam(2, alpha))]
        expected = sacrebleu.corpus_bleu(texts, [[t for _, t in pairs]]).score
        assert report["bleu_by_alpha"][str(alpha)] == pytest.approx(expected, abs=1e-3)
    best = max(report["bleu_by_alpha"].values())
    assert report["bleu_by_alpha"][str(report["alpha"])] == best and report["pairs"] == 40

    (run / "decoding.json").write_text(json.dumps({"alpha": 8.0}))  # favours length
    outputs = []
    for extra in ([], ["--alpha", "8"], ["--alpha", "0"]):
        assert main(["translate", str(run), "a b c d", "e f", "--beam", "2", "--scores",
                     *extra]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] != outputs[2]

    (run / "decoding.json").write_text('{"alpha": -1}')
    assert main(["translate", str(run), "a b", "--beam", "2"]) == 2
    err = capsys.readouterr().err
    assert "alpha must be a number >= 0, got -1" in err and len(err.strip().splitlines()) == 1
