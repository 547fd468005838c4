"""`bench/quality.py --table`: one Markdown table of recorded corpus runs, as RESULTS.md shows."""

import subprocess
import sys

from tests.bench.quick import REPO_ROOT

RECORDED = REPO_ROOT / "docs" / "results" / (
    "quality_kor-eng_word-dropout=0.1_decay=linear_average-last=5.json")


def test_the_table_of_a_recorded_run_gives_each_family_its_row():
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "quality.py"), "--table", str(RECORDED)],
        capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [line for line in completed.stdout.splitlines() if line.startswith("|")]
    assert rows[0] == ("| corpus | family | epochs | training s | load before → after | "
                       "greedy BLEU / chrF | beam 4 BLEU / chrF | from |")
    source = RECORDED.name
    assert rows[2:] == [
        f"| kor-eng | transformer | 35 | 849 | 1.6 → 2.3 | 12.0 / 27.3 | 14.4 / 28.9 (α 0.6) "
        f"| {source} |",
        f"| kor-eng | bahdanau | 38 | 926 | 2.0 → 1.4 | 9.0 / 22.3 | 10.4 / 23.3 (α 0.3) "
        f"| {source} |",
    ]
