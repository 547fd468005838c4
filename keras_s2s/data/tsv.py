"""Reading sentence pairs from tab-separated files: into memory, or streamed with tf.data.

A line is `source<TAB>target[<TAB>anything else]` in UTF-8; which columns hold the source and the
target is selectable, because Tatoeba/Anki files put English first. `read_tsv` reports every
problem with its `file:line`: either raised at once, or skipped, counted and logged — never
silently. `stream_tsv` reads any number of files line by line in TF ops, so memory does not grow
with the corpus.
"""

import glob
import logging
import os
import re
import unicodedata

import tensorflow as tf
import tensorflow_text as tf_text

from keras_s2s.checks import (check_choice, check_fraction, check_non_negative_int,
                              check_positive_int)

logger = logging.getLogger(__name__)

#: How many `file:line` locations the skip warning lists.
_LOCATIONS_IN_WARNING = 5

_WHITESPACE_RUN = re.compile(r"\s+")


class DataError(ValueError):
    """A data file that cannot be read as sentence pairs; the message names `file:line`."""


def normalize_text(text):
    """NFC-normalise `text`, strip it and collapse whitespace runs to one space.

    NFC makes composed and decomposed Hangul (or accents) the same string, so the tokenizer sees
    one spelling of each word.
    """
    return _WHITESPACE_RUN.sub(" ", unicodedata.normalize("NFC", text)).strip()


def tsv_files(pattern):
    """The files that `pattern` (a path or a glob such as `'corpus/*.tsv'`) names, sorted."""
    if os.path.isfile(pattern):  # a file whose name holds glob characters ("pairs[1].tsv")
        return [os.fspath(pattern)]
    paths = sorted(path for path in glob.glob(os.fspath(pattern)) if os.path.isfile(path))
    if not paths:
        raise FileNotFoundError(f"{os.fspath(pattern)!r} names no file")
    return paths


def read_tsv(path, source_column=0, target_column=1, on_error="raise", max_pairs=None):
    """Read `(source, target)` pairs from a UTF-8 tab-separated file.

    Both sides are normalised with `normalize_text`. Lines that are empty or hold only
    whitespace are ignored (trailing blank lines are common); every other line must give a
    non-empty source and target.

    Args:
        path: the file to read.
        source_column, target_column: 0-based columns of the source and the target.
        on_error: `"raise"` raises `DataError` at the first bad line; `"skip"` skips bad lines
            and logs one warning with their count and the first few `file:line` locations.
        max_pairs: stop after this many pairs (None reads the whole file).

    Returns:
        A list of `(source, target)` string tuples, in file order.

    Raises:
        DataError: a bad line with `on_error="raise"` (too few columns, an empty side, invalid
            UTF-8), or no valid pair in the file.
        ValueError: invalid arguments.
    """
    for name, column in (("source_column", source_column), ("target_column", target_column)):
        check_non_negative_int(name, column)
    if source_column == target_column:
        raise ValueError(
            f"source_column and target_column must differ, both are {source_column}."
        )
    check_choice("on_error", on_error, ("raise", "skip"))
    check_positive_int("max_pairs", max_pairs, optional=True)

    path = os.fspath(path)
    columns_needed = max(source_column, target_column) + 1
    pairs = []
    problems = []  # "file:line: what is wrong", for lines skipped
    line_number = 0
    with open(path, "rb") as file:
        for line_number, raw_line in enumerate(file, start=1):
            if max_pairs is not None and len(pairs) >= max_pairs:
                break
            problem, pair = _parse_line(raw_line, line_number, source_column, target_column,
                                        columns_needed)
            if pair is not None:
                pairs.append(pair)
            elif problem is not None:
                location = f"{path}:{line_number}: {problem}"
                if on_error == "raise":
                    raise DataError(location)
                problems.append(location)

    if problems:
        logger.warning(
            "Skipped %d bad line(s) in %s; first: %s",
            len(problems), path, "; ".join(problems[:_LOCATIONS_IN_WARNING]),
        )
    if not pairs:
        raise DataError(
            f"{path}: no valid sentence pair in {line_number} line(s) "
            f"({len(problems)} skipped as bad); expected lines 'source<TAB>target'."
        )
    return pairs


def _parse_line(raw_line, line_number, source_column, target_column, columns_needed):
    """Return `(problem, pair)`: a description of what is wrong, or the normalised pair.

    Both are None for a blank line.
    """
    try:
        line = raw_line.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"invalid UTF-8 at byte {error.start} of the line", None
    if line_number == 1:
        line = line.removeprefix("\ufeff")  # byte order mark written by some editors
    line = line.rstrip("\r\n")
    if not line.strip():
        return None, None
    fields = line.split("\t")
    if len(fields) < columns_needed:
        return (
            f"expected at least {columns_needed} tab-separated columns, got {len(fields)}",
            None,
        )
    source = normalize_text(fields[source_column])
    target = normalize_text(fields[target_column])
    for side, column, text in (("source", source_column, source),
                               ("target", target_column, target)):
        if not text:
            return f"empty {side} (column {column})", None
    return None, (source, target)


