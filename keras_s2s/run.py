"""A training run: its on-disk layout (the one module naming its files), the one check of
"is this a trained run", and `Run`, a trained run opened once.

A run directory holds:

- `config.json`: the `TrainConfig` (written once the vocabularies are, so a directory with a
  config is a run that can resume or has finished);
- the two tokenizers' files (a `keras_s2s.data.tokenizers` tokenizer's `save`), and
  `digests.json`, their SHA-256 (a changed or truncated one is refused);
- `model.keras`: the trained model, written last;
- `history.json` and `training_curves.png`: every epoch's metrics, across resumptions;
- `checkpoints/best.weights.h5`, `backup/` (for resuming) and TensorBoard `logs/`;
- `decoding.json`, once `keras-s2s tune-alpha` has run: the beam search's length penalty α
  chosen on the validation split (the default α of `--beam` for this run);
- with checkpoint averaging (`keras_s2s.training.averaging`),
  `checkpoints/epoch-NNNN.weights.h5` (the last epochs' weights) and
  `checkpoints/average.json` (what `model.keras` averages).

A CTranslate2 export (`keras_s2s.exporters.ctranslate2`) holds CTranslate2's own files
(`model.bin`, its `config.json` and vocabularies), the run's two tokenizers' files and
`run_config.json`, a copy of the run's `config.json` (CTranslate2 owns that name there).
"""

import functools
import hashlib
import json
import os
import shutil
import zipfile

from keras_s2s import architectures
from keras_s2s.training.config import TrainConfig

CONFIG = "config.json"
MODEL = "model.keras"
HISTORY = "history.json"
CURVES = "training_curves.png"
CHECKPOINTS = "checkpoints"
BEST_WEIGHTS = os.path.join(CHECKPOINTS, "best.weights.h5")
AVERAGE_REPORT = "average.json"
DECODING = "decoding.json"
BACKUP = "backup"
#: The SHA-256 of each tokenizer file, written with them, so that a changed one is noticed.
DIGESTS = "digests.json"
LOGS = "logs"
#: A CTranslate2 export: CTranslate2's weights file, and the copy of the run's configuration.
CTRANSLATE2_MODEL = "model.bin"
CTRANSLATE2_RUN_CONFIG = "run_config.json"
#: Where in a version directory the run's files are copied (TF Serving ignores it).
EXPORT_RUN_FILES = "assets.extra"
#: The two tokenizers' file prefixes (their `save(run_dir, side)`).
SIDES = ("source", "target")


def config_path(run_dir):
    return os.path.join(run_dir, CONFIG)


def model_path(run_dir):
    return os.path.join(run_dir, MODEL)


def epoch_weights_path(directory, epoch):
    """The weights file of epoch `epoch` (from 1) in a run's checkpoints `directory`."""
    return os.path.join(directory, f"epoch-{epoch:04d}.weights.h5")


def vocabulary_path(directory, side):
    """The vocabulary file (one token a line, in id order) of `side` ("source" or "target",
    or a name ending in one) in `directory`."""
    from keras_s2s.data.tokenizers import file_names

    return os.path.join(directory, file_names(side)[0])


def portable_files():
    """The names of the files that make a trained run anywhere (an export carries them)."""
    from keras_s2s.data.tokenizers import file_names

    return (CONFIG, MODEL, DIGESTS) + tuple(name for side in SIDES
                                            for name in file_names(side))


def save_tokenizers(run_dir, source_tokenizer, target_tokenizer):
    """Write both tokenizers' files, and their digests (`DIGESTS`); returns the paths written."""
    paths = [path for side, tokenizer in zip(SIDES, (source_tokenizer, target_tokenizer))
             for path in tokenizer.save(run_dir, side)]
    digests = {os.path.basename(path): _digest(path) for path in paths}
    with open(os.path.join(run_dir, DIGESTS), "w", encoding="utf-8") as file:
        json.dump(digests, file, indent=2)
        file.write("\n")
    return paths


def copy_tokenizers(from_dir, run_dir):
    """Copy the tokenizers' files of the run `from_dir`, and their digests, into `run_dir`
    byte for byte (a run started from another keeps its vocabularies)."""
    check_digests(from_dir)
    for name in portable_files():
        if name not in (CONFIG, MODEL) and os.path.exists(os.path.join(from_dir, name)):
            shutil.copyfile(os.path.join(from_dir, name), os.path.join(run_dir, name))


def _digest(path):
    """The SHA-256 of the file at `path`, in hex."""
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def check_digests(directory):
    """Raise a one-line ValueError naming the first tokenizer file of `directory` that is not
    the one its run was trained with (runs written before digests were kept have none)."""
    path = os.path.join(directory, DIGESTS)
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as file:
        digests = json.load(file)
    for name, digest in sorted(digests.items()):
        if _digest(os.path.join(directory, name)) != digest:
            raise ValueError(f"{os.path.join(directory, name)} is not the file this run was "
                             f"trained with (its SHA-256 differs from {DIGESTS}'s): the run's "
                             f"vocabularies and model no longer belong together; restore it")


def save_run(run_dir, config, model, source_tokenizer, target_tokenizer):
    """Make `run_dir` (which must not exist) a trained run of `model`, as training leaves it
    for `translate`, `evaluate`, `export` and `serve`: `config`, both tokenizers and the model
    (no history or checkpoints). For models built or trained outside `keras-s2s train`."""
    os.makedirs(run_dir)
    save_tokenizers(run_dir, source_tokenizer, target_tokenizer)
    config.save(config_path(run_dir))
    model.save(model_path(run_dir))
    return run_dir


