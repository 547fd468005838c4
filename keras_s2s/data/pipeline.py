"""The tf.data pipeline from sentence pairs to padded id batches for teacher forcing.

Sequence layout (each tokenizer's special ids: `keras_s2s.special_tokens`' unless its vocabulary
has its own, as an imported Marian vocabulary does; padding is `pad_id`, 0 unless so):

    source_ids     = tokens(source) + [END]      no START: the encoder needs no "go" signal,
                                                 and END tells it where the sentence stops
    target_in_ids  = [START] + tokens(target)    what the decoder reads
    target_out_ids = tokens(target) + [END]      what it must predict, one step ahead

`max_source_length` / `max_target_length` count these sequences with their special ids, so no
batch is ever longer than the limits (the positional encodings and fixed TFLite shapes rely on
it). Training drops the pairs that do not fit; inference (`encode_source`) truncates instead.
"""

import dataclasses
import logging
import math

import numpy as np
import tensorflow as tf

from keras_s2s.checks import check_batch_tokens, check_fraction, check_int
from keras_s2s.special_tokens import END_ID, PAD_ID, START_ID, UNK_ID

logger = logging.getLogger(__name__)

#: Pairs tokenized per `map` call: tokenizing a batch at once is far faster than one by one.
_TOKENIZE_BATCH_SIZE = 1024

#: At most this many length buckets; fewer when the data has fewer distinct lengths.
_NUM_BUCKETS = 8

#: With fixed shapes, the buckets above the quantiles' grow by this factor (see
#: `_bucket_boundaries`): a few more programs to compile, far less padding in the longest.
_TAIL_GROWTH = 1.3

#: Streamed pairs: the shuffle buffer, and the first pairs whose lengths set the buckets.
STREAM_SHUFFLE_BUFFER = 20_000
STREAM_LENGTH_SAMPLE = 10_000


@dataclasses.dataclass(frozen=True)
class DatasetStats:
    """What `make_dataset` kept and dropped.

    Attributes:
        num_pairs: pairs given.
        num_kept: pairs within the length limits, in the dataset.
        num_filtered: pairs dropped for exceeding `max_source_length` or `max_target_length`.
        longest_source: longest kept `source_ids` (with END).
        longest_target: longest kept `target_in_ids` (with START).
        steps_per_epoch: full batches' worth of the kept pairs (`ceil(num_kept / batch_size)`
            without `batch_tokens`): a pass of `repeat=True` (without repeat, each bucket's last
            batch may be smaller, so an epoch can have a few more).
        batches_per_pass: the batches of one pass without `repeat` (each bucket's last batch
            partial): the steps of an epoch of `fit`.
    """

    num_pairs: int
    num_kept: int
    num_filtered: int
    longest_source: int
    longest_target: int
    steps_per_epoch: int
    batches_per_pass: int


