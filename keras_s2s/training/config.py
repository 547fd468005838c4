"""What a training run is made of: its configuration, saved as the run's `config.json`.

Each option is written once, here: its name, type, default, help and check are a field of
`TrainConfig` (`option(...)`), and `keras-s2s train`'s flags are built from those fields
(`add_arguments`, `from_arguments`). Rules between options are `TrainConfig.validate`.
Everything needed to rebuild the model and its tokenizers is read back from `config.json`.
Importing this module imports no TensorFlow (the CLI's parser and `--help` use it).
"""

import argparse
import dataclasses
import json

from keras_s2s import architectures
from keras_s2s.checks import (check_batch_tokens, check_choice, check_fraction,
                              check_non_negative_int, check_number, check_positive_int)


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


#: The checks an option may name (`option(check=...)`): the value's type, the field's check,
#: and what the flag expects, in the command-line error of a text that fails either.
CHECKS = {
    "positive_int": (int, check_positive_int, "a positive integer"),
    "non_negative_int": (int, check_non_negative_int, "an integer >= 0"),
    "positive_float": (float, lambda name, value, optional=False: check_number(
        name, value, 0.0, low_inclusive=False, optional=optional), "a positive number"),
    "fraction": (float, lambda name, value, optional=False: check_fraction(name, value),
                 "a number in [0, 1)"),
}


def option(default=None, help=None, *, flag=None, check=None, choices=None, factory=None,
           **argparse_options):
    """A `TrainConfig` field with its command-line flag.

    Args:
        default: the value when not given (`factory` makes mutable ones).
        help: the flag's help.
        flag: the flag's name; default `--` and the field's name with dashes. `None`-valued
            `argparse_options["action"]` are argparse's own (`store_true`, `append`, ...).
        check: a name in `CHECKS`: the field's check and the flag's type.
        choices: the allowed values (or a function returning them, called when the parser is
            built, so that families registered by other packages are listed).
        argparse_options: passed to `add_argument` as they are (`metavar`, `action`, `const`,
            `required`), and `convert`: a function from the flag's value to the field's, or
            `keys`: `{key: help}` of a dict option with one flag a key (`--KEY`).
    """
    metadata = dict(help=help, flag=flag, check=check, choices=choices, argparse=argparse_options)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def parse_assignments(items, flag="--model-arg"):
    """`NAME=VALUE` items of a repeatable `flag` → `{NAME: VALUE}`, VALUE read as JSON or else
    kept as a plain string."""
    overrides = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{flag} expects NAME=VALUE, got {item!r}")
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name] = value
    return overrides


