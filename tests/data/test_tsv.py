import logging
import pathlib
import re
import unicodedata

import pytest

from keras_s2s.data.tsv import DataError, normalize_text, read_tsv

KOR_ENG = pathlib.Path(__file__).parents[3] / "shared" / "data" / "kor-eng" / "train.tsv"


def write(tmp_path, content, name="pairs.tsv"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_reads_pairs_normalised_and_ignores_extra_columns(tmp_path):
    decomposed = unicodedata.normalize("NFD", "안녕")
    path = write(tmp_path, f"  Hello   world \t{decomposed}\tCC-BY attribution\nGo.\tGa.\n")
    assert read_tsv(path) == [("Hello world", "안녕"), ("Go.", "Ga.")]


def test_selects_columns(tmp_path):
    path = write(tmp_path, "Hurry up.\t서둘러.\tattribution\n")
    assert read_tsv(path, source_column=1, target_column=0) == [("서둘러.", "Hurry up.")]
    assert read_tsv(path, source_column=2, target_column=0) == [("attribution", "Hurry up.")]


def test_ignores_blank_lines_byte_order_mark_and_crlf(tmp_path):
    path = write(tmp_path, "\ufeffa\tb\r\n\n   \nc\td\r\n\n")
    assert read_tsv(path) == [("a", "b"), ("c", "d")]


@pytest.mark.parametrize("content, line, problem", [
    ("a\tb\nno tab here\nc\td\n", 2, "expected at least 2 tab-separated columns, got 1"),
    ("a\tb\nc\t  \n", 2, "empty target (column 1)"),
    ("a\tb\n\tc\n", 2, "empty source (column 0)"),
    (b"a\tb\nc\t\xff\xfe\n", 2, "invalid UTF-8"),
])
def test_raise_names_file_line_and_problem(tmp_path, content, line, problem):
    path = write(tmp_path, content)
    with pytest.raises(DataError, match=re.escape(problem)) as error:
        read_tsv(path)
    assert str(error.value).startswith(f"{path}:{line}: ")
    assert isinstance(error.value, ValueError)


def test_column_beyond_the_line_is_reported(tmp_path):
    path = write(tmp_path, "a\tb\n")
    with pytest.raises(DataError, match=r":1: expected at least 3 tab-separated columns, got 2"):
        read_tsv(path, target_column=2)


def test_skip_counts_and_logs_locations(tmp_path, caplog):
    path = write(tmp_path, b"a\tb\nbad\nc\t\xff\n\td\ne\tf\n")
    with caplog.at_level(logging.WARNING, logger="keras_s2s.data.tsv"):
        pairs = read_tsv(path, on_error="skip")
    assert pairs == [("a", "b"), ("e", "f")]
    [record] = caplog.records
    message = record.getMessage()
    assert "Skipped 3 bad line(s)" in message
    for line in (2, 3, 4):
        assert f"{path}:{line}:" in message


def test_max_pairs_stops_early(tmp_path):
    path = write(tmp_path, "".join(f"s{i}\tt{i}\n" for i in range(10)) + "broken\n")
    assert read_tsv(path, max_pairs=3) == [("s0", "t0"), ("s1", "t1"), ("s2", "t2")]


@pytest.mark.parametrize("content, on_error", [("", "raise"), ("\n\n", "raise"),
                                               ("bad\nworse\n", "skip")])
def test_no_valid_pair_is_an_error(tmp_path, content, on_error):
    path = write(tmp_path, content)
    with pytest.raises(DataError, match="no valid sentence pair"):
        read_tsv(path, on_error=on_error)


@pytest.mark.parametrize("kwargs, match", [
    ({"on_error": "ignore"}, "on_error"),
    ({"source_column": 1, "target_column": 1}, "must differ"),
    ({"source_column": -1}, "source_column"),
    ({"max_pairs": 0}, "max_pairs"),
])
def test_invalid_arguments(tmp_path, kwargs, match):
    path = write(tmp_path, "a\tb\n")
    with pytest.raises(ValueError, match=match):
        read_tsv(path, **kwargs)


def test_normalize_text():
    assert normalize_text(" a \u00a0 b\n") == "a b"
    assert normalize_text(unicodedata.normalize("NFD", "한국어")) == "한국어"


def test_reads_the_kor_eng_corpus():
    if not KOR_ENG.exists():
        pytest.skip(f"shared corpus not found at {KOR_ENG}")
    pairs = read_tsv(KOR_ENG)
    assert len(pairs) == 4576
    assert pairs[0] == ("가.", "Go.")


# Streaming: the same pairs as read_tsv (the reference), read line by line with tf.data.


def streamed(pattern, **options):
    from keras_s2s.data.tsv import stream_tsv
    return [(source.decode(), target.decode())
            for source, target in stream_tsv(pattern, **options).as_numpy_iterator()]


def test_stream_gives_read_tsvs_pairs(tmp_path):
    decomposed = unicodedata.normalize("NFD", "안녕")
    path = write(tmp_path, f"\ufeff  Hello \x0b world\u3000\t{decomposed}\u00a0\tx\r\n\n  \n"
                           f"Go.\tGa.\nb\ta\n")
    assert streamed(path) == read_tsv(path) == [("Hello world", "안녕"), ("Go.", "Ga."),
                                               ("b", "a")]
    assert streamed(path, source_column=1, target_column=0) == [
        (target, source) for source, target in read_tsv(path)]


def test_stream_skips_or_raises_on_bad_lines(tmp_path):
    import tensorflow as tf
    path = write(tmp_path, b"a\tb\nbad\nc\t\xff\n\td\ne\tf\n")
    assert streamed(path, on_error="skip") == read_tsv(path, on_error="skip")
    with pytest.raises(tf.errors.InvalidArgumentError, match="The line:.*bad"):
        streamed(path)


def test_a_glob_streams_every_file(tmp_path):
    write(tmp_path, "a\t1\nb\t2\n", "one.tsv")
    write(tmp_path, "c\t3\n", "two.tsv")
    write(tmp_path, "not\tread\n", "other.txt")
    assert sorted(streamed(tmp_path / "*.tsv")) == [("a", "1"), ("b", "2"), ("c", "3")]
    with pytest.raises(FileNotFoundError, match="names no file"):
        streamed(tmp_path / "*.csv")


def test_hash_split_is_deterministic_disjoint_and_complete(tmp_path):
    lines = [f"source {i}\ttarget {i}\n" for i in range(1000)]
    path = write(tmp_path, "".join(lines))
    validation = streamed(path, validation_fraction=0.1, part="validation")
    train = streamed(path, validation_fraction=0.1, part="train")
    assert streamed(path, validation_fraction=0.1, part="validation") == validation
    assert not set(train) & set(validation)
    assert sorted(train + validation) == sorted(read_tsv(path))
    assert 60 < len(validation) < 140  # about 10 %
    shuffled = write(tmp_path, "".join(reversed(lines)), "reversed.tsv")  # order-independent
    assert sorted(streamed(shuffled, validation_fraction=0.1, part="validation")) == sorted(
        validation)