def make_dataset(pairs, source_tokenizer, target_tokenizer, batch_size, max_source_length,
                 max_target_length, shuffle=True, seed=0, bucket=True, cache=True, repeat=False,
                 batch_tokens=None, word_dropout=0.0, fixed_shapes=False):
    """Build the training dataset `((source_ids, target_in_ids), target_out_ids)` from pairs.

    Tokenizing runs as batched TF ops inside the pipeline. Pairs held in memory (a list) get one
    pass at build time that counts the lengths for `stats` (and fills the cache, so with
    `cache=True` tokenizing happens once in all). A stream (a `tf.data.Dataset`, e.g.
    `stream_tsv`) is never held: nothing is cached, the shuffle buffer holds
    `STREAM_SHUFFLE_BUFFER` pairs, the bucket boundaries come from the first
    `STREAM_LENGTH_SAMPLE` pairs, and `stats` is None (its size is unknown until read).

    Args:
        pairs: `(source, target)` string pairs: a list, or a `tf.data.Dataset` of scalar string
            pairs.
        source_tokenizer, target_tokenizer: `SubwordTokenizer`s (or anything whose
            `tokenize(strings)` returns `(batch, None)` ragged int ids).
        batch_size: pairs per batch (when `batch_tokens` is None).
        max_source_length, max_target_length: the longest `source_ids` / `target_in_ids`
            allowed, special ids included; longer pairs are dropped, counted and logged.
        shuffle: reshuffle the pairs every epoch (over the whole dataset).
        seed: seed of the shuffle; the same seed gives the same batches.
        bucket: batch pairs of similar length together (less padding) instead of in order.
        cache: keep the tokenized pairs in memory after the first pass (lists only).
        repeat: repeat forever (use `stats.steps_per_epoch` with `fit`).
        batch_tokens: token-based batching (fairseq's `--max-tokens`): each length bucket's
            batches hold as many pairs as fit `batch_tokens` padded tokens, counted on the
            longer side (rows × the bucket's longest sequence), instead of `batch_size` pairs;
            so short pairs make big batches and long ones small, and every step sees about
            the same number of tokens. Needs `bucket=True`.
        word_dropout: the probability that a token of `source_ids` or `target_in_ids` (not
            END or START, never the labels `target_out_ids`) is replaced by [UNK], drawn anew
            every epoch from `seed`: word dropout, a regularizer for small corpora (Sennrich &
            Zhang, 2019; as token replacement, Bowman et al., 2016).
        fixed_shapes: pad each batch to its bucket's longest length (each side capped by its
            limit, or by the longest kept pair when the pairs are held) instead of its own
            longest pair, and a bucket's last, partial batch to full size with rows of padding
            (which the masked loss and accuracy leave out): one batch shape a bucket, for
            backends that compile a program per shape (JAX, TensorFlow with XLA). Above the
            length quantiles, buckets then grow by `_TAIL_GROWTH` up to the longest pair.

    Returns:
        `(dataset, stats)`: batches of int32 `((source_ids (B, S), target_in_ids (B, T)),
        target_out_ids (B, T))` padded with 0, and a `DatasetStats` (None for a stream).

    Raises:
        ValueError: no pairs, invalid sizes, no pair within the length limits, or
            `batch_tokens` too small for the longest sequence allowed, or without buckets.
    """
    for name, value, smallest in (("batch_size", batch_size, 1),
                                  ("max_source_length", max_source_length, 2),
                                  ("max_target_length", max_target_length, 2)):
        check_int(name, value, smallest)
    check_batch_tokens(batch_tokens, max(max_source_length, max_target_length))
    check_fraction("word_dropout", word_dropout)
    if batch_tokens is not None and not bucket:
        raise ValueError("batch_tokens needs bucket=True (batches are sized per length bucket)")

    source_special, target_special = _special_ids(source_tokenizer), _special_ids(target_tokenizer)

    def encode_batch(sources, targets):
        source_ids = _append(source_tokenizer.tokenize(sources), source_special.end)
        target_ids = target_tokenizer.tokenize(targets)  # (batch, None)
        return (source_ids, _prepend(target_ids, target_special.start),
                _append(target_ids, target_special.end))

    limits = dict(max_source_length=max_source_length, max_target_length=max_target_length)
    if isinstance(pairs, tf.data.Dataset):  # a stream: never held, its size unknown
        sequences = _tokenized(pairs, encode_batch)
        lengths = _kept_lengths(*_lengths(sequences.take(STREAM_LENGTH_SAMPLE)),
                                seen=" (the first ones of the stream)", **limits)
        shuffle_buffer, stats = STREAM_SHUFFLE_BUFFER, None
    else:
        pairs = list(pairs)
        if not pairs:
            raise ValueError("pairs must hold at least one (source, target) pair.")
        sequences = _tokenized(tf.data.Dataset.from_tensor_slices(
            ([s for s, _ in pairs], [t for _, t in pairs])), encode_batch)
        if cache:
            sequences = sequences.cache()
        source_lengths, target_lengths = _lengths(sequences)
        lengths = _kept_lengths(source_lengths, target_lengths, **limits)
        shuffle_buffer = len(lengths)
    longest = (max(max_source_length, max_target_length) if isinstance(pairs, tf.data.Dataset)
               else int(lengths.max()))
    boundaries = (_bucket_boundaries(lengths, longest if fixed_shapes else None) if bucket
                  else [])
    batch_sizes = _bucket_batch_sizes(boundaries, max(max_source_length, max_target_length),
                                      batch_size, batch_tokens)
    if not isinstance(pairs, tf.data.Dataset):
        kept = (source_lengths <= max_source_length) & (target_lengths <= max_target_length)
        stats = DatasetStats(
            num_pairs=len(pairs), num_kept=len(lengths), num_filtered=len(pairs) - len(lengths),
            longest_source=int(source_lengths[kept].max(initial=0)),
            longest_target=int(target_lengths[kept].max(initial=0)),
            steps_per_epoch=_steps_per_epoch(lengths, boundaries, batch_sizes),
            batches_per_pass=_batches_per_pass(lengths, boundaries, batch_sizes))
    dataset = sequences.filter(
        lambda source, target_in, target_out: (tf.size(source) <= max_source_length)
        & (tf.size(target_in) <= max_target_length)
    )
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    padding = tuple(tf.constant(pad, spec.dtype) for pad, spec in zip(
        (source_special.pad, target_special.pad, target_special.pad), dataset.element_spec))
    if word_dropout:
        dataset = _drop_words(dataset, word_dropout, seed, source_special, target_special)
    if bucket:
        dataset = dataset.bucket_by_sequence_length(
            lambda source, target_in, target_out: tf.maximum(tf.size(source), tf.size(target_in)),
            bucket_boundaries=boundaries,
            bucket_batch_sizes=batch_sizes, padding_values=padding,
        )
    else:
        dataset = dataset.padded_batch(batch_size, padding_values=padding)
    if fixed_shapes:
        longest = ((stats.longest_source, stats.longest_target) if stats
                   else (max_source_length, max_target_length))
        dataset = dataset.map(_pad_to_bucket(boundaries, batch_sizes, *longest, padding))
    dataset = dataset.map(lambda source, target_in, target_out: ((source, target_in), target_out))
    if stats and not repeat:  # Keras then knows where an epoch ends, as with any sized input
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(stats.batches_per_pass))
    return dataset.prefetch(tf.data.AUTOTUNE), stats


