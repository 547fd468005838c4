"""`bench/quality.py` names its results file after what it ran: no run overwrites another."""

from tests.bench.quick import REPO_ROOT


def test_runs_of_different_families_with_the_same_settings_get_different_files(monkeypatch):
    # Runs of one family with the same --set must not share a file: a Luong ablation must not
    # overwrite the Transformer's.
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    import quality

    written = []  # the script's main, its training and writing replaced by this record
    monkeypatch.setattr(quality, "run_one", lambda *args: {})
    monkeypatch.setattr(quality, "write_result", lambda name, args, figures: written.append(name))
    for arch in ("transformer", "luong"):
        quality.main(["--quick", "--archs", arch, "--set", "label_smoothing=0.2"])
    quality.main(["--quick", "--set", "label_smoothing=0.2"])
    assert written == ["quality_dates_transformer_label-smoothing=0.2",
                       "quality_dates_luong_label-smoothing=0.2",
                       "quality_dates_label-smoothing=0.2"]
