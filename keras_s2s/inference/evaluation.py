"""Translation quality scores: corpus BLEU and chrF from sacreBLEU, exact match, and BLEU by
source-sentence length (Bahdanau et al., 2015, Fig. 2).

BLEU uses sacreBLEU's defaults (13a tokenisation, exponential smoothing), so a score here equals
`sacrebleu.corpus_bleu` on the same strings and can be compared with published numbers; the
signature strings record exactly how it was computed. BLEU and chrF are on sacreBLEU's 0–100
scale; exact match is a fraction in [0, 1].
"""

import json
import logging
from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF

logger = logging.getLogger(__name__)

DEFAULT_BUCKET_WIDTH = 10
REPORT_DECIMALS = 4
#: The length penalties `tune_alpha` tries (GNMT's α; 0 is plain log-probability).
DEFAULT_ALPHAS = (0.0, 0.3, 0.6, 0.9, 1.2, 1.5)


def corpus_scores(hypotheses, references):
    """Corpus BLEU, chrF and exact match of `hypotheses` against one reference each.

    Returns `{"bleu", "chrf", "exact_match", "count", "signatures": {"bleu", "chrf"}}`.
    """
    _check_parallel(hypotheses=hypotheses, references=references)
    bleu, chrf = BLEU(), CHRF()
    exact = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references))
    return {
        "bleu": bleu.corpus_score(hypotheses, [references]).score,
        "chrf": chrf.corpus_score(hypotheses, [references]).score,
        "exact_match": exact / len(hypotheses),
        "count": len(hypotheses),
        "signatures": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())},
    }


def bleu_by_length(sources, hypotheses, references, buckets=DEFAULT_BUCKET_WIDTH,
                   tokenize=str.split):
    """BLEU and chrF per bucket of source length, to see how quality falls with length.

    Args:
        sources, hypotheses, references: parallel lists of strings.
        buckets: a bucket width (int: ranges [0, w], [w+1, 2w], ...), or increasing inclusive
            upper bounds (e.g. `(10, 20, 30)`: [0, 10], [11, 20], [21, 30]); sources longer than
            the last bound form one more bucket that ends at the longest source.
        tokenize: splits a source into the units that are counted (words by default).

    Returns:
        `[{"range": [lo, hi], "count": n, "bleu": x, "chrf": y}, ...]` in length order, without
        empty buckets.
    """
    _check_parallel(sources=sources, hypotheses=hypotheses, references=references)
    lengths = [len(tokenize(source)) for source in sources]
    upper_bounds = _upper_bounds(buckets, max(lengths))
    rows = []
    lower = 0
    for upper in upper_bounds:
        members = [i for i, n in enumerate(lengths) if lower <= n <= upper]
        if members:
            scores = corpus_scores([hypotheses[i] for i in members],
                                   [references[i] for i in members])
            rows.append({"range": [lower, upper], "count": len(members),
                         "bleu": scores["bleu"], "chrf": scores["chrf"]})
        lower = upper + 1
    return rows


def evaluation_report(sources, hypotheses, references, buckets=DEFAULT_BUCKET_WIDTH,
                      tokenize=str.split):
    """Corpus scores plus the by-source-length table, as a JSON-ready dict (floats rounded)."""
    report = corpus_scores(hypotheses, references)
    report["by_source_length"] = bleu_by_length(sources, hypotheses, references,
                                                buckets=buckets, tokenize=tokenize)
    return _rounded(report)


def tune_alpha(run, width=4, alphas=DEFAULT_ALPHAS, max_pairs=500):
    """Choose beam search's length penalty α by BLEU on the run's validation split and store it
    in the run (`decoding.json`, the default α of `--beam` for this run).

    `run` is a `keras_s2s.run.Run` or its directory. The validation split is the one training
    held out (the first `max_pairs` of it), never a test set. Ties go to the smaller α.

    Returns:
        `{"alpha", "width", "pairs", "bleu_by_alpha": {alpha: BLEU}}`, as written.
    """
    from keras_s2s import run as run_files
    from keras_s2s.decoding import Beam
    from keras_s2s.data.corpus import load_validation_pairs
    from keras_s2s.inference.translator import Translator

    run = run_files.Run.of(run)
    if not alphas or any(not isinstance(a, (int, float)) or a < 0 for a in alphas):
        raise ValueError(f"alphas must be numbers >= 0, got {list(alphas)!r}")
    pairs = load_validation_pairs(run.config)
    if not isinstance(pairs, list):  # a stream's validation split
        pairs = [(s.decode(), t.decode()) for s, t in pairs.take(max_pairs).as_numpy_iterator()]
    pairs = pairs[:max_pairs]
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    translator = Translator.from_run(run)
    bleu = {}
    for alpha in sorted(set(float(a) for a in alphas)):
        texts = [t.text for t in translator.translate(sources, Beam(width, alpha))]
        bleu[alpha] = round(BLEU().corpus_score(texts, [references]).score, REPORT_DECIMALS)
        logger.info("alpha %.2f: BLEU %.2f", alpha, bleu[alpha])
    report = {"alpha": max(bleu, key=lambda alpha: (bleu[alpha], -alpha)), "width": width,
              "pairs": len(pairs), "bleu_by_alpha": {str(a): b for a, b in bleu.items()}}
    run_files.save_decoding(run.directory, report)
    run.tuned_alpha = report["alpha"]
    return report


def write_json(report, path):
    """Write `report` as UTF-8 JSON (Hangul kept readable), creating parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    logger.info("Wrote evaluation report to %s", path)
    return path


def _check_parallel(**named_lists):
    for name, values in named_lists.items():
        if isinstance(values, str):
            raise TypeError(f"{name} must be a list of strings, got a single string {values!r:.60}")
    lengths = {name: len(values) for name, values in named_lists.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"Expected one line per example in each list, but {described}")
    if not next(iter(lengths.values())):
        raise ValueError(f"Expected at least one example, got empty {', '.join(lengths)}")


def _upper_bounds(buckets, longest):
    if isinstance(buckets, int):
        if buckets < 1:
            raise ValueError(f"Bucket width must be a positive integer, got {buckets}")
        return list(range(buckets, max(longest, 1) + buckets, buckets))
    bounds = list(buckets)
    if not bounds or any(b <= a for a, b in zip(bounds, bounds[1:])) or bounds[0] < 0:
        raise ValueError(f"Bucket bounds must be non-empty, non-negative and strictly "
                         f"increasing, got {buckets!r}")
    if longest > bounds[-1]:
        bounds.append(longest)
    return bounds


def _rounded(value):
    if isinstance(value, float):
        return round(value, REPORT_DECIMALS)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value
