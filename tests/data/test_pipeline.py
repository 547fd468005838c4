import collections
import logging

import numpy as np
import pytest
import tensorflow as tf

from keras_s2s.data.pipeline import (DatasetStats, _bucket_boundaries, encode_source,
                                     make_dataset)
from keras_s2s.data.synthetic import generate
from keras_s2s.data.tokenizers import train_tokenizers
from keras_s2s.special_tokens import END_ID, PAD_ID, START_ID, UNK_ID

# Letters a..l are one token each, so a pair of n letters gives n source and n target ids.
PAIRS = generate("reverse", 200, seed=0, min_length=1, max_length=30, vocab_size=12)


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer, _ = train_tokenizers(PAIRS, vocab_size=100, shared=True)
    return tokenizer


def build(tokenizer, pairs=PAIRS, **overrides):
    options = dict(batch_size=16, max_source_length=32, max_target_length=32)
    options.update(overrides)
    return make_dataset(pairs, tokenizer, tokenizer, **options)


def unpad(row):
    row = list(row)
    while row and row[-1] == PAD_ID:
        row.pop()
    return row


def examples(dataset):
    """Every `(source, target_in, target_out)` of one epoch, unpadded, as tuples."""
    rows = []
    for (source, target_in), target_out in dataset:
        for s, ti, to in zip(source.numpy(), target_in.numpy(), target_out.numpy()):
            rows.append((tuple(unpad(s)), tuple(unpad(ti)), tuple(unpad(to))))
    return rows


def expected_examples(tokenizer, pairs):
    sources = tokenizer.tokenize([s for s, _ in pairs]).to_list()
    targets = tokenizer.tokenize([t for _, t in pairs]).to_list()
    return [(tuple(s + [END_ID]), tuple([START_ID] + t), tuple(t + [END_ID]))
            for s, t in zip(sources, targets)]


@pytest.mark.parametrize("bucket", [True, False])
def test_every_pair_once_with_start_end_and_zero_padding(tokenizer, bucket):
    dataset, stats = build(tokenizer, bucket=bucket)
    assert stats == DatasetStats(num_pairs=200, num_kept=200, num_filtered=0, longest_source=31,
                                 longest_target=31, steps_per_epoch=13,
                                 batches_per_pass=len(list(dataset)))
    assert stats.batches_per_pass == 13 if not bucket else stats.batches_per_pass > 13
    spec = dataset.element_spec
    assert [s.dtype for s in tf.nest.flatten(spec)] == [tf.int32] * 3
    assert [s.shape.as_list() for s in tf.nest.flatten(spec)] == [[None, None]] * 3
    for (source, target_in), target_out in dataset:
        assert source.shape[0] == target_in.shape[0] == target_out.shape[0] <= 16
        assert target_in.shape == target_out.shape
        # Padding only after the END id; START only first in target_in; END only in the outputs.
        for row in source.numpy():
            assert END_ID in row and not row[list(row).index(END_ID) + 1:].any()
        assert (target_in.numpy()[:, 0] == START_ID).all()
        assert not (target_in.numpy() == END_ID).any()
    assert collections.Counter(examples(dataset)) == collections.Counter(
        expected_examples(tokenizer, PAIRS))


def test_bucketing_groups_similar_lengths(tokenizer):
    def mean_padding(dataset):
        sources = [source.numpy() for (source, _), _ in dataset]
        return np.mean([(batch == PAD_ID).mean() for batch in sources])

    bucketed, _ = build(tokenizer, bucket=True)
    plain, _ = build(tokenizer, bucket=False)
    assert mean_padding(bucketed) < mean_padding(plain) / 2