@dataclasses.dataclass
class TrainConfig:
    """Everything `keras_s2s.training.loop.train` needs; saved as the run's `config.json`."""

    arch: str = option("bahdanau", choices=architectures.names)
    init_from: str | None = option(
        None, "fine-tune: start from this trained or imported run's weights, model and "
        "tokenizers (the new run's tokenizer files are copies of its); options that would "
        "change the model's shape or vocabularies are refused", metavar="RUN")
    data: str = option("dates", "built-in task name (dates, reverse, copy) or TSV files (a path "
                       "or a quoted glob such as 'corpus/*.tsv')")
    out: str = option("runs/dates", "run directory to create", required=True)
    val: str | None = option(None, "TSV of validation pairs (default: a split of --data)")
    stream: bool = option(False, "stream the TSV files line by line (memory independent of "
                          "their size): validation split by a hash of each pair, vocabularies "
                          "from the first 100,000 training pairs, a bounded shuffle buffer")
    extra_data: str | None = option(
        None, "more training pairs (a path or a quoted glob), added after the validation split "
        "is carved from --data, so that scores stay --data's; pairs sharing a sentence with "
        "that split are left out", metavar="TSV")
    both_directions: bool = option(
        False, "also train on each training pair reversed (target → source): twice the pairs "
        "for a small corpus, one model learning both directions; needs --shared-vocab. "
        "Validation stays one way")
    source_column: int = option(0, check="non_negative_int")
    target_column: int = option(1, "TSV column of the target (Anki files put English in "
                                "column 0)", check="non_negative_int")
    on_error: str = option("raise", "count and skip malformed TSV lines instead of stopping",
                           flag="--skip-bad-lines", action="store_const", const="skip",
                           choices=("raise", "skip"))
    num_pairs: int = option(20000, "built-in tasks: number of training pairs to generate",
                            check="positive_int")
    task_options: dict = option(
        factory=dict, keys={"min_length": "reverse/copy: shortest sequence",
                            "max_length": "reverse/copy: longest sequence"},
        check="positive_int")
    validation_fraction: float = option(0.05, "without --val: the share of --data's pairs held "
                                        "out", check="fraction")
    validation_split: str = option(
        "random", "without --val: a random sample of --data's pairs, or whole groups of pairs "
        "that share a source or target sentence (for corpora with several translations of one "
        "sentence, as Tatoeba)", choices=VALIDATION_SPLITS)
    seed: int = option(0, check="non_negative_int")
    vocab_size: int | None = option(
        None, f"the most subwords a vocabulary learns (default: {DEFAULT_VOCAB_SIZE:,}, fewer "
        "without a word when the corpus holds fewer; a size asked for and not reached is a "
        "warning)", check="positive_int")
    tokenizer: str = option("wordpiece", "subword model: WordPiece, or a SentencePiece unigram "
                            "model (learned in seconds from raw text; runs in-graph)",
                            choices=TOKENIZER_KINDS)
    shared_vocab: bool = option(False, "one subword vocabulary for both sides")
    lowercase: bool = option(False)
    max_source_length: int = option(64, check="positive_int")
    max_target_length: int = option(64, check="positive_int")
    batch_size: int = option(64, check="positive_int")
    batch_tokens: int | None = option(
        None, "token-based batching: batches of at most N padded tokens (the longer side) from "
        "pairs of similar length, instead of --batch-size pairs", check="positive_int",
        metavar="N")
    epochs: int | None = option(
        None, "default: 4 for dates, 15 for reverse/copy, 30 for TSV files (with early "
        "stopping)", check="positive_int")
    learning_rate: float | None = option(
        None, "RNNs: Adam's rate (1e-3); Transformer: scale of the warm-up schedule (1.0)",
        check="positive_float")
    warmup_steps: int = option(1000, check="positive_int")
    decay: str = option("family", "the rate after warm-up: the family's (the Transformer's "
                        "inverse square root, constant for RNNs), or linear: to zero when the "
                        "time budget (or else the epochs) is spent, for budgeted training",
                        choices=DECAYS)
    label_smoothing: float = option(0.1, check="fraction")
    word_dropout: float = option(0.0, "in training, replace each input token by [UNK] with "
                                 "probability P (a regularizer for small corpora)",
                                 check="fraction", metavar="P")
    early_stopping_patience: int = option(3, "early stopping patience", flag="--patience",
                                          check="positive_int")
    time_budget_minutes: float | None = option(
        None, "stop training after this many minutes of wall-clock time (a resumed run starts "
        "the minutes afresh, and with them --decay linear's clock)", flag="--time-budget",
        check="positive_float", metavar="MINUTES")
    average_last: int = option(
        1, "save the mean of the weights of the N epochs that end at the best one (checkpoint "
        "averaging; 1: the best epoch's weights; all the epochs up to the best when it comes "
        "before epoch N)", check="positive_int", metavar="N")
    model: dict = option(
        factory=dict, help="override a model argument, e.g. units=512 or num_layers=2 "
        "(repeatable; VALUE is JSON or a plain string)", flag="--model-arg", action="append",
        metavar="NAME=VALUE", convert=parse_assignments)
    mixed_precision: str = option("auto", choices=("auto", "on", "off"))
    jit_compile: str = option(
        "auto", "compile the training step with XLA, batches padded to a few shapes (auto: on "
        "with a GPU, and on Keras's JAX backend)", flag="--xla", choices=("auto", "on", "off"))
    distribute: str = option(
        "auto", "auto: mirrored over a machine's GPUs when it has several; multi-worker: one "
        "worker of the TF_CONFIG cluster (docs/scale_out.md)", choices=DISTRIBUTE_CHOICES)

    def __post_init__(self):
        if self.epochs is None:
            self.epochs = DEFAULT_EPOCHS.get(self.data, DEFAULT_EPOCHS_FOR_FILES)
        self.validate()

    def validate(self):
        """Check each option, then the rules between options: a one-line ValueError naming
        what is wrong."""
        for field in dataclasses.fields(self):
            value, meta = getattr(self, field.name), field.metadata
            choices = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
            if field.name == "arch":
                architectures.get(value)  # an unknown name lists the known ones
            elif choices:
                check_choice(field.name, value, choices)
            if meta["check"] and "keys" in meta["argparse"]:
                for key, item in value.items():
                    CHECKS[meta["check"]][1](key, item)
            elif meta["check"]:
                CHECKS[meta["check"]][1](field.name, value,
                                         optional=field.default is None)
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
        if self.model.get("share_embeddings") and not self.shared_vocab:
            raise ValueError("share_embeddings needs one vocabulary for source and target "
                             "tokens: train with --shared-vocab")
        check_batch_tokens(self.batch_tokens,
                           max(self.max_source_length, self.max_target_length))
        check_positive_int("epochs", self.epochs)

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


