"""One style across the package, its tests and benchmarks (serving/ included): 100 columns."""

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = sorted(path for folder in ("keras_s2s", "bench", "tests", "serving", "export", "docs")
                 for path in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_lines_fit_in_100_columns(path):
    long_lines = [number for number, line in enumerate(
        path.read_text(encoding="utf-8").splitlines(), 1) if len(line) > 100]
    assert not long_lines, f"{path.relative_to(ROOT)}: lines over 100 columns: {long_lines}"
