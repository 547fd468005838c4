"""Reading sentence pairs from tab-separated files.

A line is `source<TAB>target[<TAB>anything else]` in UTF-8; which columns hold the source and the
target is selectable, because Tatoeba/Anki files put English first. Every problem is reported
with its `file:line`: either raised at once, or skipped, counted and logged — never silently.
"""

import logging
import os
import re
import unicodedata

from keras_s2s.checks import check_choice, check_non_negative_int, check_positive_int

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
