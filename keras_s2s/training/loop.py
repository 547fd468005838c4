"""The training loop: `train`, the whole recipe from data to run directory, and its callbacks
(time budget, history across resumptions). The pairs it reads come from
`keras_s2s.data.corpus`; what it optimizes (loss, metric, schedule, optimizers) is in
`keras_s2s.training.objectives`.
"""

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings

import keras
import tensorflow as tf

from keras_s2s import architectures, run as run_files
from keras_s2s.training import averaging, multi_worker
from keras_s2s.training.config import TrainConfig, inherit
from keras_s2s.data.corpus import load_pairs, load_validation_pairs, vocabulary_pairs
from keras_s2s.data.pipeline import encode_source, make_dataset
from keras_s2s.decoding import Greedy
from keras_s2s.data.tokenizers import train_tokenizers
from keras_s2s.training.objectives import (LinearDecay, TransformerSchedule,
                                           compile_for_training)
from keras_s2s.plotting import plot_history

logger = logging.getLogger(__name__)

#: A vocabulary smaller than this share of the `--vocab-size` asked for is a warning.
VOCABULARY_SHORTFALL_WARNED = 0.9


class TimeBudget(keras.callbacks.Callback):
    """Stop training once `seconds` of wall-clock time have passed on `clock` (checked after
    each batch), so that architectures can be compared at an equal training budget."""

    def __init__(self, seconds, clock=time.monotonic):
        super().__init__()
        if seconds <= 0:
            raise ValueError(f"the time budget must be positive, got {seconds!r} seconds")
        self.seconds = seconds
        self.clock = clock

    def on_train_begin(self, logs=None):
        self._deadline = self.clock() + self.seconds

    def on_train_batch_end(self, batch, logs=None):
        if self.clock() > self._deadline:
            logger.info("time budget of %.0f s spent: stopping", self.seconds)
            self.model.stop_training = True