#: Hash buckets of the validation split: a fraction is kept to 1/10,000.
_SPLIT_BUCKETS = 10_000

#: Lines decoded per `map` call (batched string ops are far faster than one line at a time).
_DECODE_BATCH_SIZE = 1024

#: Files read at once, line by line and in turn (`interleave`): the first pairs of the stream
#: (the vocabulary sample) come from every file, not from the first one only.
_FILES_READ_AT_ONCE = 16

#: `normalize_text`'s whitespace (Python's `str.isspace`) in RE2, whose `\s` is ASCII only.
_WHITESPACE_RUN_RE2 = r"[\s\x{0b}\x{1c}-\x{1f}\x{85}\p{Z}]+"


def normalize_text_tf(texts):
    """`normalize_text` in TF ops, on a string tensor (valid UTF-8)."""
    texts = tf.strings.regex_replace(tf_text.normalize_utf8(texts, "NFC"), _WHITESPACE_RUN_RE2,
                                     " ")
    return tf.strings.regex_replace(texts, "^ | $", "")


def stream_tsv(pattern, source_column=0, target_column=1, on_error="raise",
               validation_fraction=None, part=None):
    """Stream `(source, target)` pairs from the files of `pattern`, line by line, as tf.data.

    The same lines as `read_tsv` give the same pairs (normalised alike; blank lines ignored),
    but nothing is read before iteration and memory does not depend on the files' size. With
    several files, up to `_FILES_READ_AT_ONCE` are read in turn, in sorted order, so the
    stream is deterministic. `tf.distribute`'s default `AUTO` policy shards it across workers by
    file, which needs at least as many files as workers (else iteration fails with "Could not
    apply FILE based sharding"; `AutoShardPolicy.DATA` then shards by line).

    Args:
        pattern: a path or a glob.
        source_column, target_column: 0-based columns of the source and the target.
        on_error: a bad line (too few columns, an empty side, invalid UTF-8) fails the
            iteration with `"raise"` (`tf.errors.InvalidArgumentError` quoting the line, as
            the stream has no line numbers), or is dropped with `"skip"`.
        validation_fraction, part: a split by a hash of the normalised pair, the same on every
            run and machine, with no pass over the data: `part="validation"` keeps the pairs
            whose hash falls in the first `validation_fraction` of the buckets, `part="train"`
            the others (identical lines always land on the same side). None keeps every pair.

    Returns:
        A `tf.data.Dataset` of scalar `tf.string` pairs `(source, target)`.
    """
    for name, column in (("source_column", source_column), ("target_column", target_column)):
        check_non_negative_int(name, column)
    check_choice("on_error", on_error, ("raise", "skip"))
    check_choice("part", part, (None, "train", "validation"))
    if (part is None) != (validation_fraction is None):
        raise ValueError(f"part and validation_fraction go together, got part={part!r} and "
                         f"validation_fraction={validation_fraction!r}")
    if part is not None:
        check_fraction("validation_fraction", validation_fraction)
    paths = tsv_files(pattern)
    columns_needed = max(source_column, target_column) + 1

    threshold = None if part is None else round(validation_fraction * _SPLIT_BUCKETS)

    def in_part(sources, targets):
        buckets = tf.strings.to_hash_bucket_fast(
            tf.strings.join([sources, targets], separator="\t"), _SPLIT_BUCKETS)
        return (buckets < threshold) if part == "validation" else (buckets >= threshold)

    def decode(lines):  # (batch,) raw lines → sources, targets, whether each line is a pair
        text = tf.strings.unicode_transcode(lines, "UTF-8", "UTF-8", errors="replace")
        valid_utf8 = tf.equal(text, lines)
        text = tf.strings.regex_replace(text, "^\ufeff|\r$", "")
        blank = tf.strings.regex_full_match(text, _WHITESPACE_RUN_RE2[:-1] + "*")
        fields = tf.strings.split(text, "\t")  # (batch, None)
        enough = fields.row_lengths() >= columns_needed
        columns = normalize_text_tf(
            fields.to_tensor(default_value="", shape=[None, columns_needed]))
        sources, targets = columns[:, source_column], columns[:, target_column]
        good = valid_utf8 & enough & tf.not_equal(sources, "") & tf.not_equal(targets, "")
        bad = tf.logical_not(good | blank)
        if part is not None:
            good &= in_part(sources, targets)
        if on_error == "raise":
            message = (f"{pattern}: a line is not 'source<TAB>target' with both sides "
                       f"non-empty (columns {source_column} and {target_column}) in UTF-8; "
                       f"skip such lines with on_error='skip' (--skip-bad-lines). The line:")
            check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)),
                                        [message, tf.boolean_mask(lines, bad)[:1]], summarize=1)
            with tf.control_dependencies([check]):
                good = tf.identity(good)
        return tf.boolean_mask(sources, good), tf.boolean_mask(targets, good)

    return (
        tf.data.Dataset.from_tensor_slices(paths)
        .interleave(tf.data.TextLineDataset, cycle_length=min(len(paths), _FILES_READ_AT_ONCE),
                    block_length=1)
        .batch(_DECODE_BATCH_SIZE)
        .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .unbatch()
    )
