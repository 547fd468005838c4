"""Fine-tuning an imported Marian checkpoint: `keras-s2s train --init-from RUN`.

A tiny random checkpoint (the one `test_marian` builds, with smaller weights, which train
faster) is imported, then trained on copying sentences of words its vocabulary holds whole: the
loss falls, the outputs move toward the copies, and the new run keeps the imported tokenizer
files byte for byte.
"""

import json
import random

import pytest

from tests.importers.test_marian import _checkpoint

from keras_s2s.cli import main
from keras_s2s.decoding import Greedy
from keras_s2s.inference.translator import Translator

MAX_LENGTH = 12
#: Words that both SentencePiece models of the checkpoint hold as one piece.
COPIED_WORDS = ("the", "go", "home", "friend", "rice", "we", "I")


def _copy_pairs(count, seed):
    rng = random.Random(seed)
    sentences = [" ".join(rng.choices(COPIED_WORDS, k=rng.randint(1, 3)))
                 for _ in range(count)]
    return [(sentence, sentence) for sentence in sentences]


@pytest.fixture(scope="module")
def imported_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fine-tuning")
    checkpoint = root / "checkpoint"
    checkpoint.mkdir()
    _checkpoint(checkpoint, "swish", True, True, seed=0, weight_std=0.1)
    run = root / "imported"
    assert main(["import", str(checkpoint), "--out", str(run), "--max-length",
                 str(MAX_LENGTH)]) == 0
    return run


def _copied_words(run, pairs):
    """The share of the target words that greedy outputs hold at their positions."""
    outputs = Translator.load(str(run)).translate([source for source, _ in pairs], Greedy(),
                                                  attention=False)
    hits = total = 0
    for output, (_, target) in zip(outputs, pairs):
        words = target.split()
        hits += sum(a == b for a, b in zip(output.text.split(), words))
        total += len(words)
    return hits / total


def test_fine_tuning_learns_the_task_and_keeps_the_tokenizers(imported_run, tmp_path):
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{s}\t{t}\n" for s, t in _copy_pairs(240, seed=0)),
                    encoding="utf-8")
    out = tmp_path / "tuned"
    assert main(["train", "--init-from", str(imported_run), "--data", str(data), "--out",
                 str(out), "--epochs", "6", "--batch-size", "16", "--warmup-steps", "30",
                 "--learning-rate", "0.3", "--label-smoothing", "0", "--xla", "off"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert min(history["val_loss"]) < 0.6 * history["val_loss"][0], history["val_loss"]
    held_out = _copy_pairs(40, seed=1)
    before, after = _copied_words(imported_run, held_out), _copied_words(out, held_out)
    print(f"copied words: {before:.2f} imported, {after:.2f} fine-tuned")
    assert after > before + 0.2
    digests = json.loads((imported_run / "digests.json").read_text())
    assert json.loads((out / "digests.json").read_text()) == digests
    for name in digests:
        assert (out / name).read_bytes() == (imported_run / name).read_bytes()
    config = json.loads((out / "config.json").read_text())
    imported_config = json.loads((imported_run / "config.json").read_text())
    assert config["init_from"] == str(imported_run)
    assert {k: config[k] for k in ("arch", "model", "tokenizer", "max_source_length")} == {
        k: imported_config[k] for k in ("arch", "model", "tokenizer", "max_source_length")}


@pytest.mark.parametrize("flags, named", [
    (["--model-arg", "d_model=32"], "--model-arg d_model"),
    (["--vocab-size", "500"], "--vocab-size"),
    (["--lowercase"], "--lowercase"),
    (["--arch", "luong"], "--arch"),
    (["--arch", "bahdanau"], "--arch"),  # the default value, given: still not the run's
    (["--tokenizer", "wordpiece"], "--tokenizer"),  # the default, too
    (["--model-arg", "share_embeddings=false"], "--model-arg share_embeddings"),
])
def test_flags_changing_the_model_are_refused(imported_run, tmp_path, capsys, flags, named):
    out = tmp_path / "tuned"
    capsys.readouterr()
    assert main(["train", "--init-from", str(imported_run), "--data", "copy", "--out",
                 str(out), *flags]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and f"{named} cannot be given" in error, error
    assert not out.exists()


def test_init_from_a_directory_without_a_run_is_one_line(tmp_path, capsys):
    out = tmp_path / "tuned"
    assert main(["train", "--init-from", str(tmp_path), "--data", "copy", "--out",
                 str(out)]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "config.json is missing" in error, error
    assert not out.exists()
