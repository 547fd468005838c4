"""Word alignments from attention, `translate --alignments` and `--replace-unknowns`."""

import re

import numpy as np
import pytest

from keras_s2s.cli import main
from keras_s2s.data.synthetic import generate
from keras_s2s.data.tokenizers import SubwordTokenizer
from keras_s2s.explore.server import Explorer
from keras_s2s.inference.alignment import word_alignments, word_ids
from keras_s2s.inference.translator import Translator
from keras_s2s.special_tokens import SPECIAL_TOKENS, UNK_ID
from tests.test_export import make_run_dir

WORDPIECE = SubwordTokenizer(list(SPECIAL_TOKENS) + ["the", "cat", "##s", "sat", "le", "chat",
                                                     "##on", "assis"])
DATES = [source for source, _ in generate("dates", 3, seed=7)]


def test_subword_attention_is_merged_into_words():
    source = ["the", "cat", "##s", "sat", "[END]"]  # words: the, cats, sat
    target = ["le", "chat", "##on", "##s", "assis", "[END]"]  # words: le, chatons, assis
    attention = np.array([
        [0.6, 0.1, 0.1, 0.1, 0.1],
        [0.0, 0.3, 0.3, 0.4, 0.0],  # alone, "chat" attends most to "sat"...
        [0.0, 0.3, 0.3, 0.4, 0.0],
        [0.0, 0.3, 0.3, 0.4, 0.0],  # ...but "cat" + "##s" hold 0.6 of each row
        [0.1, 0.0, 0.0, 0.2, 0.7],  # END holds the most: it is no word, "sat" is next
        [0.0, 0.0, 0.0, 0.0, 1.0]])
    assert word_ids(source, WORDPIECE) == [0, 1, 1, 2, None]
    assert word_ids(target, WORDPIECE) == [0, 1, 1, 1, 2, None]
    assert word_alignments(attention, word_ids(source, WORDPIECE),
                           word_ids(target, WORDPIECE)) == [(0, 0), (1, 1), (2, 2)]
    assert word_alignments(np.ones((1, 1)), [None], [None]) == []


@pytest.fixture(scope="module")
def dates_translations(dates_transformer):
    translator = Translator.load(dates_transformer)
    return translator, translator.translate(DATES)


def test_translate_prints_the_alignment_in_pharaoh_format(dates_transformer,
                                                          dates_translations, capsys):
    translator, translations = dates_translations
    assert main(["translate", dates_transformer, *DATES, "--alignments"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(DATES)
    for line, translation in zip(lines, translations):
        text, alignment = line.split("\t")
        assert text == translation.text and re.fullmatch(r"(\d+-\d+)( \d+-\d+)*", alignment)
        pairs = [tuple(map(int, pair.split("-"))) for pair in alignment.split()]
        assert pairs == translation.alignments
        # One link per output word, to a word of the source.
        assert [target for _, target in pairs] == list(range(
            max(filter(None.__ne__, word_ids(translation.output_tokens,
                                             translator.target_tokenizer))) + 1))
        assert max(source for source, _ in pairs) <= max(filter(None.__ne__, word_ids(
            translation.source_tokens, translator.source_tokenizer)))


def test_alignments_agree_with_the_explorers_heat_map(dates_transformer, dates_translations):
    translator, translations = dates_translations
    explorer = Explorer([dates_transformer])
    for text, translation in zip(DATES, translations):
        shown = explorer.translate_json({"text": text})["results"][0]
        heat_map = np.mean(shown["attention"][-1], axis=0)  # last layer, average of the heads
        assert word_alignments(
            heat_map, word_ids(shown["source_tokens"], translator.source_tokenizer),
            word_ids(shown["target_tokens"], translator.target_tokenizer)
        ) == translation.alignments


def _always_unknown(model):
    """Output weights that make the unknown token the most probable at every step."""
    bias = np.zeros(model.target_vocab_size, "float32")
    bias[UNK_ID] = 50.0
    model.output_projection.bias.assign(bias)


def test_replace_unknowns_puts_the_most_attended_source_word(tmp_path, capsys):
    run_dir = make_run_dir(tmp_path / "unknowns", "transformer", prepare=_always_unknown)
    source = "pif k ipm"
    translator = Translator.load(run_dir)
    [translation] = translator.translate([source])
    assert set(translation.output_tokens) == {"[UNK]"}
    source_words = word_ids(translation.source_tokens, translator.source_tokenizer)
    word_of_column = np.array([-1 if word is None else word for word in source_words])
    expected = []
    for row in translation.attention:  # numpy: each word's subword columns summed
        sums = [row[word_of_column == word].sum() for word in range(word_of_column.max() + 1)]
        expected.append(source.split()[int(np.argmax(sums))])
    assert main(["translate", run_dir, source, "--replace-unknowns"]) == 0
    assert capsys.readouterr().out.split() == expected
