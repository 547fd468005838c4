"""The lecture notes' claims, measured (prints JSON, writes docs/results/claims.json and PNGs).

1. "The fixed-size context vector loses information as inputs grow; attention fixes it."
   Seq2Seq (no attention), Bahdanau, Luong and Transformer are trained with the same wall-clock
   budget on the length-controlled synthetic `copy` task (lengths 3-30, 20 tokens), then exact
   match (whole sequence right) and token accuracy (position-wise) are measured per source-length
   bucket on fresh examples (another seed), greedy decoding. Figure: accuracy_vs_length.png
   (cf. Bahdanau et al., 2015, Fig. 2).
2. "Attention weights are interpretable." Heat maps from a Bahdanau model trained on `dates`
   ("March 4th, 2021", "2021년 3월 4일 목요일") and from a Bahdanau model trained on the Tatoeba
   kor-eng file ("나는 학교에 간다"), skipped with a reason when the corpus is absent.

    python bench/claims.py --quick     # 0.75-1 minute per model, 7.5 minutes on 2 CPU cores
    python bench/claims.py --budget-minutes 2.5 --skip attention --tag _2.5min   # 13 minutes
    python bench/claims.py             # 5 minutes per model, about 35 minutes (not yet run)

0.75 minute is less than one epoch of `copy` on 2 shared CPU cores: every model then scores 0
exact match, so the quick mode only checks that the script works; 2.5 minutes shows the effect.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import RESULTS_DIR, count_params, write_result  # noqa: E402

from keras_s2s.config import TrainConfig  # noqa: E402
from keras_s2s.data import synthetic  # noqa: E402
from keras_s2s.plotting import plot_attention, plot_lines  # noqa: E402
from keras_s2s.training import train  # noqa: E402
from keras_s2s.translator import Translator  # noqa: E402

SHARED_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                           "data")
KOR_ENG = os.path.join(SHARED_DATA, "kor-eng", "train.tsv")

ARCHS = ("seq2seq", "bahdanau", "luong", "transformer")
TASK = "copy"
TASK_OPTIONS = {"min_length": 3, "max_length": 30, "vocab_size": 20}
BUCKETS = ((3, 5), (6, 10), (11, 15), (16, 20), (21, 25), (26, 30))
EVAL_SEED = 4242
DATE_EXAMPLES = ("March 4th, 2021", "2021년 3월 4일 목요일")
KOREAN_EXAMPLE = "나는 학교에 간다"


def _budget_config(**kwargs):
    # Many epochs and a patient early stop: the time budget, not the epoch count, ends training.
    return TrainConfig(epochs=1000, early_stopping_patience=1000, **kwargs)


def _train(config):
    started = time.monotonic()
    history = train(config, verbose=0)
    return {"train_seconds": round(time.monotonic() - started, 1),
            "epochs": len(history.get("loss", [])),
            "final_val_masked_accuracy": round(history["val_masked_accuracy"][-1], 4)
            if history.get("val_masked_accuracy") else None}


def _fresh_examples(per_length):
    """`per_length` fresh pairs of every length, from a seed training never used."""
    pairs = []
    for length in range(TASK_OPTIONS["min_length"], TASK_OPTIONS["max_length"] + 1):
        pairs += synthetic.generate(TASK, per_length, seed=EVAL_SEED + length,
                                    **{**TASK_OPTIONS, "min_length": length,
                                       "max_length": length})
    return pairs


def _token_accuracy(output, target):
    """Position-wise share of right tokens, over the longer of the two sequences."""
    output, target = output.split(), target.split()
    hits = sum(o == t for o, t in zip(output, target))
    return hits / max(len(output), len(target))


def claim_length(budget_minutes, per_length, workdir, tag=""):
    pairs = _fresh_examples(per_length)
    results = {}
    for arch in ARCHS:
        out = os.path.join(workdir, f"{TASK}-{arch}")
        max_len = TASK_OPTIONS["max_length"] + 2
        config = _budget_config(arch=arch, data=TASK, out=out, task_options=TASK_OPTIONS,
                                max_source_length=max_len, max_target_length=max_len,
                                time_budget_minutes=budget_minutes, warmup_steps=400,
                                learning_rate=2.0 if arch == "transformer" else 2e-3)
        row = _train(config)
        translator = Translator.load(out)
        row["parameters"] = count_params(translator.model)
        outputs = translator.translate([s for s, _ in pairs])
        texts = [" ".join(o.text.split()) for o in outputs]
        by_bucket = []
        for low, high in BUCKETS:
            members = [i for i, (s, _) in enumerate(pairs) if low <= len(s.split()) <= high]
            exact = sum(texts[i] == pairs[i][1] for i in members) / len(members)
            tokens = sum(_token_accuracy(texts[i], pairs[i][1]) for i in members) / len(members)
            by_bucket.append({"range": [low, high], "count": len(members),
                              "exact_match": round(exact, 4),
                              "token_accuracy": round(tokens, 4)})
        row["exact_match"] = round(sum(t == p[1] for t, p in zip(texts, pairs)) / len(pairs), 4)
        row["by_source_length"] = by_bucket
        row["examples"] = [(pairs[i][0], texts[i]) for i in (len(pairs) - 1,)]
        results[arch] = row
        print(f"[claims] {arch}: {row['exact_match']} exact, {row['epochs']} epochs", flush=True)
    centres = [(low + high) / 2 for low, high in BUCKETS]
    plot_lines({arch: (centres, [100 * b["exact_match"] for b in row["by_source_length"]])
                for arch, row in results.items()},
               RESULTS_DIR / f"accuracy_vs_length{tag}.png", xlabel="source length (tokens)",
               ylabel="exact match (%)",
               title=f"{TASK} task, {budget_minutes:g} min training each")
    plot_lines({arch: (centres, [100 * b["token_accuracy"] for b in row["by_source_length"]])
                for arch, row in results.items()},
               RESULTS_DIR / f"token_accuracy_vs_length{tag}.png", xlabel="source length (tokens)",
               ylabel="token accuracy (%)",
               title=f"{TASK} task, {budget_minutes:g} min training each")
    return {"task": TASK, "task_options": TASK_OPTIONS, "budget_minutes": budget_minutes,
            "eval_examples_per_length": per_length, "decoding": "greedy",
            "figures": [f"docs/results/accuracy_vs_length{tag}.png",
                        f"docs/results/token_accuracy_vs_length{tag}.png"],
            "results": results}


def _heat_map(translator, text, path, title):
    [output] = translator.translate([text])
    entry = {"source": text, "output": output.text, "source_tokens": output.source_tokens,
             "output_tokens": output.output_tokens}
    if output.attention is None or not output.output_tokens:
        entry["plot"] = "none: the model gave no attention weights or no output tokens"
        return entry
    plot_attention(output.attention, output.source_tokens, output.output_tokens, path,
                   title=title)
    entry["plot"] = os.path.relpath(path, RESULTS_DIR.parent.parent)
    return entry


def claim_attention(dates_minutes, kor_eng_minutes, workdir, tag=""):
    results = {}
    out = os.path.join(workdir, "dates-bahdanau")
    row = _train(_budget_config(arch="bahdanau", data="dates", out=out,
                                time_budget_minutes=dates_minutes))
    translator = Translator.load(out)
    fresh = synthetic.generate("dates", 500, seed=EVAL_SEED)
    outputs = translator.translate([s for s, _ in fresh])
    row["exact_match_500_fresh"] = round(
        sum(o.text == t for o, (_, t) in zip(outputs, fresh)) / len(fresh), 4)
    row["heat_maps"] = [
        _heat_map(translator, text, RESULTS_DIR / f"attention_dates_{i}{tag}.png",
                  f"Bahdanau, dates, {dates_minutes:g} min")
        for i, text in enumerate(DATE_EXAMPLES, start=1)]
    results["dates"] = row

    if not os.path.exists(KOR_ENG):
        results["kor-eng"] = {"skipped": f"{KOR_ENG} is absent"}
        return results
    out = os.path.join(workdir, "kor-eng-bahdanau")
    row = _train(TrainConfig(arch="bahdanau", data=KOR_ENG, out=out, epochs=200,
                             early_stopping_patience=5, time_budget_minutes=kor_eng_minutes,
                             vocab_size=4000, shared_vocab=True, max_source_length=48,
                             max_target_length=48, learning_rate=2e-3))
    translator = Translator.load(out)
    row["heat_maps"] = [_heat_map(translator, KOREAN_EXAMPLE,
                                  RESULTS_DIR / f"attention_ko_en{tag}.png",
                                  f"Bahdanau, Tatoeba kor-eng, {kor_eng_minutes:g} min")]
    results["kor-eng"] = row
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="0.75 minute per model and fewer test examples")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="training budget of each model of claim 1 (default 0.75 quick, 5)")
    parser.add_argument("--attention-minutes", type=float, default=None,
                        help="budget of the dates and kor-eng models of claim 2 "
                             "(default 0.75 and 1 quick, 3 and 5)")
    parser.add_argument("--tag", default="",
                        help="suffix of the JSON and PNG names, e.g. _5min")
    parser.add_argument("--skip", nargs="*", default=[], choices=["length", "attention"])
    args = parser.parse_args(argv)
    args.repeats = 1  # one training run per model: the budget, not repeats, bounds the time
    budget = args.budget_minutes or (0.75 if args.quick else 5.0)
    figures = {}
    with tempfile.TemporaryDirectory() as workdir:
        if "length" not in args.skip:
            figures["claim_1_context_vector_vs_length"] = claim_length(
                budget, 20 if args.quick else 50, workdir, args.tag)
        if "attention" not in args.skip:
            figures["claim_2_attention_heat_maps"] = claim_attention(
                args.attention_minutes or (0.75 if args.quick else 3.0),
                args.attention_minutes or (1.0 if args.quick else 5.0), workdir, args.tag)
    write_result("claims" + args.tag, args, figures)


if __name__ == "__main__":
    main()
