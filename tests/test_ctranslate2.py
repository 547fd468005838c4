"""CTranslate2 export: the same outputs as our search (trained and random Transformers), the CLI.

The reference is CTranslate2's own C++ implementation of the Transformer and of greedy and beam
search, given our weights by `keras-s2s export --format ctranslate2`.
"""

import json
import os

import numpy as np
import pytest

from keras_s2s import run as run_files
from keras_s2s.cli import main
from keras_s2s.data import synthetic
from keras_s2s.decoding import Beam, Greedy, Sample
from keras_s2s.special_tokens import END_ID
from keras_s2s.inference.translator import CTranslate2Translator, Translator, translator_for
from keras_s2s.run import Run
from tests.test_export import make_run_dir

#: The strategies compared: greedy search, and beam search with the length penalty (and n-best
#: on the trained model: on random weights the two searches' runners-up may differ).
STRATEGIES = (Greedy(), Beam(4, alpha=0.6, n_best=2))
RANDOM_STRATEGIES = (Greedy(), Beam(4, alpha=0.6))
#: What `keras-s2s evaluate --data dates` scores (its fixed seed), and an empty input.
DATES = [source for source, _ in synthetic.generate("dates", 200, seed=12345)]
REVERSE = [source for source, _ in synthetic.generate("reverse", 100, seed=1, max_length=6)]


def export(run_dir, out, *options):
    assert main(["export", run_dir, "--format", "ctranslate2", "--out", str(out), *options]) == 0
    return str(out)


def agreement(ours, theirs):
    """The fraction of inputs whose hypotheses (the best and the alternatives) have the same
    tokens, and the largest score difference among those hypotheses."""
    same, differences = [], [0.0]
    for mine, other in zip(ours, theirs, strict=True):
        pairs = list(zip([mine, *mine.alternatives], [other, *other.alternatives], strict=True))
        same.append(all(a.output_tokens == b.output_tokens for a, b in pairs))
        if same[-1]:
            differences += [abs(a.score - b.score) for a, b in pairs]
    return np.mean(same), max(differences)


def assert_parity(run_dir, export_dir, texts, strategies=STRATEGIES):
    ours, theirs = Translator.load(run_dir), translator_for(Run.open(export_dir))
    assert isinstance(theirs, CTranslate2Translator)
    outputs = {}
    for strategy in strategies:
        outputs[strategy] = (ours.translate(texts, strategy), theirs.translate(texts, strategy))
        same, difference = agreement(*outputs[strategy])
        assert same >= 0.99 and difference < 1e-3, (strategy, same, difference)
    return outputs


@pytest.fixture(scope="module")
def dates_export(dates_transformer, tmp_path_factory):
    return export(dates_transformer, tmp_path_factory.mktemp("ct2") / "dates")


@pytest.fixture(scope="module")
def dates_outputs(dates_transformer, dates_export):
    """{strategy: (our translations, CTranslate2's)} of DATES, checked for parity."""
    return assert_parity(dates_transformer, dates_export, DATES + [""])


def test_trained_model_gives_our_outputs_and_scores(dates_outputs):
    greedy, _ = dates_outputs[Greedy()]
    *translated, empty = greedy
    assert len({t.text for t in translated}) > 20  # the model translates, it does not repeat
    assert all(t.output_tokens[-1] == "[END]" for t in translated)  # not cut at the limit
    assert empty.text == "" and empty.score == 0.0 and empty.output_tokens == []


def _sharpened(end_bias=0.0):
    """Random weights whose next-token distributions are peaked, as a trained model's (on flat
    ones the two beam searches may differ, see `CTranslate2Translator`); `end_bias` makes END
    likely enough (untied embeddings) that outputs end at several lengths."""
    def prepare(model):
        if model.tie_embeddings:
            model.target_embedding.embeddings.assign(model.target_embedding.embeddings * 6.0)
            return
        model.output_projection.kernel.assign(model.output_projection.kernel * 6.0)
        bias = np.zeros(model.target_vocab_size, "float32")
        bias[END_ID] = end_bias
        model.output_projection.bias.assign(bias)
    return prepare


def _random_run(directory, normalize_first, tie_embeddings, end_bias=0.0):
    return make_run_dir(directory, "transformer", prepare=_sharpened(end_bias), model_args={
        "num_layers": 2, "normalize_first": normalize_first, "tie_embeddings": tie_embeddings})


@pytest.mark.parametrize("normalize_first, tie_embeddings", [(False, False), (True, True)],
                         ids=["post-norm-untied", "pre-norm-tied"])
def test_random_weights_give_our_outputs_and_scores(tmp_path, normalize_first,
                                                    tie_embeddings):
    run_dir = _random_run(tmp_path / "run", normalize_first, tie_embeddings)
    assert_parity(run_dir, export(run_dir, tmp_path / "ct2"), REVERSE, RANDOM_STRATEGIES)


