"""What a training run is made of: the architecture presets and the run configuration.

A run directory stores this configuration as `config.json`; everything needed to rebuild the
model and its tokenizers is read back from there.
"""

import dataclasses
import json
import os

from keras_s2s.models import AttentionSeq2Seq, Seq2Seq, Transformer

#: Model arguments of each architecture: small enough to train on a laptop CPU in minutes.
ARCHITECTURES = {
    "seq2seq": {"embedding_dim": 128, "units": 256, "cell": "lstm", "num_layers": 1,
                "dropout": 0.1},
    "bahdanau": {"embedding_dim": 128, "units": 256, "cell": "gru", "num_layers": 1,
                 "dropout": 0.1, "attention": "bahdanau", "bidirectional_encoder": True},
    "luong": {"embedding_dim": 128, "units": 256, "cell": "lstm", "num_layers": 1,
              "dropout": 0.1, "attention": "luong", "luong_score": "general",
              "bidirectional_encoder": True},
    "transformer": {"num_layers": 3, "d_model": 128, "num_heads": 4, "d_ff": 512,
                    "dropout": 0.1, "normalize_first": False, "tie_embeddings": False},
}


#: Epochs when none are given: the built-in tasks converge quickly (dates in 2–3 epochs of 20k
#: pairs); real corpora need more and rely on early stopping.
DEFAULT_EPOCHS = {"dates": 4, "reverse": 15, "copy": 15}
DEFAULT_EPOCHS_FOR_FILES = 30


@dataclasses.dataclass
class TrainConfig:
    """Everything `keras_s2s.training.train` needs; saved as the run's `config.json`."""

    arch: str = "bahdanau"
    data: str = "dates"  # a built-in task name or a TSV path
    out: str = "runs/dates"
    val: str | None = None  # TSV of validation pairs; default: a split of the training data
    source_column: int = 0
    target_column: int = 1
    on_error: str = "raise"  # malformed TSV lines: "raise" or "skip"
    num_pairs: int = 20000  # built-in tasks: training pairs generated
    task_options: dict = dataclasses.field(default_factory=dict)  # e.g. min_length, max_length
    validation_fraction: float = 0.05
    seed: int = 0
    vocab_size: int = 2000
    shared_vocab: bool = False
    lowercase: bool = False
    max_source_length: int = 64
    max_target_length: int = 64
    batch_size: int = 64
    epochs: int | None = None  # default: DEFAULT_EPOCHS of the task, or DEFAULT_EPOCHS_FOR_FILES
    learning_rate: float | None = None  # RNNs: Adam's rate; Transformer: scale of the schedule
    warmup_steps: int = 1000
    label_smoothing: float = 0.1
    early_stopping_patience: int = 3
    time_budget_minutes: float | None = None  # stop training after this much wall-clock time
    model: dict = dataclasses.field(default_factory=dict)  # overrides of ARCHITECTURES[arch]
    mixed_precision: str = "auto"  # "auto" (on with a GPU), "on", "off"
    jit_compile: str = "auto"  # "auto" (on with a GPU), "on", "off"
    distribute: str = "auto"  # "auto" (mirrored across GPUs when there are several), "mirrored", "off"

    def __post_init__(self):
        if self.epochs is None:
            self.epochs = DEFAULT_EPOCHS.get(self.data, DEFAULT_EPOCHS_FOR_FILES)
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {tuple(ARCHITECTURES)}, got {self.arch!r}")
        for name in ("mixed_precision", "jit_compile"):
            if getattr(self, name) not in ("auto", "on", "off"):
                raise ValueError(f"{name} must be 'auto', 'on' or 'off', got "
                                 f"{getattr(self, name)!r}")
        if self.distribute not in ("auto", "mirrored", "off"):
            raise ValueError(f"distribute must be 'auto', 'mirrored' or 'off', got "
                             f"{self.distribute!r}")
        for name in ("num_pairs", "vocab_size", "max_source_length", "max_target_length",
                     "batch_size", "epochs", "warmup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")

    def model_arguments(self):
        return {**ARCHITECTURES[self.arch], **self.model}

    def save(self, path):
        with open(path, "w", encoding="utf-8") as file:
            json.dump(dataclasses.asdict(self), file, indent=2, ensure_ascii=False)
            file.write("\n")

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as file:
            return cls(**json.load(file))


def build_model(config, source_vocab_size, target_vocab_size):
    """The model of `config.arch` with the preset arguments and the config's overrides."""
    arguments = config.model_arguments()
    if config.arch == "seq2seq":
        return Seq2Seq(source_vocab_size, target_vocab_size, **arguments)
    if config.arch == "transformer":
        max_length = max(config.max_source_length, config.max_target_length) + 2
        return Transformer(source_vocab_size, target_vocab_size,
                           **{"max_length": max_length, **arguments})
    return AttentionSeq2Seq(source_vocab_size, target_vocab_size, **arguments)


def config_path(run_dir):
    return os.path.join(run_dir, "config.json")