class EpochHistory(keras.callbacks.Callback):
    """Keep every epoch's metrics in `path` (JSON), across interrupted and resumed runs.

    `keras.callbacks.History` only knows the epochs of the current `fit`; after a resume
    (`BackupAndRestore`) the run's history would lose the epochs before the restart. The first
    epoch a `fit` runs tells where it resumed, so anything recorded after it (an epoch that
    ended but was not backed up) is dropped before it is recorded again.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.history = {}

    def on_train_begin(self, logs=None):
        self._resumed_at = None
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as file:
                self.history = json.load(file)

    def on_epoch_begin(self, epoch, logs=None):
        if self._resumed_at is None:
            self._resumed_at = epoch
            self.history = {name: values[:epoch] for name, values in self.history.items()}

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(float(value))
        temporary = f"{self.path}.partial"
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(self.history, file, indent=2)
        os.replace(temporary, self.path)


def accelerator_settings(config):
    """`(mixed_precision, jit_compile)` of `config`: mixed precision defaults to on with a GPU,
    and compiling the step with XLA too, or always on Keras's JAX backend, whose only compiled
    path it is (without it JAX runs the step op by op)."""
    has_gpu = bool(tf.config.list_physical_devices("GPU"))

    def resolve(flag, default):
        return default if flag == "auto" else flag == "on"

    return (resolve(config.mixed_precision, has_gpu),
            resolve(config.jit_compile, has_gpu or keras.backend.backend() == "jax"))


def make_datasets(config, source_tokenizer, target_tokenizer, train_pairs, validation_pairs,
                  fixed_shapes):
    """The run's training and validation datasets (`make_dataset`) and the training data's
    stats. `fixed_shapes` pads batches to their length bucket's longest: a compiled step
    (`jit_compile`) compiles a program per batch shape, and so only a few."""
    dataset_args = dict(source_tokenizer=source_tokenizer, target_tokenizer=target_tokenizer,
                        batch_size=config.batch_size, batch_tokens=config.batch_tokens,
                        max_source_length=config.max_source_length,
                        max_target_length=config.max_target_length, fixed_shapes=fixed_shapes)
    train_data, train_stats = make_dataset(train_pairs, shuffle=True, seed=config.seed,
                                           word_dropout=config.word_dropout, **dataset_args)
    validation_data, _ = make_dataset(validation_pairs, shuffle=False, **dataset_args)
    return train_data, validation_data, train_stats


def _strategy(config):
    """MirroredStrategy over all GPUs (or, when asked for without GPUs, all logical CPUs)."""
    gpus = tf.config.list_logical_devices("GPU")
    if config.distribute == "mirrored" or (config.distribute == "auto" and len(gpus) > 1):
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    return tf.distribute.get_strategy()


def _prepare_run_dir(config):
    """Tokenizers of the run: learned and saved for a new run, read back for a resumed one.

    Returns `(source_tokenizer, target_tokenizer, train_pairs, validation_pairs, created)`,
    `created` listing what this call wrote (removed again if the run fails before its first
    backup, so a failed start never leaves a directory that looks resumable).
    """
    run_dir = config.out
    if os.path.exists(run_files.model_path(run_dir)):
        raise FileExistsError(
            f"{run_dir!r} already holds a trained model; choose another output directory")
    saved_config = run_files.config_path(run_dir)
    resuming = os.path.exists(saved_config)
    if resuming:
        differences = TrainConfig.load(saved_config).differences(config)
        if differences:
            listed = ", ".join(f"{name} {old!r} → {new!r}"
                               for name, (old, new) in sorted(differences.items()))
            raise ValueError(f"{run_dir!r} holds an interrupted run with other settings "
                             f"({listed}); resume it with its own settings or choose another "
                             f"--out")
    elif os.path.isdir(run_dir) and os.listdir(run_dir):
        existing = sorted(os.listdir(run_dir))
        raise FileExistsError(f"{run_dir!r} is not empty ({', '.join(existing[:5])}) and is "
                              f"not a run to resume; choose an empty or new --out")
    train_pairs, validation_pairs = load_pairs(config)
    if resuming:
        logger.info("resuming the interrupted run in %s", run_dir)
        return (*run_files.load_tokenizers(run_dir), train_pairs, validation_pairs, [])
    created = [] if os.path.isdir(run_dir) else [run_dir]
    os.makedirs(run_dir, exist_ok=True)
    before = set(os.listdir(run_dir))
    try:
        source_tokenizer, target_tokenizer = _learn_tokenizers(config, train_pairs)
        if config.init_from:  # byte for byte: the weights belong to those files
            run_files.copy_tokenizers(config.init_from, run_dir)
        else:
            run_files.save_tokenizers(run_dir, source_tokenizer, target_tokenizer)
        config.save(saved_config)  # last: a directory with a config is a run
    finally:
        created += [os.path.join(run_dir, name) for name in set(os.listdir(run_dir)) - before]
    return source_tokenizer, target_tokenizer, train_pairs, validation_pairs, created


def _learn_tokenizers(config, train_pairs):
    """The run's two tokenizers, learned from `train_pairs` (the same on every worker).

    A vocabulary well short of a `--vocab-size` asked for is a warning: the WordPiece learner
    keeps only subwords seen about 10 times, so a small corpus caps it, and a larger size
    changes nothing. A run started from another (`init_from`) has that run's tokenizers."""
    if config.init_from:
        return run_files.load_tokenizers(config.init_from)
    tokenizers = train_tokenizers(vocabulary_pairs(train_pairs), config.vocabulary_size(),
                                  shared=config.shared_vocab, lowercase=config.lowercase,
                                  kind=config.tokenizer)
    learned = max(tokenizer.vocabulary_size for tokenizer in tokenizers)
    if config.vocab_size and learned < VOCABULARY_SHORTFALL_WARNED * config.vocab_size:
        logger.warning("--vocab-size %d was asked, but the vocabulary learned from the training "
                       "pairs has %d tokens: they hold no more frequent subwords, so a larger "
                       "--vocab-size changes nothing.", config.vocab_size, learned)
    return tokenizers


def _remove(paths):
    """Remove what a failed start created (files and the directories it made, deepest first)."""
    for path in reversed(sorted(paths)):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)


def train(config, verbose="auto"):
    """Train `config` into `config.out`; an interrupted run in the same directory resumes.

    A resume must have the interrupted run's settings (only `epochs` and the time budget may
    change). `verbose` is passed to `fit` (Keras progress bars). Returns every epoch's metrics
    (those before a resume too). The run directory's layout is `keras_s2s.run`'s.

    With `config.distribute == "multi-worker"` this process is one worker of the cluster in
    `TF_CONFIG` (`keras_s2s.training.multi_worker`): only the chief writes `config.out`; the others
    learn the same vocabularies from the same data, which is checked, and return the history.

    With `config.init_from`, training starts from that run's weights, model options and
    tokenizers (`keras_s2s.training.config.inherit`).
    """
    config = inherit(config)
    cluster = strategy = None
    if config.distribute == "multi-worker":
        cluster = multi_worker.Cluster.from_environment()
        strategy = multi_worker.create_strategy()  # first: before any other TensorFlow work
    keras.utils.set_random_seed(config.seed)
    if cluster and not cluster.is_chief:  # the chief checks and writes the run directory
        train_pairs, validation_pairs = load_pairs(config)
        return _fit(config, *_learn_tokenizers(config, train_pairs), train_pairs,
                    validation_pairs, verbose, cluster, strategy)
    source_tokenizer, target_tokenizer, train_pairs, validation_pairs, created = (
        _prepare_run_dir(config))
    run_dir = config.out
    try:
        return _fit(config, source_tokenizer, target_tokenizer, train_pairs, validation_pairs,
                    verbose, cluster, strategy)
    except BaseException:
        if created and not os.path.exists(os.path.join(run_dir, run_files.BACKUP)):
            logger.info("training failed before its first backup: removing %s", created)
            _remove(created)
        raise


