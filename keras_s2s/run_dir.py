"""The on-disk layout of a training run, and the one check of "is this a trained run".

A run directory holds:

- `config.json`: the `TrainConfig` (written once the vocabularies are, so a directory with a
  config is a run that can resume or has finished);
- the two tokenizers' files (`keras_s2s.data.tokenizers.SubwordTokenizer.save`);
- `model.keras`: the trained model, written last;
- `history.json` and `training_curves.png`: every epoch's metrics, across resumptions;
- `checkpoints/best.weights.h5`, `backup/` (for resuming) and TensorBoard `logs/`.
"""

import os
import zipfile

CONFIG = "config.json"
MODEL = "model.keras"
HISTORY = "history.json"
CURVES = "training_curves.png"
BEST_WEIGHTS = os.path.join("checkpoints", "best.weights.h5")
BACKUP = "backup"
LOGS = "logs"


def config_path(run_dir):
    return os.path.join(run_dir, CONFIG)


def model_path(run_dir):
    return os.path.join(run_dir, MODEL)


def check_trained(run_dir):
    """Raise FileNotFoundError (naming what is missing) unless `run_dir` is a finished run."""
    for needed in (config_path(run_dir), model_path(run_dir)):
        if not os.path.exists(needed):
            raise FileNotFoundError(
                f"{run_dir!r} is not a trained run directory: {os.path.basename(needed)} is "
                f"missing (train one with `keras-s2s train --out {run_dir}`)")


def load_model(run_dir):
    """The run's Keras model; a truncated or corrupt `model.keras` is a ValueError saying so.

    The family's model class is imported first: a family from another package registers its
    classes with Keras when imported, and nothing else may have imported it in this process.
    """
    import keras

    from keras_s2s import architectures
    from keras_s2s.config import TrainConfig

    architectures.get(TrainConfig.load(config_path(run_dir)).arch).model_class()
    path = model_path(run_dir)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a complete .keras file (truncated or corrupt); "
                         f"retrain, or restore it from a copy")
    return keras.models.load_model(path, compile=False)