def _tokenized(texts, encode_batch):
    """`(source, target)` string pairs → `(source_ids, target_in_ids, target_out_ids)` rows,
    tokenized in batches."""
    return (texts.batch(_TOKENIZE_BATCH_SIZE)
            .map(encode_batch, num_parallel_calls=tf.data.AUTOTUNE)
            .unbatch()
            .map(_as_dense))


def _kept_lengths(source_lengths, target_lengths, max_source_length, max_target_length,
                  seen=""):
    """The longer side's length of each pair within the limits; the others are counted in a
    warning (`seen` says which pairs were measured), and none kept is a ValueError."""
    kept = (source_lengths <= max_source_length) & (target_lengths <= max_target_length)
    num_kept = int(kept.sum())
    if num_kept < len(source_lengths):
        logger.warning(
            "Dropped %d of %d pairs%s longer than max_source_length=%d or max_target_length=%d "
            "(longest seen: source %d, target %d, special ids included).",
            len(source_lengths) - num_kept, len(source_lengths), seen, max_source_length,
            max_target_length, source_lengths.max(), target_lengths.max(),
        )
    if not num_kept:
        raise ValueError(
            f"No pair fits max_source_length={max_source_length} and "
            f"max_target_length={max_target_length}; the shortest source has "
            f"{source_lengths.min()} ids and the shortest target {target_lengths.min()}."
        )
    return np.maximum(source_lengths[kept], target_lengths[kept])


