"""The pairs a run trains and validates on, as its configuration names them: a built-in task
or TSV files, held in memory or streamed, split into training and validation pairs.
"""

import logging

import tensorflow as tf

from keras_s2s.data import synthetic
from keras_s2s.data.splits import sharing_no_sentence, split_pairs
from keras_s2s.data.tsv import read_tsv, stream_tsv, tsv_files

logger = logging.getLogger(__name__)

#: A streamed corpus learns its vocabularies from its first this many training pairs (read from
#: every file in turn), so that memory stays bounded; see `load_pairs`.
VOCABULARY_SAMPLE_PAIRS = 100_000

def load_pairs(config):
    """Training and validation pairs of `config`: a built-in task or TSV files (a glob).

    In memory (lists of pairs) by default: the validation split is a seeded random sample, or
    seeded whole groups of pairs sharing a sentence (`keras_s2s.data.splits`), and training
    shuffles over the whole corpus. With `config.stream`, two `tf.data` streams (`stream_tsv`)
    whose memory does not depend on the corpus size: the validation split is by
    a hash of each pair, and the vocabularies are learned from the first
    `VOCABULARY_SAMPLE_PAIRS` training pairs (a reservoir sample would need a whole pass over
    the corpus before training starts; shuffle a corpus sorted by topic or length beforehand).
    Streaming is asked for, never switched on by size: it changes the split, the shuffle and
    so the results, which should not change because a file grew.

    `config.extra_data`'s pairs (another corpus, say) join the training pairs after the split is
    carved, so the validation split, and scores on it, stay those of `config.data`; extra pairs
    sharing a source or target sentence with the validation split are left out. With
    `config.both_directions` every training pair is added reversed as well (the bidirectional
    training of Niu, Denkowski & Carpuat 2018: the target language's sentences teach the shared
    encoder and embeddings too); the validation pairs stay one way.
    """
    train_pairs, validation_pairs = _split(config)
    if config.extra_data:
        extra = _read(config, config.extra_data, "--extra-data")
        kept = sharing_no_sentence(extra, validation_pairs)
        logger.info("--extra-data %s: %d training pairs added, %d left out (they share a "
                    "sentence with the validation split)", config.extra_data, len(kept),
                    len(extra) - len(kept))
        train_pairs = train_pairs + kept
    if config.both_directions:
        train_pairs = train_pairs + [(target, source) for source, target in train_pairs]
    return train_pairs, validation_pairs


def load_validation_pairs(config):
    """`load_pairs(config)`'s validation pairs, without reading `config.extra_data`."""
    return _split(config)[1]


def _split(config):
    """`config.data`'s training and validation pairs (see `load_pairs`)."""
    if config.validation_split == "grouped":
        where = ("--val is given" if config.val else "--stream splits by a hash of each pair"
                 if config.stream else f"{config.data!r} is a built-in task, whose validation "
                 "pairs are generated" if config.data in synthetic.TASKS else None)
        if where:
            raise ValueError(f"--validation-split grouped carves the split from TSV files held "
                             f"in memory, but {where}")
    if config.stream:
        return _stream(config)
    if config.data in synthetic.TASKS:
        train_pairs = synthetic.generate(config.data, config.num_pairs, seed=config.seed,
                                         **config.task_options)
        if config.val:
            return train_pairs, _read(config, config.val, "--val")
        num_validation = max(200, int(config.num_pairs * config.validation_fraction))
        validation_pairs = synthetic.generate(config.data, num_validation, seed=config.seed + 1,
                                              **config.task_options)
        return train_pairs, validation_pairs
    pairs = _read(config, config.data, "--data")
    if config.val:
        return pairs, _read(config, config.val, "--val")
    try:
        return split_pairs(pairs, config.validation_fraction, config.seed,
                           grouped=config.validation_split == "grouped")
    except ValueError as error:
        raise ValueError(f"{config.data}: {error}") from None


def _read(config, pattern, flag):
    """The pairs of the files that `pattern` (given as `flag`) names."""
    return [pair for path in _files(pattern, flag)
            for pair in read_tsv(path, source_column=config.source_column,
                                 target_column=config.target_column, on_error=config.on_error)]


def _files(pattern, flag):
    try:
        return tsv_files(pattern)
    except FileNotFoundError:
        if flag == "--data":
            raise FileNotFoundError(f"--data {pattern!r} is neither a built-in task "
                                    f"{synthetic.TASKS} nor a file or glob of files") from None
        raise FileNotFoundError(f"{flag} {pattern!r} names no file") from None


def _stream(config):
    if config.data in synthetic.TASKS:
        raise ValueError(f"--stream reads TSV files; {config.data!r} is a built-in task (held in "
                         f"memory)")

    def stream(pattern, flag, **split):
        _files(pattern, flag)
        return stream_tsv(pattern, source_column=config.source_column,
                          target_column=config.target_column, on_error=config.on_error, **split)

    if config.val:
        return stream(config.data, "--data"), stream(config.val, "--val")
    return tuple(stream(config.data, "--data", validation_fraction=config.validation_fraction,
                        part=part) for part in ("train", "validation"))


def vocabulary_pairs(pairs):
    """All of `pairs` held in memory; the first `VOCABULARY_SAMPLE_PAIRS` of a stream."""
    if isinstance(pairs, tf.data.Dataset):
        return [(source.decode(), target.decode()) for source, target in
                pairs.take(VOCABULARY_SAMPLE_PAIRS).as_numpy_iterator()]
    return pairs
