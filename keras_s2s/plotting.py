"""Figures written to files: attention heat maps, training curves and benchmark lines.

Figures are drawn on matplotlib's Agg canvas without pyplot, so no display is needed and the
global backend of the caller (a notebook, say) is left alone.

Hangul labels need a font with Hangul glyphs (e.g. NanumGothic from Debian's `fonts-nanum`):
`find_hangul_font` looks for one among the installed fonts and it becomes the fallback after
the default sans-serif font, so Latin text looks as usual. Without one, plots are still written
(Hangul shows as boxes) after a single logged warning.
"""

import contextlib
import functools
import logging
import re
import warnings
from pathlib import Path

import matplotlib
import numpy as np
from fontTools.ttLib import TTFont
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

logger = logging.getLogger(__name__)

DPI = 150
# Hangul Jamo, compatibility Jamo and syllables.
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")
_HANGUL_SAMPLE = "가나한글"
# Checked first, in this order; any other font with Hangul glyphs also qualifies.
_PREFERRED_HANGUL_FONTS = ("nanumgothic", "notosanscjk", "notosanskr", "malgungothic",
                           "applesdgothicneo", "undotum")


def plot_attention(weights, source_tokens, output_tokens, path, title=None):
    """Heat map of attention weights: source tokens on x (top, as in Bahdanau et al., 2015),
    output tokens on y, one row per output step.

    Args:
        weights: array `(len(output_tokens), len(source_tokens))`, each row the attention
            distribution of one output step (values in [0, 1]).
        source_tokens, output_tokens: token strings labelling the columns and rows.
        path: file to write (PNG); parent directories are created.
        title: optional figure title.

    Returns:
        The `Path` written.
    """
    weights = np.asarray(weights, dtype=float)
    expected = (len(output_tokens), len(source_tokens))
    if weights.shape != expected or weights.size == 0:
        raise ValueError(
            f"Attention weights must have shape (len(output_tokens), len(source_tokens)) = "
            f"{expected} with both non-zero, got {weights.shape}")
    labels = [*source_tokens, *output_tokens, title or ""]
    with _fonts_for(labels):
        figure = _new_figure(figsize=(max(4.0, 0.6 * expected[1] + 2.0),
                                      max(3.0, 0.45 * expected[0] + 1.5)))
        axes = figure.add_subplot()
        image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        axes.xaxis.tick_top()
        axes.xaxis.set_label_position("top")
        axes.set_xticks(range(expected[1]), source_tokens, rotation=45, ha="left",
                        rotation_mode="anchor")
        axes.set_yticks(range(expected[0]), output_tokens)
        axes.set_xlabel("source")
        axes.set_ylabel("output")
        figure.colorbar(image, ax=axes, label="attention weight")
        if title:
            figure.suptitle(title)
        return _save(figure, path)


def plot_history(history, path):
    """Training curves by epoch: losses on one axes, other metrics (accuracy, ...) on another,
    and the learning rate on a third when it was logged.

    Args:
        history: `{metric name: [value per epoch]}`, e.g. Keras `History.history` or the same
            dict loaded from JSON. `val_` curves are dashed.
        path: file to write (PNG); parent directories are created.

    Returns:
        The `Path` written.
    """
    if not history:
        raise ValueError("history is empty: expected {metric name: [value per epoch], ...}")
    panels = {}
    for name, values in history.items():
        if isinstance(values, (str, bytes)) or np.ndim(values) != 1 or not len(values):
            raise ValueError(f"history[{name!r}] must be a non-empty list of per-epoch values, "
                             f"got {values!r:.60}")
        panels.setdefault(_panel_of(name), []).append(name)
    with _fonts_for(history):
        figure = _new_figure(figsize=(5.0 * len(panels), 4.0))
        for index, (panel, names) in enumerate(panels.items(), start=1):
            axes = figure.add_subplot(1, len(panels), index)
            for name in names:
                epochs = range(1, len(history[name]) + 1)
                axes.plot(epochs, history[name], marker=".", label=name,
                          linestyle="--" if name.startswith("val_") else "-")
            axes.set_title(panel)
            axes.set_xlabel("epoch")
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.grid(alpha=0.3)
            axes.legend()
        return _save(figure, path)


