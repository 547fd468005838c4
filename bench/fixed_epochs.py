"""Quality of a corpus recipe after a fixed number of epochs, for comparing two checkouts.

A time budget makes a comparison depend on the machine's load; a fixed number of epochs does
not. Run from the root of each checkout (the script only uses APIs that both the current code
and df9ddcc have), side by side, and compare the JSON lines it prints:

    git worktree add /tmp/before df9ddcc
    (cd /tmp/before && PYTHONPATH=. python $REPO/bench/fixed_epochs.py /tmp/run_before) &
    (cd $REPO && python bench/fixed_epochs.py /tmp/run_after) &

Greedy BLEU/chrF on the recipe's validation split (`bench/corpora.py`'s kor-eng Transformer
by default).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.getcwd(), "bench"))

from corpora import corpus_config  # noqa: E402

from keras_s2s.inference.evaluation import evaluation_report  # noqa: E402
from keras_s2s.data.corpus import load_pairs
from keras_s2s.training.loop import train  # noqa: E402
from keras_s2s.inference.translator import Translator  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="run directory to create")
    parser.add_argument("--task", default="kor-eng")
    parser.add_argument("--arch", default="transformer")
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    config = corpus_config(args.task, args.arch, args.out, None, epochs=args.epochs)
    config.early_stopping_patience = args.epochs  # every epoch runs
    started = time.monotonic()
    history = train(config, verbose=0)
    _, validation = load_pairs(config)
    sources = [source for source, _ in validation]
    texts = [t.text for t in Translator.load(args.out).translate(sources)]
    report = evaluation_report(sources, texts, [target for _, target in validation])
    print(json.dumps({"task": args.task, "arch": args.arch, "epochs": len(history["loss"]),
                      "val_loss": history["val_loss"], "bleu": report["bleu"],
                      "chrf": report["chrf"], "seconds": round(time.monotonic() - started),
                      "load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