@pytest.mark.parametrize("options", [dict(), dict(batch_tokens=160), dict(bucket=False)])
def test_fixed_shapes_give_one_batch_shape_a_bucket(tokenizer, options):
    """Each bucket's batches are padded to its longest length and full size (rows of padding
    only), each side within its limit: a pass has no more shapes than buckets, every pair once."""
    dataset, stats = build(tokenizer, fixed_shapes=True, max_source_length=20, **options)
    shapes = {(source.shape, target_in.shape, target_out.shape)
              for (source, target_in), target_out in dataset}
    longest = np.maximum([len(s.split()) + 1 for s, t in PAIRS], [len(t.split()) + 1
                                                                  for s, t in PAIRS])
    buckets = 1 if options.get("bucket") is False else len(
        _bucket_boundaries(longest[longest <= 20], longest=20)) + 1
    assert len(shapes) <= buckets < stats.batches_per_pass
    assert max(source[1] for source, _, _ in shapes) == stats.longest_source == 20
    assert max(target[1] for _, target, _ in shapes) == stats.longest_target
    kept = [pair for pair in PAIRS if len(pair[0].split()) < 20]
    assert collections.Counter(row for row in examples(dataset) if row[0]) == collections.Counter(
        expected_examples(tokenizer, kept))
    variable, _ = build(tokenizer, max_source_length=20, **options)
    assert len({source.shape for (source, _), _ in variable}) > len(shapes)


def test_filters_overlong_pairs_and_reports_them(tokenizer, caplog):
    lengths = np.array([len(s.split()) + 1 for s, _ in PAIRS])  # source ids with END
    with caplog.at_level(logging.WARNING, logger="keras_s2s.data.pipeline"):
        dataset, stats = build(tokenizer, max_source_length=16, max_target_length=20)
    expected_filtered = int((lengths > 16).sum())  # the targets have the same lengths
    assert stats.num_filtered == expected_filtered > 0
    assert stats.num_kept == 200 - expected_filtered
    assert stats.longest_source <= 16 and stats.longest_target <= 17
    assert f"Dropped {expected_filtered} of 200 pairs" in caplog.text
    rows = examples(dataset)
    assert len(rows) == stats.num_kept
    assert max(len(source) for source, _, _ in rows) <= 16


def test_same_seed_same_batches(tokenizer):
    def batches(seed):
        dataset, _ = build(tokenizer, seed=seed)
        return [source.numpy().tolist() for (source, _), _ in dataset]

    first = batches(seed=1)
    assert batches(seed=1) == first
    assert batches(seed=2) != first


def test_without_shuffle_or_bucketing_order_is_kept(tokenizer):
    dataset, _ = build(tokenizer, shuffle=False, bucket=False, cache=False)
    assert examples(dataset) == expected_examples(tokenizer, PAIRS)


def test_epochs_reshuffle_and_repeat_continues(tokenizer):
    dataset, stats = build(tokenizer, bucket=False)
    assert examples(dataset) != examples(dataset)  # a new order each epoch
    repeated, stats = build(tokenizer, repeat=True)
    batches = list(repeated.take(3 * stats.steps_per_epoch))
    assert len(batches) == 3 * stats.steps_per_epoch


def test_invalid_arguments(tokenizer):
    with pytest.raises(ValueError, match="pairs"):
        build(tokenizer, pairs=[])
    with pytest.raises(ValueError, match="batch_size"):
        build(tokenizer, batch_size=0)
    with pytest.raises(ValueError, match="max_target_length"):
        build(tokenizer, max_target_length=1)
    with pytest.raises(ValueError, match="No pair fits"):
        build(tokenizer, pairs=[("a b c", "c b a")], max_source_length=3)


def test_encode_source_matches_training_and_truncates(tokenizer):
    texts = ["a b c", "d", "a b c d e f g h"]
    ids = encode_source(texts, tokenizer, max_length=6)
    assert ids.dtype == tf.int32 and ids.shape == (3, 6)
    abc, d, _ = tokenizer.tokenize(texts).to_list()
    assert ids.numpy().tolist()[:2] == [abc + [END_ID, 0, 0], d + [END_ID, 0, 0, 0, 0]]
    assert ids.numpy()[2, -1] == END_ID  # truncated to 5 tokens, END kept

    dataset, _ = build(tokenizer, pairs=[(text, text) for text in texts[:2]],
                       shuffle=False, bucket=False)
    (source, _), _ = next(iter(dataset))
    np.testing.assert_array_equal(source.numpy(), ids.numpy()[:2, :4])


