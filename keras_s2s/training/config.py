"""What a training run is made of: its configuration, saved as the run's `config.json`.

Everything needed to rebuild the model and its tokenizers is read back from there. Importing
this module imports no TensorFlow (the CLI's parser and `--help` use it).
"""

import dataclasses
import json

from keras_s2s import architectures
from keras_s2s.checks import (check_batch_tokens, check_choice, check_fraction, check_number,
                              check_positive_int)


#: Epochs when none are given: the built-in tasks converge quickly (dates in 2–3 epochs of 20k
#: pairs); real corpora need more and rely on early stopping.
DEFAULT_EPOCHS = {"dates": 4, "reverse": 15, "copy": 15}
DEFAULT_EPOCHS_FOR_FILES = 30
DEFAULT_VOCAB_SIZE = 2000
DISTRIBUTE_CHOICES = ("auto", "mirrored", "off", "multi-worker")
#: `keras_s2s.data.tokenizers.TOKENIZER_KINDS`, without importing TensorFlow.
TOKENIZER_KINDS = ("wordpiece", "unigram")
#: How the learning rate changes over a run: the family's own way (the Transformer's
#: inverse-square-root decay, a constant rate for the RNNs), or warm-up then a linear decay to
#: zero at the end of the budget (`keras_s2s.training.objectives.LinearDecay`).
DECAYS = ("family", "linear")
#: How a validation split is carved from TSV files (`keras_s2s.data.splits`).
VALIDATION_SPLITS = ("random", "grouped")


