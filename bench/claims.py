"""The lecture notes' claims, measured (prints JSON, writes docs/results/claims.json and PNGs).

1. "The fixed-size context vector loses information as inputs grow; attention fixes it."
   Seq2Seq (no attention), Bahdanau, Luong and Transformer are trained with the same wall-clock
   budget on the length-controlled synthetic `copy` task (lengths 3-30, 20 tokens), then exact
   match (whole sequence right) and token accuracy (position-wise) are measured per source-length
   bucket on fresh examples (another seed), greedy decoding. Figure: accuracy_vs_length.png
   (cf. Bahdanau et al., 2015, Fig. 2).
   The same on real text ("corpus" part): the four architectures trained for equal budgets on
   the Tatoeba kor-eng file (recipe of `corpora.py`), then BLEU by source length (Korean
   words) on the validation split carved from it and on the long news sentences of NTREX-128
   (`../shared/data/ntrex128-kor-eng/dev.tsv`), greedy decoding. Figures:
   bleu_vs_length_kor-eng.png, bleu_vs_length_ntrex128.png. Skipped, with a reason, when the
   corpora are absent.
2. "Attention weights are interpretable." Heat maps from a Bahdanau model trained on `dates`
   ("March 4th, 2021", "2021년 3월 4일 목요일"), and, in the corpus part, from each attention
   model trained on kor-eng ("나는 학교에 간다.").

    python bench/claims.py --quick     # 0.05 minute per model, about 2 minutes
    python bench/claims.py --budget-minutes 2.5 --skip attention --tag _2.5min   # 13 minutes
    python bench/claims.py --skip length attention --corpus-minutes 6   # corpus part only
    python bench/claims.py             # 5 + 6 minutes per model, about 60 minutes

The quick mode's budgets are a fraction of an epoch: every model then scores about 0, so the
quick mode only checks that the script works (CI runs it); 2.5 minutes shows the effect.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import RESULTS_DIR, count_params, shown, write_result  # noqa: E402
from corpora import CORPORA, NTREX_KOR_ENG, corpus_config, missing  # noqa: E402

from keras_s2s import architectures  # noqa: E402
from keras_s2s.training.config import TrainConfig  # noqa: E402
from keras_s2s.data import read_tsv, synthetic  # noqa: E402
from keras_s2s.inference.evaluation import evaluation_report  # noqa: E402
from keras_s2s.plotting import plot_attention, plot_lines  # noqa: E402
from keras_s2s.data.corpus import load_validation_pairs
from keras_s2s.training.loop import train  # noqa: E402
from keras_s2s.inference.translator import Translator  # noqa: E402

ARCHS = ("seq2seq", "bahdanau", "luong", "transformer")
TASK = "copy"
TASK_OPTIONS = {"min_length": 3, "max_length": 30, "vocab_size": 20}
BUCKETS = ((3, 5), (6, 10), (11, 15), (16, 20), (21, 25), (26, 30))
EVAL_SEED = 4242
DATE_EXAMPLES = ("March 4th, 2021", "2021년 3월 4일 목요일")
KOREAN_EXAMPLE = "나는 학교에 간다."
#: Upper bounds of the source-length buckets of the corpus part, in Korean words (eojeol).
CORPUS_BUCKETS = (3, 5, 8, 12, 20, 30)
#: Korean sources and English targets of news sentences are long: room for them in decoding.
CORPUS_MAX_LENGTH = 160


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


def claim_length(budget_minutes, per_length, workdir, tag="", num_pairs=20000):
    pairs = _fresh_examples(per_length)
    results = {}
    for arch in ARCHS:
        out = os.path.join(workdir, f"{TASK}-{arch}")
        max_len = TASK_OPTIONS["max_length"] + 2
        config = _budget_config(arch=arch, data=TASK, out=out, task_options=TASK_OPTIONS,
                                num_pairs=num_pairs,
                                max_source_length=max_len, max_target_length=max_len,
                                time_budget_minutes=budget_minutes, warmup_steps=400,
                                learning_rate=2 * architectures.get(arch).learning_rate)
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
            "figures": [shown(RESULTS_DIR / f"accuracy_vs_length{tag}.png"),
                        shown(RESULTS_DIR / f"token_accuracy_vs_length{tag}.png")],
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
    entry["attention"] = [[round(float(w), 3) for w in row] for row in output.attention]
    entry["plot"] = shown(path)
    return entry


def claim_attention(dates_minutes, workdir, tag="", num_pairs=20000, num_fresh=500):
    results = {}
    out = os.path.join(workdir, "dates-bahdanau")
    row = _train(_budget_config(arch="bahdanau", data="dates", out=out, num_pairs=num_pairs,
                                time_budget_minutes=dates_minutes))
    translator = Translator.load(out)
    fresh = synthetic.generate("dates", num_fresh, seed=EVAL_SEED)
    outputs = translator.translate([s for s, _ in fresh])
    row[f"exact_match_{num_fresh}_fresh"] = round(
        sum(o.text == t for o, (_, t) in zip(outputs, fresh)) / len(fresh), 4)
    row["heat_maps"] = [
        _heat_map(translator, text, RESULTS_DIR / f"attention_dates_{i}{tag}.png",
                  f"Bahdanau, dates, {dates_minutes:g} min")
        for i, text in enumerate(DATE_EXAMPLES, start=1)]
    results["dates"] = row
    return results


def claim_length_corpus(budget_minutes, workdir, ntrex_limit=None, tag="", archs=ARCHS):
    """BLEU by source length on kor-eng validation and NTREX-128, equal budgets per arch;
    `ntrex_limit` and `archs` (quick mode) decode only the first pairs of each test set, with
    fewer families."""
    if missing("kor-eng"):
        return {"skipped": missing("kor-eng")}
    test_sets = {"kor-eng": None, "ntrex128": None}
    if os.path.exists(NTREX_KOR_ENG):
        test_sets["ntrex128"] = read_tsv(NTREX_KOR_ENG)[:ntrex_limit]
    results = {}
    for arch in archs:
        out = os.path.join(workdir, f"kor-eng-{arch}")
        config = corpus_config("kor-eng", arch, out, budget_minutes,
                               max_source_length=CORPUS_MAX_LENGTH,
                               max_target_length=CORPUS_MAX_LENGTH)
        if test_sets["kor-eng"] is None:  # the same seeded split for every architecture
            test_sets["kor-eng"] = load_validation_pairs(config)[:ntrex_limit]
        row = _train(config)
        translator = Translator.load(out)
        row["parameters"] = count_params(translator.model)
        for name, pairs in test_sets.items():
            if pairs is None:
                row[name] = {"skipped": f"{NTREX_KOR_ENG} is absent"}
                continue
            sources, references = [s for s, _ in pairs], [t for _, t in pairs]
            texts = [o.text for o in translator.translate(sources)]
            row[name] = {**evaluation_report(sources, texts, references, buckets=CORPUS_BUCKETS),
                         "distinct_outputs": len(set(texts)),
                         "examples": list(zip(sources[:3], texts[:3]))}
        if translator.model.has_attention:
            row["heat_map"] = _heat_map(translator, KOREAN_EXAMPLE,
                                        RESULTS_DIR / f"attention_ko_en_{arch}{tag}.png",
                                        f"{arch}, Tatoeba kor-eng, {budget_minutes:g} min")
        results[arch] = row
        print(f"[claims] kor-eng {arch}: {row['kor-eng']['bleu']} BLEU, {row['epochs']} epochs",
              flush=True)
    figures = []
    for name in test_sets:
        if test_sets[name] is None:
            continue
        series = {}
        for arch, row in results.items():
            buckets = row[name]["by_source_length"]
            series[arch] = ([(b["range"][0] + b["range"][1]) / 2 for b in buckets],
                            [b["bleu"] for b in buckets])
        path = RESULTS_DIR / f"bleu_vs_length_{name}{tag}.png"
        plot_lines(series, path, xlabel="source length (Korean words)", ylabel="BLEU",
                   title=f"{name}, {budget_minutes:g} min training on kor-eng each")
        figures.append(shown(path))
    return {"train_data": CORPORA["kor-eng"]["data"], "budget_minutes": budget_minutes,
            "decoding": "greedy", "buckets_upper_bounds": CORPUS_BUCKETS,
            "figures": figures, "results": results}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="0.05 minute per model and fewer test examples")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="training budget of each model of claim 1 (default 0.05 quick, 5)")
    parser.add_argument("--corpus-minutes", type=float, default=None,
                        help="training budget of each kor-eng model (default 0.05 quick, 6)")
    parser.add_argument("--attention-minutes", type=float, default=None,
                        help="budget of the dates model of claim 2 (default 0.05 quick, 3)")
    parser.add_argument("--tag", default="",
                        help="suffix of the JSON and PNG names, e.g. _5min")
    parser.add_argument("--skip", nargs="*", default=[], choices=["length", "corpus", "attention"])
    args = parser.parse_args(argv)
    args.repeats = 1  # one training run per model: the budget, not repeats, bounds the time
    budget = args.budget_minutes or (0.05 if args.quick else 5.0)
    figures = {}
    with tempfile.TemporaryDirectory() as workdir:
        if "length" not in args.skip:
            figures["claim_1_context_vector_vs_length"] = claim_length(
                budget, 3 if args.quick else 50, workdir, args.tag,
                num_pairs=2000 if args.quick else 20000)
        if "corpus" not in args.skip:
            figures["claim_1_bleu_vs_length_kor_eng"] = claim_length_corpus(
                args.corpus_minutes or (0.05 if args.quick else 6.0), workdir,
                20 if args.quick else None, args.tag,
                archs=("seq2seq", "bahdanau") if args.quick else ARCHS)
        if "attention" not in args.skip:
            figures["claim_2_attention_heat_maps"] = claim_attention(
                args.attention_minutes or (0.05 if args.quick else 3.0), workdir, args.tag,
                num_pairs=2000 if args.quick else 20000, num_fresh=50 if args.quick else 500)
    write_result("claims" + args.tag, args, figures)


if __name__ == "__main__":
    main()