def _callbacks(config, write_dir, history, optimizer, steps_per_epoch, clock=time.monotonic):
    """The callbacks of a run: best weights, early stopping, history, TensorBoard's logs and
    the time budget (all writing under `write_dir`, the time budget read on `clock`), and with
    `config.decay == "linear"` the decay from `optimizer`'s rate over the budget (the time
    budget, and `steps_per_epoch` · epochs when the epochs' size is known). Every worker of a
    cluster runs them all (some read variables summed over the workers, a collective)."""
    callbacks = [
        history,
        keras.callbacks.ModelCheckpoint(
            os.path.join(write_dir, run_files.BEST_WEIGHTS), monitor="val_loss",
            save_best_only=True, save_weights_only=True),
        keras.callbacks.EarlyStopping(monitor="val_loss",
                                      patience=config.early_stopping_patience,
                                      restore_best_weights=True),
    ]
    if config.average_last > 1:  # the best epoch is at most `patience` epochs before the last
        callbacks.append(averaging.EpochCheckpoints(
            os.path.join(write_dir, run_files.CHECKPOINTS),
            keep=config.average_last + config.early_stopping_patience))
    callbacks.append(keras.callbacks.TensorBoard(os.path.join(write_dir, run_files.LOGS)))
    seconds = 60 * config.time_budget_minutes if config.time_budget_minutes else None
    if seconds:
        callbacks.append(TimeBudget(seconds, clock))
    if config.decay == "linear":  # first: its rate goes into the logs the others record
        callbacks.insert(0, LinearDecay(
            float(keras.ops.convert_to_numpy(optimizer.learning_rate)), config.warmup_steps,
            seconds=seconds, steps_per_epoch=steps_per_epoch,
            epochs=config.epochs if steps_per_epoch else None, clock=clock))
    os.makedirs(os.path.dirname(os.path.join(write_dir, run_files.BEST_WEIGHTS)),
                exist_ok=True)
    return callbacks


def _fit(config, source_tokenizer, target_tokenizer, train_pairs, validation_pairs, verbose,
         cluster=None, strategy=None):
    """Build, train and (on the chief, or without a cluster) save the model of `config`."""
    run_dir = config.out
    writes_run = cluster is None or cluster.is_chief
    mixed_precision, jit_compile = accelerator_settings(config)
    train_data, validation_data, train_stats = make_datasets(
        config, source_tokenizer, target_tokenizer, train_pairs, validation_pairs,
        fixed_shapes=jit_compile)
    logger.info("training data: %s", train_stats or f"streamed from {config.data}")
    if cluster:
        multi_worker.check_same_everywhere(
            strategy, "vocabularies", [source_tokenizer.vocabulary,
                                       target_tokenizer.vocabulary])
        train_data = multi_worker.distribute(strategy, train_data)
        validation_data = multi_worker.distribute(strategy, validation_data)
    strategy = strategy or _strategy(config)
    global_policy = keras.mixed_precision.global_policy()
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    write_dir = run_dir if writes_run else tempfile.mkdtemp(prefix="keras_s2s_worker_")
    history = EpochHistory(os.path.join(write_dir, run_files.HISTORY))
    try:
        # Under a multi-worker strategy the model is made outside its scope (its weights are
        # made inside): Keras 3.15's `fit` builds a model made in the scope from the first
        # batch reduced over the workers, which fails (docs/scale_out.md).
        with contextlib.nullcontext() if cluster else strategy.scope():
            model = config.build_model(source_tokenizer.vocabulary_size,
                                       target_tokenizer.vocabulary_size)
        with strategy.scope():
            model.build()  # BackupAndRestore needs the weights before fit
            if config.init_from:  # a resumed run's backup replaces them in fit
                model.set_weights(run_files.Run.open(config.init_from).model.get_weights())
            optimizer = architectures.get(config.arch).make_optimizer(model, config)
            compile_for_training(model, optimizer, config.label_smoothing,
                                 jit_compile=jit_compile, pad_id=target_tokenizer.pad_id)
        backup_dir = os.path.join(run_dir, run_files.BACKUP)
        if cluster:
            multi_worker.reduce_logs_across_workers(model)
            backup = multi_worker.WorkerBackup(backup_dir, cluster, strategy)
        else:
            backup = keras.callbacks.BackupAndRestore(backup_dir)
        callbacks = _callbacks(
            config, write_dir, history, optimizer=optimizer,
            steps_per_epoch=train_stats.batches_per_pass if train_stats else None,
            clock=multi_worker.SharedClock(strategy) if cluster else time.monotonic)
        with (warnings.catch_warnings(), strategy.scope(),
              multi_worker.worker_loss_as_connection_error() if cluster
              else contextlib.nullcontext()):
            if not train_stats or cluster:
                # A stream, or a cluster's batches, have no known length: Keras learns where
                # its epoch ends when the data runs out, and warns that it did, each epoch.
                warnings.filterwarnings("ignore", message="Your input ran out of data")
            model.fit(train_data, validation_data=validation_data, epochs=config.epochs,
                      callbacks=[backup, *callbacks], shuffle=False,
                      verbose=verbose if writes_run else 0)
            # Every worker of a cluster does all that reads the model (some of its variables
            # are read through collectives), in the same order, each into its `write_dir`.
            if config.average_last > 1:
                averaging.average_run(model, write_dir, config.average_last, validation_data,
                                      fewer_if_early=True)
            _warn_if_warm_up_unfinished(config, optimizer)
        _warn_if_silent(model, validation_pairs, source_tokenizer, target_tokenizer, config)
        model.save(run_files.model_path(write_dir))
        if writes_run and history.history:
            plot_history(history.history, os.path.join(run_dir, run_files.CURVES))
    finally:
        keras.mixed_precision.set_global_policy(global_policy)
        if not writes_run:
            shutil.rmtree(write_dir, ignore_errors=True)
    return history.history