def _drop_words(dataset, rate, seed, source_ids, target_ids):
    """`dataset`'s inputs with each token but END/START replaced by [UNK] with probability
    `rate` (the `SpecialIds` of each side); a new draw every pass over the dataset, the same
    passes for the same `seed`."""
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def drop(sequences, draw):
        source, target_in, target_out = sequences
        seeds = tf.random.experimental.stateless_split(tf.stack([draw, 0]), 2)

        def replace(ids, keep_id, unk_id, pair_seed):
            dropped = (tf.random.stateless_uniform(tf.shape(ids), pair_seed) < rate) & (
                ids != keep_id)
            return tf.where(dropped, tf.constant(unk_id, ids.dtype), ids)

        return (replace(source, source_ids.end, source_ids.unk, seeds[0]),
                replace(target_in, target_ids.start, target_ids.unk, seeds[1]), target_out)

    return tf.data.Dataset.zip((dataset, draws)).map(drop, num_parallel_calls=tf.data.AUTOTUNE)


def encode_source(texts, tokenizer, max_length):
    """Source texts → int32 ids `(batch, time)` laid out as in training, for inference.

    Each text becomes `tokens + [END]`, truncated to `max_length` ids in all (END kept), and the
    batch is padded to its longest row (the tokenizer's `end_id` and `pad_id`: 3 and 0 unless
    its vocabulary has its own). Pure TF ops, so it also runs in a `tf.function`
    or an exported SavedModel.

    Args:
        texts: a list or 1-D string tensor.
        tokenizer: the source `SubwordTokenizer`.
        max_length: the most ids per row, END included (the model's `max_source_length`).
    """
    check_int("max_length", max_length, 2)
    texts = tf.convert_to_tensor(texts, dtype=tf.string)
    if texts.shape.rank != 1:
        raise ValueError(f"texts must be a list or 1-D string tensor, got shape {texts.shape}.")
    ids = tokenizer.tokenize(texts)  # (batch, None)
    ids = _append(ids[:, : max_length - 1], tokenizer.end_id)  # (batch, <= max_length)
    return ids.to_tensor(default_value=tokenizer.pad_id)  # (batch, time)


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """A tokenizer's padding, unknown, start and end ids."""

    pad: int
    unk: int
    start: int
    end: int


def _special_ids(tokenizer):
    """The `SpecialIds` of `tokenizer`: its own, or `keras_s2s.special_tokens`' when it has
    none (any object with a `tokenize` may be one)."""
    return SpecialIds(*(getattr(tokenizer, f"{name}_id", default) for name, default in (
        ("pad", PAD_ID), ("unk", UNK_ID), ("start", START_ID), ("end", END_ID))))


def _append(ids, token_id):
    """`(batch, None)` ragged ids with `token_id` added at the end of each row."""
    ends = tf.fill([ids.nrows(), 1], tf.constant(token_id, ids.dtype))
    return tf.concat([ids, ends], axis=1)


def _prepend(ids, token_id):
    """`(batch, None)` ragged ids with `token_id` added at the start of each row."""
    starts = tf.fill([ids.nrows(), 1], tf.constant(token_id, ids.dtype))
    return tf.concat([starts, ids], axis=1)


def _as_dense(*sequences):
    """Give `unbatch`'s rank-1 ragged rows back as plain tensors (`padded_batch` needs them)."""
    return sequences


def _lengths(sequences):
    """Lengths of `source_ids` and `target_in_ids` over the dataset, as numpy arrays."""
    source_lengths, target_lengths = [], []
    lengths = sequences.map(
        lambda source, target_in, target_out: (tf.size(source), tf.size(target_in))
    ).batch(_TOKENIZE_BATCH_SIZE)
    for source_batch, target_batch in lengths.as_numpy_iterator():
        source_lengths.append(source_batch)
        target_lengths.append(target_batch)
    if not source_lengths:
        raise ValueError("pairs must hold at least one (source, target) pair.")
    return np.concatenate(source_lengths), np.concatenate(target_lengths)