def test_encode_source_in_tf_function(tokenizer):
    encode = tf.function(lambda texts: encode_source(texts, tokenizer, max_length=4),
                         input_signature=[tf.TensorSpec([None], tf.string)])
    np.testing.assert_array_equal(encode(tf.constant(["a b c d e", "b"])).numpy(),
                                  encode_source(["a b c d e", "b"], tokenizer, max_length=4))
    with pytest.raises(ValueError, match="1-D"):
        encode_source("a b", tokenizer, max_length=4)
    with pytest.raises(ValueError, match="max_length"):
        encode_source(["a b"], tokenizer, max_length=1)


@pytest.mark.parametrize("cache, tokenized_per_pair", [(True, 1), (False, 3)])
def test_cache_tokenizes_once(tokenizer, cache, tokenized_per_pair):
    class CountingTokenizer:
        def __init__(self):
            self.count = tf.Variable(0)

        def tokenize(self, strings):
            self.count.assign_add(tf.size(strings))
            return tokenizer.tokenize(strings)

    source_tokenizer = CountingTokenizer()
    dataset, _ = make_dataset(PAIRS, source_tokenizer, tokenizer, batch_size=16,
                              max_source_length=32, max_target_length=32, cache=cache)
    for _ in range(2):
        examples(dataset)
    assert int(source_tokenizer.count.numpy()) == tokenized_per_pair * len(PAIRS)


def test_token_batches_hold_at_most_batch_tokens_padded_tokens(tokenizer):
    """Token-based batching: every pair once; each batch's padded size (rows × longest side)
    within the budget; short pairs in big batches, long ones in small."""
    dataset, stats = build(tokenizer, batch_tokens=96)
    rows = examples(dataset)
    assert collections.Counter(rows) == collections.Counter(expected_examples(tokenizer, PAIRS))
    sizes = []
    for (source, target_in), _ in dataset:
        padded = max(source.shape[1], target_in.shape[1])
        assert source.shape[0] * padded <= 96
        sizes.append((padded, source.shape[0]))
    assert max(size for length, size in sizes if length <= 8) >= 96 // 8
    assert max(size for length, size in sizes if length >= 28) <= 96 // 28
    # Full batches' worth, bucket by bucket: more steps than 200 pairs / (96 // 32) would
    # suggest for the longest, fewer than one pair a step.
    assert 200 // 32 < stats.steps_per_epoch < len(sizes) + 8
    assert stats.batches_per_pass == len(sizes)


@pytest.mark.parametrize("overrides, message", [
    (dict(batch_tokens=20), "batch_tokens=20 cannot hold one sequence of the longest length "
                            "allowed \\(32"),
    (dict(batch_tokens=0), "batch_tokens must be a positive int"),
    (dict(batch_tokens=64, bucket=False), "batch_tokens needs bucket=True"),
])
def test_bad_batch_tokens_are_refused(tokenizer, overrides, message):
    with pytest.raises(ValueError, match=message):
        build(tokenizer, **overrides)


def test_word_dropout_replaces_input_tokens_by_unk_anew_each_epoch(tokenizer):
    """Word dropout: about `rate` of the input tokens (never START or END) become [UNK], each in
    place; the labels never change; a new draw every epoch, the same draws for the same seed."""
    clean = {target_out: (source, target_in)
             for source, target_in, target_out in expected_examples(tokenizer, PAIRS)}
    dataset, _ = build(tokenizer, word_dropout=0.3, seed=7)
    first, second = examples(dataset), examples(dataset)
    dropped = eligible = 0
    for source, target_in, target_out in first:
        clean_source, clean_target_in = clean[target_out]
        for noisy, original, kept_id in ((source, clean_source, END_ID),
                                         (target_in, clean_target_in, START_ID)):
            assert len(noisy) == len(original)
            for token, original_token in zip(noisy, original):
                assert token in (original_token, UNK_ID)
                if original_token == kept_id:
                    assert token == kept_id
                else:
                    eligible += 1
                    dropped += token != original_token
    assert collections.Counter(row[2] for row in first) == collections.Counter(
        row[2] for row in expected_examples(tokenizer, PAIRS))
    assert abs(dropped / eligible - 0.3) < 0.03, dropped / eligible
    assert sorted(first) != sorted(second)
    assert sorted(examples(build(tokenizer, word_dropout=0.3, seed=7)[0])) == sorted(first)
    with pytest.raises(ValueError, match="word_dropout"):
        build(tokenizer, word_dropout=1.5)
