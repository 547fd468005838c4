"""Translation quality of each architecture at a fixed training-time budget (prints JSON).

- `dates`: exact match on fresh examples, overall and per date format.
- `../shared/data/kor-eng` and `../shared/data/multi30k`: sacreBLEU BLEU and chrF on a
  validation split carved from the training file (the same split training held out), skipped
  with a reason when `../shared` is absent.

    python bench/quality.py --quick                   # dates only, 1-2 minutes per model
    python bench/quality.py --tasks dates kor-eng multi30k --budget-minutes 15
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import write_result  # noqa: E402

from keras_s2s.config import TrainConfig  # noqa: E402
from keras_s2s.data import synthetic  # noqa: E402
from keras_s2s.evaluation import evaluation_report  # noqa: E402
from keras_s2s.training import load_pairs, train  # noqa: E402
from keras_s2s.translator import Translator  # noqa: E402

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")

CORPORA = {
    "kor-eng": dict(data=os.path.join(SHARED_DATA, "kor-eng", "train.tsv"), vocab_size=4000,
                    shared_vocab=True, max_source_length=48, max_target_length=48),
    "multi30k": dict(data=os.path.join(SHARED_DATA, "multi30k", "train.tsv"), vocab_size=8000,
                     shared_vocab=True, max_source_length=64, max_target_length=64),
}

#: Model sizes for the real corpora (the presets are tuned for the small built-in tasks).
CORPUS_MODELS = {
    "transformer": {"num_layers": 2, "d_model": 256, "num_heads": 4, "d_ff": 1024,
                    "dropout": 0.3, "normalize_first": True, "tie_embeddings": True},
}


def evaluate_dates(run_dir, beam_width):
    translator = Translator.load(run_dir)
    per_format = {}
    for date_format in synthetic.DATE_FORMATS:
        pairs = synthetic.generate("dates", 100, seed=777, formats=[date_format])
        outputs = translator.translate([s for s, _ in pairs], beam_width=beam_width)
        per_format[date_format] = sum(
            o.text == t for o, (_, t) in zip(outputs, pairs)) / len(pairs)
    pairs = synthetic.generate("dates", 1000, seed=778)
    outputs = translator.translate([s for s, _ in pairs], beam_width=beam_width)
    report = evaluation_report([s for s, _ in pairs], [o.text for o in outputs],
                               [t for _, t in pairs])
    return {"exact_match": report["exact_match"], "exact_match_by_format": per_format}


def evaluate_corpus(run_dir, config, beam_width):
    _, validation = load_pairs(config)
    sources = [s for s, _ in validation]
    outputs = Translator.load(run_dir).translate(sources, beam_width=beam_width)
    report = evaluation_report(sources, [o.text for o in outputs], [t for _, t in validation])
    distinct = len({o.text for o in outputs})
    return {**report, "distinct_outputs": distinct,
            "examples": [(s, o.text) for s, o in zip(sources[:5], outputs[:5])]}


def run_one(task, arch, budget_minutes, workdir, beam_width):
    out = os.path.join(workdir, f"{task}-{arch}")
    if task == "dates":
        config = TrainConfig(arch=arch, data="dates", out=out,
                             time_budget_minutes=budget_minutes)
    else:
        if not os.path.exists(CORPORA[task]["data"]):
            return {"skipped": f"{CORPORA[task]['data']} is absent"}
        # Peak learning rate about 1e-3 for the Transformer (scale · d^-0.5 · warmup^-0.5).
        config = TrainConfig(arch=arch, out=out, epochs=200, early_stopping_patience=5,
                             time_budget_minutes=budget_minutes, label_smoothing=0.1,
                             batch_size=32, warmup_steps=400,
                             learning_rate=0.3 if arch == "transformer" else 1e-3,
                             model=CORPUS_MODELS.get(arch, {}), **CORPORA[task])
    started = time.monotonic()
    history = train(config, verbose=0)
    seconds = time.monotonic() - started
    scores = (evaluate_dates(out, beam_width) if task == "dates"
              else evaluate_corpus(out, config, beam_width))
    return {"train_seconds": round(seconds, 1), "epochs": len(history.get("loss", [])),
            "beam_width": beam_width, **scores}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="dates only, 1 minute per model")
    parser.add_argument("--tasks", nargs="+", default=["dates"],
                        choices=["dates", *CORPORA])
    parser.add_argument("--archs", nargs="+",
                        default=["seq2seq", "bahdanau", "luong", "transformer"])
    parser.add_argument("--budget-minutes", type=float, default=5.0)
    parser.add_argument("--beam", type=int, default=4)
    args = parser.parse_args(argv)
    args.repeats = 1  # one training run per model: the budget, not repeats, bounds the time
    tasks, budget = (["dates"], 1.0) if args.quick else (args.tasks, args.budget_minutes)
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for task in tasks:
            for arch in args.archs:
                results[f"{task}/{arch}"] = run_one(task, arch, budget, workdir, args.beam)
    write_result("quality_" + "_".join(tasks), args, {"budget_minutes": budget,
                                                      "results": results})


if __name__ == "__main__":
    main()