@dataclasses.dataclass
class TrainConfig:
    """Everything `keras_s2s.training.loop.train` needs; saved as the run's `config.json`."""

    arch: str = "bahdanau"
    data: str = "dates"  # a built-in task name, or TSV files: a path or a glob
    out: str = "runs/dates"
    val: str | None = None  # TSV of validation pairs; default: a split of the training data
    stream: bool = False  # stream the TSV files with tf.data (memory independent of their size)
    # TSV files (a path or a glob) added to the training pairs only, after the validation split
    # is carved, less the pairs sharing a sentence with it (`keras_s2s.data.corpus.load_pairs`)
    extra_data: str | None = None
    # train on each training pair both ways (target → source too), with one shared vocabulary
    both_directions: bool = False
    source_column: int = 0
    target_column: int = 1
    on_error: str = "raise"  # malformed TSV lines: "raise" or "skip"
    num_pairs: int = 20000  # built-in tasks: training pairs generated
    task_options: dict = dataclasses.field(default_factory=dict)  # e.g. min_length, max_length
    validation_fraction: float = 0.05
    # "random", or "grouped": whole groups of pairs sharing a source or target sentence held out
    validation_split: str = "random"
    seed: int = 0
    # subword vocabulary size; None: up to DEFAULT_VOCAB_SIZE, fewer without a warning when the
    # corpus holds fewer subwords (a size asked for and not reached is a warning)
    vocab_size: int | None = None
    # "wordpiece", or "unigram" (SentencePiece) (`keras_s2s.data.tokenizers`)
    tokenizer: str = "wordpiece"
    shared_vocab: bool = False
    lowercase: bool = False
    max_source_length: int = 64
    max_target_length: int = 64
    batch_size: int = 64
    # token-based batching: at most this many padded tokens a batch (the longer side), instead
    # of `batch_size` pairs (`keras_s2s.data.pipeline.make_dataset`)
    batch_tokens: int | None = None
    epochs: int | None = None  # default: DEFAULT_EPOCHS of the task, or DEFAULT_EPOCHS_FOR_FILES
    learning_rate: float | None = None  # default: the family's (`Family.learning_rate`)
    warmup_steps: int = 1000
    # "family" or "linear": to zero when the time budget, or else the epochs, are spent (DECAYS)
    decay: str = "family"
    label_smoothing: float = 0.1
    # the probability that an input token becomes [UNK] in training (`make_dataset`)
    word_dropout: float = 0.0
    early_stopping_patience: int = 3
    time_budget_minutes: float | None = None  # stop training after this much wall-clock time
    # the saved model: the mean of the weights of this many epochs ending at the best one
    # (1: the best epoch's weights; `keras_s2s.training.averaging`)
    average_last: int = 1
    model: dict = dataclasses.field(default_factory=dict)  # overrides of the family's presets
    mixed_precision: str = "auto"  # "auto" (on with a GPU), "on", "off"
    jit_compile: str = "auto"  # "auto" (on with a GPU), "on", "off"
    # "auto" (mirrored across GPUs when there are several), "mirrored", "off", or
    # "multi-worker" (the cluster of the TF_CONFIG variable: `keras_s2s.training.multi_worker`)
    distribute: str = "auto"

    def __post_init__(self):
        if self.epochs is None:
            self.epochs = DEFAULT_EPOCHS.get(self.data, DEFAULT_EPOCHS_FOR_FILES)
        architectures.get(self.arch)  # an unknown name lists the known ones
        for name in ("mixed_precision", "jit_compile"):
            check_choice(name, getattr(self, name), ("auto", "on", "off"))
        check_choice("distribute", self.distribute, DISTRIBUTE_CHOICES)
        check_choice("validation_split", self.validation_split, VALIDATION_SPLITS)
        check_choice("tokenizer", self.tokenizer, TOKENIZER_KINDS)
        check_choice("decay", self.decay, DECAYS)
        if self.average_last > 1 and self.distribute == "multi-worker":
            raise ValueError("average_last > 1 is not in the multi-worker training loop yet; "
                             "train with --average-last 1")
        if self.decay == "linear" and self.distribute == "multi-worker":
            raise ValueError("decay 'linear' is not in the multi-worker training loop (each "
                             "worker's clock would give it another rate); train with --decay "
                             "family")
        if self.extra_data and self.stream:
            raise ValueError("--extra-data is read into memory and cannot be streamed: with "
                             "--stream, name its files in --data's glob instead")
        if self.both_directions and not self.shared_vocab:
            raise ValueError("--both-directions feeds target sentences to the encoder, so it "
                             "needs one vocabulary for both sides: add --shared-vocab")
        if self.both_directions and self.stream:
            raise ValueError("--both-directions reverses pairs held in memory and cannot be "
                             "streamed")
        if self.decay == "linear" and self.stream and not self.time_budget_minutes:
            raise ValueError("decay 'linear' needs to know when training ends: a streamed "
                             "corpus has no known length, so give a time budget (--time-budget)")
        check_positive_int("vocab_size", self.vocab_size, optional=True)
        for name in ("num_pairs", "max_source_length", "max_target_length",
                     "batch_size", "epochs", "warmup_steps", "average_last"):
            check_positive_int(name, getattr(self, name))
        check_number("time_budget_minutes", self.time_budget_minutes, 0.0, low_inclusive=False,
                     optional=True)
        if self.model.get("share_embeddings") and not self.shared_vocab:
            raise ValueError("share_embeddings needs one vocabulary for source and target "
                             "tokens: train with --shared-vocab")
        check_batch_tokens(self.batch_tokens,
                           max(self.max_source_length, self.max_target_length))
        check_number("learning_rate", self.learning_rate, 0.0, low_inclusive=False,
                     optional=True)
        check_fraction("validation_fraction", self.validation_fraction)
        check_fraction("label_smoothing", self.label_smoothing)
        check_fraction("word_dropout", self.word_dropout)

    def vocabulary_size(self):
        """The most subwords the tokenizers learn."""
        return self.vocab_size or DEFAULT_VOCAB_SIZE

    def build_model(self, source_vocab_size, target_vocab_size):
        """The family's model with its presets and this run's overrides."""
        longest = max(self.max_source_length, self.max_target_length) + 2  # start and end ids
        return architectures.get(self.arch).build(source_vocab_size, target_vocab_size,
                                                  self.model, longest)

    def save(self, path):
        with open(path, "w", encoding="utf-8") as file:
            json.dump(dataclasses.asdict(self), file, indent=2, ensure_ascii=False)
            file.write("\n")

    @classmethod
    def load(cls, path):
        """Read `path`; a file that is not this configuration is a ValueError naming it."""
        try:
            with open(path, encoding="utf-8") as file:
                values = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a JSON object of settings, got a "
                             f"{type(values).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path} has unknown settings {unknown}; known: {sorted(known)}")
        try:
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from error

    def differences(self, other, ignore=("epochs", "time_budget_minutes")):
        """`{name: (mine, other's)}` of the settings that differ, except `ignore`."""
        mine, theirs = dataclasses.asdict(self), dataclasses.asdict(other)
        return {name: (mine[name], theirs[name]) for name in mine
                if name not in ignore and mine[name] != theirs[name]}
