"""CI runs the benchmarks' quick mode: every script must run and write its JSON and plots.

The figures of a quick run are not checked against goals (a fraction of an epoch of training
on a shared machine says nothing); their presence, structure and sanity are.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    results_dir = tmp_path_factory.mktemp("bench_results")
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "run_all.py"), "--quick",
         "--results-dir", str(results_dir)], capture_output=True, text=True, timeout=1800)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return results_dir


def _load(results_dir, name):
    result = json.loads((results_dir / f"{name}.json").read_text())
    assert result["mode"] == "quick"
    assert result["environment"]["tensorflow"]
    return result["figures"]


def test_decoding_speed_quick(quick_results):
    figures = _load(quick_results, "decoding_speed")
    assert figures["params_ours"] == figures["params_keras_hub"]
    for row in [*figures["by_output_length"].values(),
                *figures["ctranslate2"]["by_batch_size"].values()]:
        assert all(seconds > 0 for seconds in row["seconds"].values())


def test_training_speed_quick(quick_results):
    figures = _load(quick_results, "training_speed")
    assert 0 < figures["cpu_efficiency"]["efficiency"] < 1.5
    assert (quick_results / "tokens_per_second_vs_length.png").stat().st_size > 0


def test_attention_cost_quick(quick_results):
    figures = _load(quick_results, "attention_cost")
    times = [row["forward_ms"] for row in figures["by_length"].values()]
    assert times[-1] > times[0]  # 8x longer inputs take longer
    assert (quick_results / "attention_cost.png").stat().st_size > 0


def test_serving_quick(quick_results):
    figures = _load(quick_results, "serving")
    assert figures["rest"]


def test_claims_quick(quick_results):
    figures = _load(quick_results, "claims")
    length = figures["claim_1_context_vector_vs_length"]
    assert set(length["results"]) == {"seq2seq", "bahdanau", "luong", "transformer"}
    assert (quick_results / "accuracy_vs_length.png").stat().st_size > 0
    corpus = figures["claim_1_bleu_vs_length_kor_eng"]
    if not (SHARED_DATA / "kor-eng" / "train.tsv").exists():
        assert "skipped" in corpus
    else:
        for path in corpus["figures"]:
            assert Path(path).stat().st_size > 0
    assert figures["claim_2_attention_heat_maps"]["dates"]["heat_maps"]