def _warn_if_warm_up_unfinished(config, optimizer):
    """Warn when training ended before the learning rate's warm-up did (a short time budget or
    few epochs): the model never trained at its full rate."""
    schedule = getattr(optimizer, "_learning_rate", None)  # Keras keeps the schedule there
    warms_up = config.decay == "linear" or isinstance(schedule, TransformerSchedule)
    steps = int(keras.ops.convert_to_numpy(optimizer.iterations))
    if warms_up and steps < config.warmup_steps:
        logger.warning("training ended after %d steps, before the %d steps of the learning "
                       "rate's warm-up: the model never trained at its full rate (lower "
                       "--warmup-steps, or train longer)", steps, config.warmup_steps)


#: Validation sources decoded after training to see whether the model says anything at all.
SILENCE_PROBE = 32


def _warn_if_silent(model, validation_pairs, source_tokenizer, target_tokenizer, config):
    """Warn when greedy search gives empty outputs for most of the first validation sources:
    the model has not learned the task (it only predicts the end token)."""
    if isinstance(validation_pairs, tf.data.Dataset):
        validation_pairs = [(source.decode(), target) for source, target in
                            validation_pairs.take(SILENCE_PROBE).as_numpy_iterator()]
    sources = [source for source, _ in validation_pairs[:SILENCE_PROBE] if source.strip()]
    if not sources:
        return
    source_ids = encode_source(sources, source_tokenizer, config.max_source_length)
    result = Greedy().decode(model, source_ids, config.max_target_length)
    texts = target_tokenizer.detokenize(result["tokens"]).numpy()
    empty = sum(not text.strip() for text in texts)
    if empty > len(texts) // 2:
        logger.warning("the trained model translates %d of %d validation sentences as nothing: "
                       "it has not learned the task (train longer: --epochs, --time-budget)",
                       empty, len(texts))


def average(run, last):
    """Save the mean of the weights of a run's last `last` epochs up to its best as its model
    (`keras_s2s.training.averaging`); the run must have kept them (`--average-last`).

    `run` is a `keras_s2s.run.Run` or its directory. Returns the averaging's report (the epochs,
    and the validation loss of the mean beside the best epoch's). The run's `config.json` then
    records `average_last = last`.
    """
    run = run_files.Run.of(run)
    config, model = run.config, run.model
    validation_data, _ = make_dataset(
        load_validation_pairs(config), source_tokenizer=run.source_tokenizer,
        target_tokenizer=run.target_tokenizer, batch_size=config.batch_size,
        batch_tokens=config.batch_tokens, max_source_length=config.max_source_length,
        max_target_length=config.max_target_length, shuffle=False)
    compile_for_training(model, "adam", config.label_smoothing, jit_compile=False,
                         pad_id=run.target_tokenizer.pad_id)
    report = averaging.average_run(model, run.directory, last, validation_data)
    partial = run_files.model_path(run.directory) + ".partial.keras"
    model.save(partial)
    os.replace(partial, run_files.model_path(run.directory))
    config.average_last = last
    config.save(run_files.config_path(run.directory))
    return report