def load_tokenizers(run_dir):
    """`(source_tokenizer, target_tokenizer)`, as `save_tokenizers` wrote them, each file checked
    against its digest."""
    from keras_s2s.data.tokenizers import load_tokenizer

    check_digests(run_dir)
    return tuple(load_tokenizer(run_dir, side) for side in SIDES)


def save_decoding(run_dir, report):
    """Write `report` (`keras_s2s.inference.evaluation.tune_alpha`'s) as the run's
    `decoding.json`."""
    path = os.path.join(run_dir, DECODING)
    with open(path + ".partial", "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
        file.write("\n")
    os.replace(path + ".partial", path)
    return path


def tuned_alpha(directory):
    """The length penalty α stored by `keras-s2s tune-alpha` in `directory`, or None."""
    path = os.path.join(directory, DECODING)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as file:
        try:
            alpha = json.load(file)["alpha"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path} holds no length penalty (alpha): {error!r}; run "
                             f"`keras-s2s tune-alpha` again or delete it") from None
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha < 0:
        raise ValueError(f"{path}: alpha must be a number >= 0, got {alpha!r}")
    return float(alpha)


def is_trained(run_dir):
    """Whether `run_dir` holds a finished run (its configuration and its model)."""
    return all(map(os.path.exists, (config_path(run_dir), model_path(run_dir))))


def is_ctranslate2(directory):
    """Whether `directory` holds a CTranslate2 export written by this package."""
    return all(os.path.exists(os.path.join(directory, name))
               for name in (CTRANSLATE2_MODEL, CTRANSLATE2_RUN_CONFIG))


def ctranslate2_config_path(directory):
    """The run configuration copied into a CTranslate2 export."""
    return os.path.join(directory, CTRANSLATE2_RUN_CONFIG)


def check_trained(run_dir):
    """Raise FileNotFoundError (naming what is missing) unless `run_dir` is a finished run."""
    for needed in (config_path(run_dir), model_path(run_dir)):
        if not os.path.exists(needed):
            raise FileNotFoundError(
                f"{run_dir!r} is not a trained run directory: {os.path.basename(needed)} is "
                f"missing (train one with `keras-s2s train --out {run_dir}`)")


class Run:
    """A trained run, opened and checked once: its configuration, tokenizers, tuned decoding and
    (loaded when first asked for) model. The translator, evaluation, averaging, the exporters
    and the explorer all take one.

    Open one with `Run.open(path)`: `path` is a run directory, an export version directory
    (its copy of the run), or a CTranslate2 export (which has no Keras model).

    Attributes:
        directory: where the run's files are.
        config: its `keras_s2s.training.config.TrainConfig`.
        source_tokenizer, target_tokenizer: its two tokenizers.
        tuned_alpha: the beam search length penalty `keras-s2s tune-alpha` chose, or None.
        is_ctranslate2: whether `directory` is a CTranslate2 export.
    """

    def __init__(self, directory, config, source_tokenizer, target_tokenizer, tuned_alpha=None,
                 is_ctranslate2=False):
        self.directory = directory
        self.config = config
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.tuned_alpha = tuned_alpha
        self.is_ctranslate2 = is_ctranslate2

    @classmethod
    def open(cls, path):
        """The run at `path`; a missing or broken file is a one-line error naming it."""
        if is_ctranslate2(path):
            return cls(path, TrainConfig.load(ctranslate2_config_path(path)),
                       *load_tokenizers(path), tuned_alpha(path), is_ctranslate2=True)
        directory = path
        copy = os.path.join(path, EXPORT_RUN_FILES)
        if not is_trained(path) and is_trained(copy):
            directory = copy
        check_trained(directory)
        return cls(directory, TrainConfig.load(config_path(directory)),
                   *load_tokenizers(directory), tuned_alpha(directory))

    @classmethod
    def of(cls, run):
        """`run` itself when it is a `Run`, else the run opened at that path."""
        return run if isinstance(run, cls) else cls.open(run)

    @functools.cached_property
    def model(self):
        """The run's Keras model; a truncated or corrupt `model.keras`, or one whose vocabulary
        sizes are not its tokenizers', is a ValueError saying so.

        The family's model class is imported first: a family from another package registers
        its classes with Keras when imported, and nothing else may have imported it in this
        process.
        """
        import keras

        if self.is_ctranslate2:
            raise ValueError(f"{self.directory!r} is a CTranslate2 export: it holds "
                             f"CTranslate2's model, not a Keras model")
        architectures.get(self.config.arch).model_class()
        path = model_path(self.directory)
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is not a complete .keras file (truncated or corrupt); "
                             f"retrain, or restore it from a copy")
        model = keras.models.load_model(path, compile=False)
        for side, tokenizer, size in (("source", self.source_tokenizer, model.source_vocab_size),
                                      ("target", self.target_tokenizer, model.target_vocab_size)):
            if tokenizer.vocabulary_size != size:
                raise ValueError(
                    f"{self.directory}: the {side} vocabulary has {tokenizer.vocabulary_size} "
                    f"tokens but the model was trained with {size}: the run's files do not "
                    f"belong together (restore them from one run)")
        return model