#: The options a run started from another (`init_from`) takes from it: they fix the model's
#: shape and its vocabularies, so another value given with `init_from` is refused.
INHERITED = ("arch", "tokenizer", "vocab_size", "shared_vocab", "lowercase", "model")
#: Model arguments a fine-tuned run may set anew: they shape no weight.
FREE_MODEL_ARGUMENTS = ("dropout",)
#: Options taken from the run started from when left at their defaults (any value may be given).
INHERITED_DEFAULTS = ("max_source_length", "max_target_length")


def inherit(config, given=None):
    """`config` with the model, tokenizer and length options of the run `config.init_from`
    (a copy; `config` itself when it starts from no run).

    `given` names the options set explicitly (`given_options` of the command line): one of
    them that differs from the run's is refused even at its default value. Without it (the
    Python API) an option at its default value counts as not set.

    Raises:
        ValueError: one line naming the flag whose value would change the model's shape or
            vocabularies.
        FileNotFoundError: `init_from` is not a trained run.
    """
    if not config.init_from:
        return config
    from keras_s2s import run as run_files

    run_files.check_trained(config.init_from)
    start = TrainConfig.load(run_files.config_path(config.init_from))
    fields = {field.name: field for field in dataclasses.fields(TrainConfig)}
    values = {name: getattr(start, name) for name in INHERITED + INHERITED_DEFAULTS}
    explicit = given or set()
    for name in INHERITED:
        given, default = getattr(config, name), fields[name].default
        if name == "model":
            changed = [key for key, value in given.items() if key not in FREE_MODEL_ARGUMENTS
                       and (key not in start.model or start.model[key] != value)]
            what = f"--model-arg {changed[0]}" if changed else None
            values["model"] = {**start.model, **given}
        else:
            changed = given != values[name] if name in explicit else given not in (
                default, values[name])
            what = _flag(fields[name])
        if changed:
            raise ValueError(f"{what} cannot be given with --init-from: the model and its "
                             f"vocabularies are those of {config.init_from!r}")
    for name in INHERITED_DEFAULTS:
        if getattr(config, name) != fields[name].default:
            values[name] = getattr(config, name)
    return dataclasses.replace(config, **values)


def _flag(field):
    """The command-line flag of the `TrainConfig` field `field`."""
    return field.metadata["flag"] or "--" + field.name.replace("_", "-")


#: The namespace attribute where `add_arguments`' flags note that they were given.
GIVEN = "given_options"


def _noting(action, parser):
    """The argparse action class named `action` (None: store), also noting in the namespace
    that its flag was given: a flag given at its default value is then told from one not
    given."""
    base = parser._registry_get("action", action, action)

    class Noting(base):
        def __call__(self, parser, namespace, values, option_string=None):
            super().__call__(parser, namespace, values, option_string)
            given = getattr(namespace, GIVEN, None) or set()
            setattr(namespace, GIVEN, given | {self.dest.partition(".")[0]})

    return Noting


def given_options(args):
    """The names of the `TrainConfig` options whose flags the command line gave."""
    return getattr(args, GIVEN, None) or set()


def add_arguments(parser):
    """Add a flag to `parser` for every `TrainConfig` option."""
    for field in dataclasses.fields(TrainConfig):
        meta = field.metadata
        options = dict(meta["argparse"])
        convert, keys = options.pop("convert", None), options.pop("keys", None)
        if keys:  # one flag a key of a dict option
            for key, help in keys.items():
                parser.add_argument("--" + key.replace("_", "-"), dest=f"{field.name}.{key}",
                                    action=_noting(None, parser), help=help,
                                    type=_flag_type(meta["check"], key), metavar=key.upper())
            continue
        choices = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
        if field.type is bool:
            options.setdefault("action", "store_true")
        elif "action" not in options:
            options["type"] = _flag_type(meta["check"], field.name)
            options["choices"] = choices
        options.setdefault("default", None if convert else field.default)
        flag = _flag(field)
        if options.get("action") not in ("store_true", "store_const") and not choices:
            options.setdefault("metavar", flag[2:].replace("-", "_").upper())
        options["action"] = _noting(options.get("action"), parser)
        parser.add_argument(flag, dest=field.name, help=meta["help"], **options)


def from_arguments(args):
    """The `TrainConfig` of parsed `add_arguments` flags."""
    values = {}
    for field in dataclasses.fields(TrainConfig):
        options = field.metadata["argparse"]
        if "keys" in options:
            values[field.name] = {key: getattr(args, f"{field.name}.{key}")
                                  for key in options["keys"]
                                  if getattr(args, f"{field.name}.{key}") is not None}
        elif "convert" in options:
            values[field.name] = options["convert"](getattr(args, field.name))
        else:
            values[field.name] = getattr(args, field.name)
    return TrainConfig(**values)


def _flag_type(check, name):
    """The argparse type of an option: its check's, applied to the flag's text."""
    if check is None:
        return None
    kind, rule, expected = CHECKS[check]

    def parse(text):
        try:
            value = kind(text)
            rule(name, value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        return value

    return parse
