"""Translation quality of each architecture at a fixed training-time budget (prints JSON).

- `dates`: exact match on fresh examples, overall and per date format.
- `../shared/data/kor-eng` and `../shared/data/multi30k`: sacreBLEU BLEU and chrF, Multi30k's
  on its official `val.tsv` (val2016), kor-eng's on a validation split carved from the training
  file by whole groups of pairs sharing a sentence (the split training held out); skipped with
  a reason when `../shared` is absent.

The corpora can also train `keras-io-recipe`: the keras.io "translation with KerasHub" recipe
(`bench/keras_io_recipe.py`), for the same minutes on the same split, decoded as that recipe
does (uncached greedy).

    python bench/quality.py --quick                   # dates only, 1-2 minutes per model
    python bench/quality.py --tasks multi30k kor-eng --budget-minutes 30 15   # a budget a task
    python bench/quality.py --tasks multi30k --archs transformer keras-io-recipe \
        --budget-minutes 15 --beam 1 4                # ours against the keras.io recipe
    python bench/quality.py --tasks kor-eng --archs transformer --budget-minutes 15 \
        --set average_last=1 --set model.share_embeddings=false   # an ablation row
    python bench/quality.py --table docs/results/quality_*.json   # one table of past runs

After the JSON it prints the table (Markdown): one row a corpus and family, with the epochs the
budget bought, the load average around the training, and BLEU / chrF for each beam width.

Beam search uses the length penalty α that `keras-s2s tune-alpha` chooses on the run's
validation split (500 pairs, the beam width scored), so α is never chosen on the scored set
(except kor-eng's, whose carved split is both).
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import write_result  # noqa: E402
from corpora import CORPORA, TEST_SETS, corpus_config, missing  # noqa: E402
from keras_io_recipe import KerasIoRecipe  # noqa: E402

from keras_s2s import architectures  # noqa: E402
from keras_s2s.training.config import parse_assignments  # noqa: E402
from keras_s2s.training.config import TrainConfig  # noqa: E402
from keras_s2s.data import synthetic  # noqa: E402
from keras_s2s.decoding import Beam, Greedy  # noqa: E402
from keras_s2s.data.tsv import read_tsv  # noqa: E402
from keras_s2s.inference.evaluation import evaluation_report, tune_alpha  # noqa: E402
from keras_s2s.data.corpus import load_pairs
from keras_s2s.training.loop import train  # noqa: E402
from keras_s2s.inference.translator import Translator  # noqa: E402

KERAS_IO_RECIPE = "keras-io-recipe"


def result_name(tasks, archs, set_items):
    """The results file's name: the tasks, the families unless all of them ran (so that runs of
    different families with the same `--set` keep apart), and the `--set` items."""
    tag = "" if list(archs) == architectures.names() else "_" + "_".join(archs)
    tag += "".join("_" + "".join(c if c.isalnum() or c in ".=-" else "-" for c in item)
                   for item in set_items)
    return "quality_" + "_".join(tasks) + tag


def strategy_of(beam_width, alpha=0.6):
    """Greedy search for width 1 (the figures' `beam_1`), else beam search of that width."""
    return Greedy() if beam_width == 1 else Beam(beam_width, alpha)


def parse_settings(items):
    """`--set NAME=JSON` items → `corpus_config` overrides (`model.NAME` for model arguments)."""
    values = parse_assignments(items, flag="--set")
    model = {name[len("model."):]: value for name, value in values.items()
             if name.startswith("model.")}
    return {name: value for name, value in values.items()
            if not name.startswith("model.")}, model


def evaluate_dates(run_dir, beam_width):
    translator = Translator.load(run_dir)
    per_format = {}
    for date_format in synthetic.DATE_FORMATS:
        pairs = synthetic.generate("dates", 100, seed=777, formats=[date_format])
        outputs = translator.translate([s for s, _ in pairs], strategy_of(beam_width))
        per_format[date_format] = sum(
            o.text == t for o, (_, t) in zip(outputs, pairs)) / len(pairs)
    pairs = synthetic.generate("dates", 1000, seed=778)
    outputs = translator.translate([s for s, _ in pairs], strategy_of(beam_width))
    report = evaluation_report([s for s, _ in pairs], [o.text for o in outputs],
                               [t for _, t in pairs])
    return {"exact_match": report["exact_match"], "exact_match_by_format": per_format}


def score_corpus(validation, translate):
    """Scores of `translate(sources) -> texts` on the validation pairs, with timing."""
    sources = [s for s, _ in validation]
    started = time.monotonic()
    texts = translate(sources)
    seconds = time.monotonic() - started
    report = evaluation_report(sources, texts, [t for _, t in validation])
    return {**report, "translate_seconds": round(seconds, 1),
            "distinct_outputs": len(set(texts)),
            "examples": [(s, t) for s, t in zip(sources[:5], texts[:5])]}


def test_pairs(task, config):
    """The pairs `task` is scored on: its official test set, else the carved validation split."""
    if task in TEST_SETS:
        return read_tsv(TEST_SETS[task])
    return load_pairs(config)[1]


def evaluate_corpus(run_dir, validation, beam_widths):
    """Scores for each width; beam search with the α tuned on the run's validation split."""
    translator = Translator.load(run_dir)
    scores = {}
    for width in beam_widths:
        alpha = tune_alpha(run_dir, width)["alpha"] if width > 1 else None
        scores[f"beam_{width}"] = score_corpus(validation, lambda sources: [
            o.text for o in translator.translate(sources, strategy_of(width, alpha))])
        scores[f"beam_{width}"]["alpha"] = alpha
    return scores


def run_keras_io_recipe(task, budget_minutes):
    """The keras.io recipe trained for the same minutes on the same training split."""
    config = TrainConfig(data=CORPORA[task]["data"],
                         validation_split=CORPORA[task].get("validation_split", "random"))
    train_pairs, _ = load_pairs(config)
    validation = test_pairs(task, config)
    started = time.monotonic()
    recipe = KerasIoRecipe(train_pairs)
    epochs = recipe.fit(budget_minutes)
    seconds = time.monotonic() - started
    return {"train_seconds": round(seconds, 1), "epochs": epochs,
            "parameters": recipe.model.count_params(),
            "greedy_uncached": score_corpus(validation, recipe.translate)}


def run_one(task, arch, budget_minutes, workdir, beam_widths, settings=({}, {})):
    out = os.path.join(workdir, f"{task}-{arch}")
    if task != "dates" and missing(task):
        return {"skipped": missing(task)}
    if arch == KERAS_IO_RECIPE:
        if task == "dates":
            return {"skipped": "the keras.io recipe is a baseline for the corpora only"}
        return run_keras_io_recipe(task, budget_minutes)
    if task == "dates":
        config = TrainConfig(arch=arch, data="dates", out=out,
                             time_budget_minutes=budget_minutes)
    else:
        overrides, model = settings
        config = corpus_config(task, arch, out, budget_minutes, **overrides)
        config.model = {**config.model, **model}
    started, load_before = time.monotonic(), os.getloadavg()
    history = train(config, verbose=0)
    seconds = time.monotonic() - started
    loads = {"load_average_1_5_15_before": load_before,
             "load_average_1_5_15_after": os.getloadavg(),
             "val_loss_by_epoch": [round(v, 4) for v in history.get("val_loss", [])]}
    scores = ({f"beam_{width}": evaluate_dates(out, width) for width in beam_widths}
              if task == "dates" else evaluate_corpus(out, test_pairs(task, config), beam_widths))
    return {"train_seconds": round(seconds, 1), "epochs": len(history.get("loss", [])),
            "parameters": Translator.load(out).model.count_params(), **loads, **scores}


def table(runs):
    """Markdown table of `runs`, `(name "task/arch", run_one's figures, source or None)`; the
    source (the results file a row came from) gets a column when any row has one."""
    widths = sorted({int(key[len("beam_"):]) for _, figures, _ in runs for key in figures
                     if key.startswith("beam_") and key[len("beam_"):].isdigit()})
    sourced = any(source for _, _, source in runs)
    header = ["corpus", "family", "epochs", "training s", "load before → after",
              *(("greedy" if width == 1 else f"beam {width}") + " BLEU / chrF"
                for width in widths), *(["from"] if sourced else [])]
    rows = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, figures, source in runs:
        task, arch = name.split("/")
        if "skipped" in figures:
            rows.append(f"| {task} | {arch} | skipped: {figures['skipped']} |")
            continue
        loads = " → ".join(f"{figures[key][0]:.1f}" if key in figures else "—" for key in (
            "load_average_1_5_15_before", "load_average_1_5_15_after"))
        cells = [task, arch, str(figures.get("epochs", "—")),
                 f"{figures.get('train_seconds', 0):.0f}", loads]
        for width in widths:
            score = figures.get(f"beam_{width}")
            cells.append("—" if score is None else f"{score['bleu']:.1f} / {score['chrf']:.1f}"
                         + (f" (α {score['alpha']})" if score.get("alpha") is not None else ""))
        rows.append("| " + " | ".join(cells + ([source or ""] if sourced else [])) + " |")
    return "\n".join(rows)


def print_tables(paths):
    """One table of the corpus runs (not dates, not the keras.io recipe) in the results files
    at `paths`."""
    runs = []
    for path in paths:
        with open(path) as file:
            results = json.load(file)["figures"]["results"]
        runs += [(name, figures, os.path.basename(path)) for name, figures in results.items()
                 if not name.startswith("dates/") and not name.endswith(KERAS_IO_RECIPE)]
    print(table(runs))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="dates only, 1 minute per model")
    parser.add_argument("--tasks", nargs="+", default=["dates"],
                        choices=["dates", *CORPORA])
    parser.add_argument("--archs", nargs="+", default=architectures.names(),
                        choices=[*architectures.names(), KERAS_IO_RECIPE])
    parser.add_argument("--budget-minutes", type=float, nargs="+", default=[5.0],
                        help="training minutes: one for every task, or one a task")
    parser.add_argument("--beam", type=int, nargs="+", default=[4],
                        help="beam widths to evaluate our models with (1 = greedy)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a corpus recipe setting (a TrainConfig field, or "
                             "model.NAME for a model argument; VALUE is JSON): ablation rows")
    parser.add_argument("--keep", metavar="DIR",
                        help="keep the run directories in DIR (e.g. to score other checkpoint "
                             "averages with `keras-s2s average`); default: a temporary "
                             "directory, removed")
    parser.add_argument("--table", nargs="+", metavar="JSON",
                        help="print one table of the corpus runs in these results files "
                             "(written by this script) instead of training")
    args = parser.parse_args(argv)
    if args.table:
        return print_tables(args.table)
    settings = parse_settings(args.set)
    args.repeats = 1  # one training run per model: the budget, not repeats, bounds the time
    tasks, budgets = (["dates"], [1.0]) if args.quick else (args.tasks, args.budget_minutes)
    if len(budgets) not in (1, len(tasks)):
        parser.error(f"--budget-minutes takes one budget or one a task ({len(tasks)}), got "
                     f"{len(budgets)}")
    budgets = dict(zip(tasks, budgets * len(tasks) if len(budgets) == 1 else budgets))
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.keep or scratch
        os.makedirs(workdir, exist_ok=True)
        for task in tasks:
            for arch in args.archs:
                results[f"{task}/{arch}"] = run_one(task, arch, budgets[task], workdir,
                                                    args.beam, settings)
    write_result(result_name(tasks, args.archs, args.set), args,
                 {"budget_minutes": budgets, "results": results})
    if tasks != ["dates"]:
        print(table([(name, figures, None) for name, figures in results.items()
                     if not name.endswith(KERAS_IO_RECIPE)]))


if __name__ == "__main__":
    main()