def _pad_to_bucket(boundaries, batch_sizes, longest_source, longest_target, padding):
    """A map of batches `(source, target_in, target_out)` padded with `padding` to the longest
    length of their bucket of `boundaries` (as `_bucket_counts` counts them; each side capped by
    its `longest_*`) and to its `batch_sizes` rows: rows of padding only, which the masked loss
    and accuracy leave out."""
    lowers = tf.constant(boundaries, tf.int32, shape=[len(boundaries)])
    uppers = tf.constant([bound - 1 for bound in boundaries]
                         + [max(longest_source, longest_target)], tf.int32)
    rows = tf.constant(batch_sizes, tf.int32)

    def pad(*batch):
        # A batch's pairs share one bucket, the one of its longest key (the longer side).
        bucket = tf.reduce_sum(tf.cast(
            lowers <= tf.maximum(tf.shape(batch[0])[1], tf.shape(batch[1])[1]), tf.int32))
        bound = uppers[bucket]
        lengths = (tf.minimum(bound, longest_source),) + (tf.minimum(bound, longest_target),) * 2
        return tuple(tf.pad(ids, [[0, rows[bucket] - tf.shape(ids)[0]],
                                  [0, length - tf.shape(ids)[1]]], constant_values=value)
                     for ids, length, value in zip(batch, lengths, padding))

    return pad


def _bucket_batch_sizes(boundaries, longest, batch_size, batch_tokens):
    """Pairs per batch in each bucket: `batch_size`, or as many as fit `batch_tokens` padded
    tokens at the bucket's longest length (bucket i holds lengths below `boundaries[i]`)."""
    if batch_tokens is None:
        return [batch_size] * (len(boundaries) + 1)
    return [batch_tokens // (upper - 1) for upper in boundaries] + [batch_tokens // longest]


def _steps_per_epoch(lengths, boundaries, batch_sizes):
    """Full batches' worth of the pairs of `lengths`, bucket by bucket, rounded up: a repeated
    dataset's buckets carry their remainders into the next pass, so this is its steps a pass
    (`ceil(len(lengths) / batch_size)` when every bucket has the same batch size)."""
    counts = _bucket_counts(lengths, boundaries, len(batch_sizes))
    return math.ceil(float(np.sum(counts / np.asarray(batch_sizes))) - 1e-9)


def _batches_per_pass(lengths, boundaries, batch_sizes):
    """The batches of one pass over the pairs of `lengths` without repeat: each bucket's pairs
    in batches of its size, the last one partial."""
    counts = _bucket_counts(lengths, boundaries, len(batch_sizes))
    return int(sum(math.ceil(count / size) for count, size in zip(counts, batch_sizes)))


def _bucket_counts(lengths, boundaries, num_buckets):
    """How many of `lengths` fall in each bucket of `boundaries` (as in
    `bucket_by_sequence_length`: bucket i holds boundaries[i-1] <= length < boundaries[i])."""
    return np.bincount(np.searchsorted(boundaries, lengths, side="right"),
                       minlength=num_buckets)


def _bucket_boundaries(lengths, longest=None):
    """Up to `_NUM_BUCKETS - 1` boundaries splitting `lengths` into buckets of similar size;
    with `longest`, more above them, `_TAIL_GROWTH` times apart up to `longest`, so that the
    last bucket's rare long pairs do not set the padded length of all its pairs."""
    quantiles = np.quantile(lengths, np.linspace(0, 1, _NUM_BUCKETS + 1)[1:-1])
    boundaries = sorted({int(q) + 1 for q in quantiles})
    while longest and math.ceil(boundaries[-1] * _TAIL_GROWTH) < longest:
        boundaries.append(math.ceil(boundaries[-1] * _TAIL_GROWTH))
    return boundaries