def test_random_weights_ending_at_several_lengths_give_our_greedy_outputs(tmp_path):
    """END competing with other tokens: greedy search agrees at every length. (Beam search
    is left out here: where END competes, the two searches finish hypotheses differently by
    design, see `CTranslate2Translator`.)"""
    run_dir = _random_run(tmp_path / "run", False, False, end_bias=15.0)
    outputs = assert_parity(run_dir, export(run_dir, tmp_path / "ct2"), REVERSE, (Greedy(),))
    greedy, _ = outputs[Greedy()]
    assert len({len(t.output_tokens) for t in greedy}) > 1


def test_attention_is_the_last_layers_mean_over_heads(dates_outputs):
    for strategy, (ours, theirs) in dates_outputs.items():
        first = 0 if isinstance(strategy, Greedy) else 1  # CTranslate2's beam: see its class
        for mine, other in zip(ours, theirs):
            assert other.source_tokens == mine.source_tokens
            if other.output_tokens == mine.output_tokens:
                np.testing.assert_allclose(other.attention[first:], mine.attention[first:],
                                           atol=1e-4)


def test_cli_translate_and_evaluate_read_the_export(dates_outputs, dates_export, capsys):
    beam, _ = dates_outputs[STRATEGIES[1]]
    capsys.readouterr()
    assert main(["translate", dates_export, *DATES[:3], "--beam", "4", "--n-best", "2",
                 "--scores"]) == 0
    expected = [f"{h.score:.4f}\t{h.text}" for t in beam[:3] for h in [t, *t.alternatives]]
    assert capsys.readouterr().out.splitlines() == expected

    greedy, _ = dates_outputs[Greedy()]
    assert main(["evaluate", dates_export, "--data", "dates", "--num-pairs", "200",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    references = [target for _, target in synthetic.generate("dates", 200, seed=12345)]
    from keras_s2s.inference.evaluation import evaluation_report

    assert report == evaluation_report(DATES, [t.text for t in greedy[:-1]], references)


def test_the_export_keeps_the_tuned_length_penalty(dates_transformer, tmp_path, capsys):
    """A run's `decoding.json` (`tune-alpha`'s α) travels with the export: `translate --beam`
    on it decodes as with `--alpha` set to that α, as on the run itself."""
    run = tmp_path / "run"
    run.mkdir()
    for name in os.listdir(dates_transformer):
        if os.path.isfile(os.path.join(dates_transformer, name)):
            (run / name).write_bytes(open(os.path.join(dates_transformer, name), "rb").read())
    (run / run_files.DECODING).write_text(json.dumps({"alpha": 3.0}))
    exported = export(str(run), tmp_path / "ct2")
    outputs = []
    for extra in ([], ["--alpha", "3"], ["--alpha", "0.6"]):
        capsys.readouterr()
        assert main(["translate", exported, *DATES[:5], "--beam", "4", "--scores",
                     *extra]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] != outputs[2]


def test_int8_export_is_smaller_and_scores_alike(dates_transformer, dates_export, tmp_path,
                                                 capsys):
    int8 = export(dates_transformer, tmp_path / "int8", "--quantize", "int8")
    sizes = [os.path.getsize(os.path.join(path, run_files.CTRANSLATE2_MODEL))
             for path in (dates_export, int8)]
    assert sizes[1] < 0.5 * sizes[0]
    bleu = []
    for path in (dates_export, int8):
        capsys.readouterr()
        assert main(["evaluate", path, "--data", "dates", "--num-pairs", "200", "--json"]) == 0
        bleu.append(json.loads(capsys.readouterr().out)["bleu"])
    assert abs(bleu[0] - bleu[1]) < 2.0, bleu


def test_rnn_families_are_refused_in_one_line(tmp_path, capsys):
    run_dir = make_run_dir(tmp_path / "luong", "luong")
    assert main(["export", run_dir, "--format", "ctranslate2", "--out",
                 str(tmp_path / "ct2")]) == 2
    error = capsys.readouterr().err
    assert "'luong'" in error and "not RNN encoder-decoders" in error
    assert len(error.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "ct2")


def test_an_existing_directory_is_never_overwritten(dates_transformer, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    assert main(["export", dates_transformer, "--format", "ctranslate2", "--out",
                 str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert os.listdir(out) == ["notes.txt"]


@pytest.mark.parametrize("argv, message", [
    (["export", "{run}", "--format", "ctranslate2", "--out", "{tmp}/x", "--beam", "4"],
     "does not take --beam"),
    (["export", "{run}", "--format", "ctranslate2", "--out", "{tmp}/x", "--xla", "on"],
     "does not take --xla on"),
    (["export", "{run}", "--format", "ctranslate2"], "needs --out DIR"),
    (["export", "{run}", "--model-name", "m", "--quantize", "int8"], "apply to --format"),
    (["translate", "{export}", "hi", "--temperature", "0.5"], "Greedy() or Beam(...)"),
    (["translate", "{export}", "hi", "--xla", "on"], "is a CTranslate2 export"),
])
def test_misuse_is_one_line(argv, message, dates_transformer, dates_export, tmp_path, capsys):
    argv = [part.format(run=dates_transformer, export=dates_export, tmp=tmp_path)
            for part in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_sampling_is_refused_by_the_python_api(dates_export):
    with pytest.raises(ValueError, match="Greedy"):
        CTranslate2Translator(Run.open(dates_export)).translate(["1 May 2020"], Sample(seed=1))
