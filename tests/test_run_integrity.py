"""A run whose files do not belong together is refused in one line, through `keras-s2s
translate`, never translated silently wrong."""

import shutil

import pytest

from keras_s2s.cli import main
from keras_s2s.run import DIGESTS, vocabulary_path


@pytest.fixture
def copied_run(dates_transformer, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(dates_transformer, copy)
    return copy


def translate_error(run, capsys):
    capsys.readouterr()
    code = main(["translate", str(run), "March 4th, 2021"])
    err = capsys.readouterr().err.strip()
    return code, err


def test_the_intact_run_translates(copied_run, capsys):
    assert translate_error(copied_run, capsys) == (0, "")


def rewrite_vocabulary(run, side, change):
    """Replace the lines of `run`'s `side` vocabulary by `change(lines)`."""
    vocabulary = vocabulary_path(str(run), side)
    with open(vocabulary, encoding="utf-8") as file:
        lines = file.readlines()
    with open(vocabulary, "w", encoding="utf-8") as file:
        file.writelines(change(lines))


def swapped(lines, first, second):
    lines[first], lines[second] = lines[second], lines[first]
    return lines


def test_a_truncated_vocabulary_is_refused(copied_run, capsys):
    rewrite_vocabulary(copied_run, "source", lambda lines: lines[:-5])
    code, err = translate_error(copied_run, capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "source_vocab.txt is not the file this run was trained with" in err


def test_a_vocabulary_of_the_same_size_but_another_order_is_refused(copied_run, capsys):
    rewrite_vocabulary(copied_run, "target", lambda lines: swapped(lines, 10, 11))
    code, err = translate_error(copied_run, capsys)
    assert code == 2 and "target_vocab.txt is not the file this run was trained with" in err


def test_a_run_without_digests_still_checks_the_vocabulary_sizes(copied_run, capsys):
    (copied_run / DIGESTS).unlink()
    rewrite_vocabulary(copied_run, "source", lambda lines: lines[:-5])
    code, err = translate_error(copied_run, capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "the source vocabulary has" in err and "the model was trained with" in err
