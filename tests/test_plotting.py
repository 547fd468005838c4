import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib import font_manager
from matplotlib.image import imread

from keras_s2s import plotting
from keras_s2s.plotting import find_hangul_font, plot_attention, plot_history, plot_lines

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NANUM_INSTALLED = any(Path("/usr/share/fonts/truetype/nanum").glob("NanumGothic*.ttf"))
KOREAN_SOURCE = ["나는", "학교", "##에", "간다", "."]
ENGLISH_OUTPUT = ["I", "go", "to", "school", "."]
HISTORY = {"loss": [2.0, 1.5, 1.2], "val_loss": [2.1, 1.7, 1.6],
           "masked_accuracy": [0.3, 0.5, 0.6], "val_masked_accuracy": [0.3, 0.45, 0.5],
           "learning_rate": [1e-4, 2e-4, 3e-4]}


def assert_valid_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width = imread(path).shape[:2]
    assert height > 0 and width > 0


def glyph_warnings(recorded):
    return [w for w in recorded if "missing from font" in str(w.message)]


def diagonal_weights(size):
    return np.full((size, size), 0.1 / (size - 1)) + np.eye(size) * (0.9 - 0.1 / (size - 1))


def test_attention_plot_writes_png_into_new_directory(tmp_path):
    path = plot_attention(diagonal_weights(5), KOREAN_SOURCE, ENGLISH_OUTPUT,
                          tmp_path / "plots" / "attention.png", title="나는 학교에 간다 .")
    assert path == tmp_path / "plots" / "attention.png"
    assert_valid_png(path)


def test_attention_shape_mismatch_names_both_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"\(2, 3\).*got \(3, 2\)"):
        plot_attention(np.zeros((3, 2)), ["a", "b", "c"], ["x", "y"], tmp_path / "a.png")
    with pytest.raises(ValueError, match="got \\(0, 0\\)"):
        plot_attention(np.zeros((0, 0)), [], [], tmp_path / "a.png")


@pytest.mark.skipif(not NANUM_INSTALLED, reason="fonts-nanum is not installed")
def test_hangul_font_is_found_and_renders_without_missing_glyphs(tmp_path, recwarn):
    assert find_hangul_font() == "NanumGothic"
    plot_attention(diagonal_weights(5), KOREAN_SOURCE, ENGLISH_OUTPUT, tmp_path / "a.png")
    assert not glyph_warnings(recwarn)


def test_placeholder_and_latin_fonts_do_not_count_as_hangul(monkeypatch):
    """matplotlib's bundled Last Resort font maps every syllable to one placeholder box.

    The fonts are read from matplotlib's own data directory, not its font cache, whose contents
    depend on the machine (a cache built elsewhere may lack Last Resort)."""
    bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    paths = [bundled / "LastResortHE-Regular.ttf", bundled / "DejaVuSans.ttf"]
    if not paths[0].exists():
        pytest.skip(f"this matplotlib ({matplotlib.__version__}) bundles no Last Resort font")
    entries = [font_manager.FontEntry(fname=str(path)) for path in paths]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", entries)
    monkeypatch.setattr(font_manager, "findSystemFonts", lambda: [])
    assert find_hangul_font.__wrapped__() is None


def test_without_hangul_font_plot_is_written_with_one_warning(tmp_path, monkeypatch, caplog,
                                                             recwarn):
    monkeypatch.setattr(plotting, "find_hangul_font", lambda: None)
    plotting._warn_no_hangul_font.cache_clear()
    for name in ("first.png", "second.png"):
        assert_valid_png(plot_attention(diagonal_weights(5), KOREAN_SOURCE, ENGLISH_OUTPUT,
                                        tmp_path / name))
    font_warnings = [r for r in caplog.records if "Hangul" in r.getMessage()]
    assert len(font_warnings) == 1
    assert not glyph_warnings(recwarn)
    plotting._warn_no_hangul_font.cache_clear()


def test_history_plot_from_json_round_trip(tmp_path):
    history = json.loads(json.dumps(HISTORY))
    assert_valid_png(plot_history(history, tmp_path / "history.png"))


def test_history_rejects_empty_and_non_list_values(tmp_path):
    with pytest.raises(ValueError, match="history is empty"):
        plot_history({}, tmp_path / "h.png")
    with pytest.raises(ValueError, match="history\\['loss'\\]"):
        plot_history({"loss": 1.0}, tmp_path / "h.png")


def test_lines_plot_writes_png(tmp_path):
    series = {"rnn": ([10, 20, 30], [20.0, 14.0, 8.0]),
              "attention": ([10, 20, 30], [24.0, 22.0, 21.0])}
    path = plot_lines(series, tmp_path / "bleu.png", "source length", "BLEU", "BLEU by length")
    assert_valid_png(path)


def test_lines_mismatch_names_the_series(tmp_path):
    with pytest.raises(ValueError, match="'rnn'.*2 x and 3 y"):
        plot_lines({"rnn": ([1, 2], [1, 2, 3])}, tmp_path / "l.png", "x", "y")
