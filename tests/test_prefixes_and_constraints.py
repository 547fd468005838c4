"""Target prefixes and lexical constraints through the entry points users take: the
`Translator` and `keras-s2s translate`, on the trained dates Transformer (its outputs are ISO
dates, so a year that is not the source's is one the model would not write unasked)."""

import pytest

from keras_s2s.cli import main
from keras_s2s.decoding import Beam, Greedy

SOURCES = ["March 4th, 2021", "12 August 1999", "Monday, January 1, 2001"]


@pytest.fixture(scope="module")
def translator(dates_transformer):
    from keras_s2s.inference.translator import Translator

    return Translator.load(dates_transformer)


def test_translations_start_with_their_prefix(translator):
    prefixes = ["1987", "", "2049-12"]
    plain = translator.translate(SOURCES, Greedy(), attention=False)
    assert not plain[0].text.startswith("1987") and not plain[2].text.startswith("2049-12")
    guided = translator.translate(SOURCES, Greedy(), attention=False, prefixes=prefixes)
    for translation, prefix in zip(guided, prefixes):
        assert translation.text.startswith(prefix), translation.text
    assert guided[1].text == plain[1].text  # no prefix: the model's own translation


def test_the_command_takes_a_prefix_and_more_constraints_than_the_beam_width(
        dates_transformer, capsys):
    """Every hypothesis (two per input) starts with the prefix, no source's year, and holds
    all three phrases, though the beam holds two hypotheses."""
    phrases = ["-12", "-3", "0"]
    assert main(["translate", dates_transformer, *SOURCES, "--beam", "2", "--n-best", "2",
                 "--prefix", "1987",
                 *(word for phrase in phrases for word in ("--constraint", phrase))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6
    for line in lines:
        assert line.startswith("1987") and all(phrase in line for phrase in phrases), line


@pytest.mark.parametrize("flags", [["--constraint", "1987"],
                                   ["--temperature", "0.5", "--constraint", "1987"]])
def test_the_command_refuses_constraints_without_beam_search(flags, dates_transformer, capsys):
    assert main(["translate", dates_transformer, SOURCES[0], *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-s2s translate: error: constraints need beam search "
                          "(Beam(width)): ") and len(err.splitlines()) == 1
    assert "keeps one hypothesis and cannot steer it towards the phrases" in err


TOO_LONG = "1 2 3 4 5 6 7 8 9 1 2 3 4 5 6 7"  # 16 tokens, max_target_length 16


@pytest.mark.parametrize("guides, message", [
    ({"constraints": [[" "]]}, "the constraint ' ' is empty: it holds no token"),
    ({"constraints": [[TOO_LONG]]}, f"the constraint '{TOO_LONG}' has 16 tokens; at most 15 "
                                    f"fit before the end token (max_target_length 16)"),
    ({"constraints": [["1 2 3 4 5 6 7 8"] * 2]},
     "the constraints ['1 2 3 4 5 6 7 8', '1 2 3 4 5 6 7 8'] hold 16 tokens; at most 15 fit "
     "before the end token (max_target_length 16)"),
    ({"prefixes": [TOO_LONG]}, f"the prefix '{TOO_LONG}' has 16 tokens; at most 15 fit before "
                               f"the end token (max_target_length 16)"),
    ({"prefixes": ["a", "b"]}, "prefixes must be a list with one entry per text (1), got "
                               "['a', 'b']"),
    ({"constraints": ["1987"]}, "constraints must be lists of phrases, one list per text, got "
                                "'1987'"),
])
def test_bad_prefixes_and_constraints_are_refused_with_one_line(guides, message, translator):
    with pytest.raises(ValueError) as error:
        translator.translate(SOURCES[:1], Beam(2), **guides)
    assert str(error.value) == message
