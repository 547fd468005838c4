"""Carving a validation split out of a corpus held in memory: at random, or by groups.

Tatoeba-style corpora hold several translations of one sentence: 869 of kor-eng's 4,576 pairs
share their English side with another pair. A random split then puts one Korean version in
validation and another, with the same English, in training, and the validation score measures
recall of seen sentences. The grouped split holds out whole groups instead: two pairs are in one
group when they share their source or their target sentence (compared case-insensitively, with
whitespace collapsed), directly or through a chain of pairs.

>>> from keras_s2s.data.splits import split_pairs
>>> pairs = [("나는 간다", "I go."), ("난 간다", "I go."), ("고양이", "A cat."), ("개", "A dog.")]
>>> train, validation = split_pairs(pairs, 0.5, seed=0, grouped=True)
>>> len(train) + len(validation) == 4 and len(validation) >= 2
True
>>> all(target not in {t for _, t in train} for _, target in validation)
True
"""

import numpy as np

from keras_s2s.checks import check_fraction


def _key(text):
    return " ".join(text.casefold().split())


def pair_groups(pairs):
    """A group number for each pair: pairs sharing a source or a target share a group.

    Groups are numbered by their first pair, so the numbering depends only on the order of
    `pairs`.
    """
    parent = list(range(len(pairs)))

    def root(index):
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    first_with = {}
    for index, (source, target) in enumerate(pairs):
        for key in (("source", _key(source)), ("target", _key(target))):
            other = first_with.setdefault(key, index)
            a, b = root(index), root(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = [root(index) for index in range(len(pairs))]
    numbers = {}
    return [numbers.setdefault(r, len(numbers)) for r in roots]


def sharing_no_sentence(pairs, held_out):
    """The pairs of `pairs` whose source and target sentences are both absent from `held_out`'s
    (compared as the grouped split compares them), so adding them to training leaks nothing.

    >>> from keras_s2s.data.splits import sharing_no_sentence
    >>> sharing_no_sentence([("개", "A dog."), ("고양이", "A  CAT.")], [("새 고양이", "a cat.")])
    [('개', 'A dog.')]
    """
    sources = {_key(source) for source, _ in held_out}
    targets = {_key(target) for _, target in held_out}
    return [pair for pair in pairs
            if _key(pair[0]) not in sources and _key(pair[1]) not in targets]


def split_pairs(pairs, fraction, seed, grouped=False):
    """`(train, validation)`: about `fraction` of `pairs` (at least one) held out, seeded.

    Random: a seeded sample of pairs. Grouped: seeded whole groups (`pair_groups`) until the
    validation side holds at least `fraction` of the pairs (or all groups but one), so no
    sentence of a validation pair appears in training. A corpus too small to leave training
    pairs (one pair, or one group) is a ValueError.
    """
    check_fraction("validation_fraction", fraction)
    wanted = max(1, int(len(pairs) * fraction))
    rng = np.random.default_rng(seed)
    if not grouped:
        order = rng.permutation(len(pairs))
        if wanted >= len(pairs):
            raise ValueError(f"the corpus has {len(pairs)} pairs: too few to carve a "
                             f"validation split; pass --val")
        return [pairs[i] for i in order[wanted:]], [pairs[i] for i in order[:wanted]]
    groups = np.asarray(pair_groups(pairs), dtype=np.int64)
    order = rng.permutation(groups.max() + 1 if len(pairs) else 0)
    sizes = np.cumsum(np.bincount(groups)[order])
    if len(order) < 2:
        raise ValueError(f"the corpus has {len(pairs)} pairs in {len(order)} groups of pairs "
                         f"sharing a sentence: too few to carve a validation split; pass --val")
    held_out = np.isin(groups, order[:min(np.searchsorted(sizes, wanted) + 1, len(order) - 1)])
    return ([pair for pair, out in zip(pairs, held_out) if not out],
            [pair for pair, out in zip(pairs, held_out) if out])