def plot_lines(series, path, xlabel, ylabel, title=None):
    """One line per series, e.g. BLEU against sentence length with one line per architecture.

    Args:
        series: `{label: (x values, y values)}`.
        path: file to write (PNG); parent directories are created.
        xlabel, ylabel, title: axis labels and optional title.

    Returns:
        The `Path` written.
    """
    if not series:
        raise ValueError("series is empty: expected {label: (x values, y values), ...}")
    for label, (xs, ys) in series.items():
        if len(xs) != len(ys) or not len(xs):
            raise ValueError(f"Series {label!r} needs as many x as y values, at least one, "
                             f"got {len(xs)} x and {len(ys)} y values")
    with _fonts_for([*series, xlabel, ylabel, title or ""]):
        figure = _new_figure(figsize=(6.0, 4.0))
        axes = figure.add_subplot()
        for label, (xs, ys) in series.items():
            axes.plot(xs, ys, marker="o", label=label)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        if title:
            axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend()
        return _save(figure, path)


@functools.cache
def find_hangul_font():
    """Family name of an installed font with Hangul glyphs, or None when there is none.

    Reads each font's character map with fontTools and asks for distinct glyphs for a few
    syllables, because matplotlib's own "Last Resort" font maps every syllable to one
    placeholder box. System fonts installed after matplotlib built its font cache are found
    too, and registered with matplotlib.
    """
    registered = {entry.fname for entry in font_manager.fontManager.ttflist}
    for font_path in sorted(registered | set(font_manager.findSystemFonts()),
                            key=_hangul_font_preference):
        if _has_hangul_glyphs(font_path):
            if font_path not in registered:
                font_manager.fontManager.addfont(font_path)
            family = font_manager.FontProperties(fname=font_path).get_name()
            logger.debug("Using font %r (%s) for Hangul", family, font_path)
            return family
    return None


@contextlib.contextmanager
def _fonts_for(texts):
    """Make Hangul in `texts` render: add a Hangul font as fallback, or, lacking one, warn once
    and silence matplotlib's per-glyph warnings."""
    if not any(_HANGUL.search(str(text)) for text in texts):
        yield
        return
    family = find_hangul_font()
    if family is not None:
        with matplotlib.rc_context({"font.family": ["sans-serif", family]}):
            yield
        return
    _warn_no_hangul_font()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        yield


@functools.cache
def _warn_no_hangul_font():
    logger.warning("No installed font has Hangul glyphs, so Hangul labels will show as boxes; "
                   "install one, e.g. `apt-get install fonts-nanum`.")


def _hangul_font_preference(font_path):
    stem = Path(font_path).stem.lower().replace("-", "").replace("_", "")
    rank = next((rank for rank, name in enumerate(_PREFERRED_HANGUL_FONTS) if name in stem),
                len(_PREFERRED_HANGUL_FONTS))
    return rank, len(stem), font_path  # the shortest name is usually the regular weight


def _has_hangul_glyphs(font_path):
    try:
        with TTFont(font_path, fontNumber=0, lazy=True) as font:
            character_map = font.getBestCmap() or {}
    except Exception as error:  # a broken system font must not stop plotting; skip it
        logger.debug("Skipping unreadable font %s: %s", font_path, error)
        return False
    glyphs = [character_map.get(ord(syllable)) for syllable in _HANGUL_SAMPLE]
    return None not in glyphs and len(set(glyphs)) == len(glyphs)


def _panel_of(metric_name):
    name = metric_name.removeprefix("val_")
    if "loss" in name:
        return "loss"
    if name in ("lr", "learning_rate"):
        return "learning rate"
    return "metrics"


def _new_figure(figsize):
    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    logger.info("Wrote %s", path)
    return path
