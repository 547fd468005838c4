import collections
import datetime
import re

import pytest

from keras_s2s.data import synthetic
from keras_s2s.data.synthetic import DATE_CASES, DATE_FORMATS, TASKS, format_date, generate

THURSDAY = datetime.date(2021, 3, 4)

EXPECTED_RENDERINGS = {
    "month_day_year": "March 4, 2021",
    "weekday_month_day_year": "Thursday, March 4, 2021",
    "day_month_year": "4 March 2021",
    "weekday_day_month_year": "Thursday, 4 March 2021",
    "mon_day_year": "Mar 4, 2021",
    "day_mon_year": "4 Mar 2021",
    "wkd_mon_day_year": "Thu, Mar 4, 2021",
    "wkd_dd_mon_yyyy": "Thu, 04 Mar 2021",
    "month_ordinal_year": "March 4th, 2021",
    "ordinal_of_month_year": "4th of March 2021",
    "dd_mon_yyyy_dashes": "04-Mar-2021",
    "dd_mm_yyyy_dots": "04.03.2021",
    "mm_dd_yyyy_slashes": "03/04/2021",
    "yyyy_mm_dd_slashes": "2021/03/04",
    "korean": "2021년 3월 4일",
    "korean_weekday": "2021년 3월 4일 목요일",
}

# strptime formats that read each format back (ordinal suffixes removed first).
PARSE_FORMATS = {
    "month_day_year": "%B %d, %Y",
    "weekday_month_day_year": "%A, %B %d, %Y",
    "day_month_year": "%d %B %Y",
    "weekday_day_month_year": "%A, %d %B %Y",
    "mon_day_year": "%b %d, %Y",
    "day_mon_year": "%d %b %Y",
    "wkd_mon_day_year": "%a, %b %d, %Y",
    "wkd_dd_mon_yyyy": "%a, %d %b %Y",
    "month_ordinal_year": "%B %d, %Y",
    "ordinal_of_month_year": "%d of %B %Y",
    "dd_mon_yyyy_dashes": "%d-%b-%Y",
    "dd_mm_yyyy_dots": "%d.%m.%Y",
    "mm_dd_yyyy_slashes": "%m/%d/%Y",
    "yyyy_mm_dd_slashes": "%Y/%m/%d",
}
KOREAN_WEEKDAYS = ["월요일", "화요일", "수요일", "목요일", "금요일", "토요일", "일요일"]
ENGLISH_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def parse_source(source, format_name):
    """Read a rendered date back, independently of the generator's code."""
    if format_name.startswith("korean"):
        match = re.fullmatch(r"(\d{4})년 (\d{1,2})월 (\d{1,2})일(?: (\S+요일))?", source)
        assert match, source
        date = datetime.date(*map(int, match.groups()[:3]))
        if format_name == "korean_weekday":
            assert match.group(4) == KOREAN_WEEKDAYS[date.weekday()], source
        return date
    text = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", source, flags=re.IGNORECASE)
    date = datetime.datetime.strptime(text, PARSE_FORMATS[format_name]).date()
    if "weekday" in format_name or format_name.startswith("wkd"):
        weekday = source.split(",")[0].lower()
        assert ENGLISH_WEEKDAYS[date.weekday()].startswith(weekday), source  # strptime ignores it
    return date


def test_every_format_has_a_parser_and_a_known_rendering():
    assert set(DATE_FORMATS) == set(EXPECTED_RENDERINGS)
    assert set(DATE_FORMATS) - {"korean", "korean_weekday"} == set(PARSE_FORMATS)
    for format_name, expected in EXPECTED_RENDERINGS.items():
        assert format_date(THURSDAY, format_name) == expected


@pytest.mark.parametrize("format_name", DATE_FORMATS)
def test_dates_targets_are_the_rendered_date(format_name):
    pairs = generate("dates", 200, seed=3, formats=[format_name])
    for source, target in pairs:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", target)
        assert parse_source(source, format_name) == datetime.date.fromisoformat(target)


def test_dates_cover_formats_cases_and_year_range():
    pairs = generate("dates", 3000, seed=0)
    sources = [source for source, _ in pairs]
    years = [int(target[:4]) for _, target in pairs]
    assert 1950 <= min(years) and max(years) <= 2049
    assert any("년" in source for source in sources)
    assert any("요일" in source for source in sources)
    assert any(source.isupper() and "MARCH" in source for source in sources)
    assert any(source.islower() and "march" in source for source in sources)
    assert any("4th" in source or "1st" in source for source in sources)
    assert len(set(sources)) > 2900


def test_case_only_changes_letters():
    assert format_date(THURSDAY, "wkd_dd_mon_yyyy", "upper") == "THU, 04 MAR 2021"
    assert format_date(THURSDAY, "month_ordinal_year", "lower") == "march 4th, 2021"
    for case in DATE_CASES:
        assert format_date(THURSDAY, "korean_weekday", case) == "2021년 3월 4일 목요일"
        assert format_date(THURSDAY, "dd_mm_yyyy_dots", case) == "04.03.2021"


def test_date_options():
    pairs = generate("dates", 50, seed=1, formats=["korean"], min_year=2000, max_year=2000)
    assert all(target.startswith("2000-") for _, target in pairs)
    assert all(source.startswith("2000년") for source, _ in pairs)
    upper = generate("dates", 50, seed=1, formats=["mon_day_year"], cases=["upper"])
    assert all(source == source.upper() for source, _ in upper)


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_pairs(task):
    assert generate(task, 100, seed=7) == generate(task, 100, seed=7)
    assert generate(task, 100, seed=7) != generate(task, 100, seed=8)


@pytest.mark.parametrize("task", ["reverse", "copy"])
@pytest.mark.parametrize("vocab_size", [5, 26, 100])
def test_sequence_tasks(task, vocab_size):
    pairs = generate(task, 300, seed=0, min_length=40, max_length=50, vocab_size=vocab_size)
    alphabet = collections.Counter()
    for source, target in pairs:
        tokens = source.split(" ")
        assert 40 <= len(tokens) <= 50
        expected = tokens[::-1] if task == "reverse" else tokens
        assert target.split(" ") == expected
        alphabet.update(tokens)
    assert len(alphabet) == vocab_size
    assert len({len(token) for token in alphabet}) == 1  # all one letter or all two letters


def test_sequence_lengths_cover_the_range():
    lengths = {len(source.split()) for source, _ in generate("copy", 500, seed=0,
                                                              min_length=1, max_length=5)}
    assert lengths == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("call, match", [
    (lambda: generate("addition", 10), "Unknown task 'addition'"),
    (lambda: generate("dates", 0), "num_pairs"),
    (lambda: generate("dates", 10, max_length=5), r"Unknown option\(s\) \['max_length'\]"),
    (lambda: generate("dates", 10, formats=["iso"]), "formats"),
    (lambda: generate("dates", 10, formats="korean"), "formats"),
    (lambda: generate("dates", 10, cases=["title"]), "cases"),
    (lambda: generate("dates", 10, min_year=2000, max_year=1999), "max_year"),
    (lambda: generate("reverse", 10, min_length=0), "min_length"),
    (lambda: generate("reverse", 10, min_length=5, max_length=4), "max_length"),
    (lambda: generate("copy", 10, vocab_size=synthetic.MAX_SEQUENCE_VOCAB_SIZE + 1),
     "vocab_size"),
    (lambda: format_date(THURSDAY, "iso"), "Unknown date format"),
    (lambda: format_date(THURSDAY, "korean", "title"), "Unknown case"),
])
def test_invalid_requests_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
