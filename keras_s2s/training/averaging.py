"""Checkpoint averaging: a run's model as the mean of the weights of its last N epochs.

The weights at the end of one epoch sit wherever the last batches pushed them; their mean over
the last few epochs sits nearer the middle of the valley the optimizer circles, and usually
translates better (Vaswani et al. 2017 averaged the last 5–20 checkpoints; OpenNMT-tf averages
the last 8 by default). With `keras-s2s train --average-last N` a run keeps its epochs' weights
(`checkpoints/epoch-NNNN.weights.h5`) and saves the mean of the N epochs that end at its best
epoch (lowest validation loss: the epoch whose weights it would save without averaging);
`keras-s2s average RUN --last N` averages a finished run again with another N. Every averaging
writes `checkpoints/average.json`: the epochs averaged, and the validation loss of the mean
beside that of the best epoch alone.
"""

import glob
import json
import logging
import os
import re

import keras
import numpy as np

from keras_s2s import run as run_files
from keras_s2s.checks import check_positive_int

logger = logging.getLogger(__name__)

_EPOCH_FILE = re.compile(r"epoch-(\d+)\.weights\.h5$")


class EpochCheckpoints(keras.callbacks.Callback):
    """Save each epoch's weights under `directory`, keeping the `keep` most recent files."""

    def __init__(self, directory, keep):
        super().__init__()
        check_positive_int("keep", keep)
        self.directory = directory
        self.keep = keep

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        self.model.save_weights(run_files.epoch_weights_path(self.directory, epoch + 1))
        kept = epoch_checkpoints(self.directory)
        for old in sorted(kept)[:-self.keep]:
            os.remove(kept[old])


def epoch_checkpoints(directory):
    """`{epoch: path}` of the epoch weights kept in `directory` (epochs count from 1)."""
    paths = glob.glob(os.path.join(directory, "epoch-*.weights.h5"))
    return {int(_EPOCH_FILE.search(path).group(1)): path for path in paths
            if _EPOCH_FILE.search(path)}


def averaging_window(history, kept, last, fewer_if_early=False):
    """The `last` epochs that end at the best epoch of `history` (its lowest `val_loss`).

    `kept` is `epoch_checkpoints`' result; an epoch of the window without its file is a
    ValueError that says which epochs the run kept. A best epoch before epoch `last` is a
    ValueError too, or with `fewer_if_early` a window of the epochs up to it (and a warning).
    """
    check_positive_int("last", last)
    losses = history.get("val_loss") or []
    if not losses:
        raise ValueError(f"the run has no validation loss in its {run_files.HISTORY} to pick "
                         f"its best epoch by")
    if not kept:
        raise ValueError(f"the run kept no epoch weights to average (train with "
                         f"--average-last {last} to keep them)")
    best = int(np.argmin(losses)) + 1
    if fewer_if_early and best < last:
        logger.warning("the run's best epoch is epoch %d: averaging its %d epochs instead of "
                       "the last %d", best, best, last)
        last = best
    if best < last:
        raise ValueError(f"the run's best epoch is epoch {best}: too few epochs to average the "
                         f"last {last}")
    window = list(range(best - last + 1, best + 1))
    missing = [epoch for epoch in window if epoch not in kept]
    if missing:
        raise ValueError(f"averaging the last {last} epochs up to the best (epoch {best}) needs "
                         f"the weights of epochs {missing}, but the run kept those of "
                         f"{sorted(kept)} (train with --average-last {last} to keep them)")
    return window


def average_weights(model, paths):
    """Set `model`'s weights to the mean of the weight files `paths` (floating variables;
    integer ones, such as counters, are those of the last file)."""
    total = None
    for path in paths:
        model.load_weights(path)
        values = [np.asarray(value) for value in model.get_weights()]
        total = ([value.astype(np.float64) for value in values] if total is None else
                 [t + value for t, value in zip(total, values)])
    model.set_weights([
        (t / len(paths)).astype(value.dtype) if np.issubdtype(value.dtype, np.floating)
        else value for t, value in zip(total, values)])


def average_run(model, run_dir, last, validation_data=None, fewer_if_early=False):
    """Average `model`'s weights over the run's last `last` epochs up to its best one.

    `validation_data`, when given, measures the mean's validation loss and the best epoch's.
    With `fewer_if_early` (training's own `--average-last`), a run whose best epoch comes
    before epoch `last` (a time budget or early stopping ended it soon) averages the epochs up
    to the best, with a warning, instead of failing once its training is done.
    Writes `checkpoints/average.json` and returns what it holds.
    """
    directory = os.path.join(run_dir, run_files.CHECKPOINTS)
    with open(os.path.join(run_dir, run_files.HISTORY), encoding="utf-8") as file:
        history = json.load(file)
    kept = epoch_checkpoints(directory)
    window = averaging_window(history, kept, last, fewer_if_early)
    report = {"epochs": window, "best_epoch": window[-1],
              "best_epoch_val_loss": min(history["val_loss"]), "asked_for": last}
    average_weights(model, [kept[epoch] for epoch in window])
    if validation_data is not None:
        report["val_loss"] = float(model.evaluate(validation_data, verbose=0,
                                                  return_dict=True)["loss"])
    with open(os.path.join(directory, run_files.AVERAGE_REPORT), "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    logger.info("averaged the weights of epochs %s: %s", window, report)
    return report
