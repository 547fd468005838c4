"""The validation splits: the grouped split against connected components found by brute force,
the split a user asks for with `keras-s2s train --validation-split grouped`, and the extra
training pairs of `--extra-data`, which must not reach into it."""

import itertools

import pytest
from hypothesis import given, settings, strategies as st

from keras_s2s.training.config import TrainConfig
from keras_s2s.data.splits import pair_groups, sharing_no_sentence, split_pairs
from keras_s2s.data.corpus import load_pairs
from tests.test_cli_errors import assert_one_line_error, run_main

SENTENCES = st.sampled_from(["a", "b", "c", "A", "d e", "d  e", "f"])
PAIRS = st.lists(st.tuples(SENTENCES, SENTENCES), min_size=1, max_size=12)


def same(x, y):
    return " ".join(x.casefold().split()) == " ".join(y.casefold().split())


def brute_force_components(pairs):
    """Connected components of "shares its source or its target", by repeated merging."""
    components = [{i} for i in range(len(pairs))]
    merged = True
    while merged:
        merged = False
        for a, b in itertools.combinations(range(len(components)), 2):
            if any(same(pairs[i][0], pairs[j][0]) or same(pairs[i][1], pairs[j][1])
                   for i in components[a] for j in components[b]):
                components[a] |= components.pop(b)
                merged = True
                break
    return sorted(sorted(c) for c in components)


@settings(max_examples=200, deadline=None)
@given(PAIRS)
def test_groups_are_the_connected_components(pairs):
    groups = pair_groups(pairs)
    found = sorted(sorted(i for i, g in enumerate(groups) if g == group) for group in set(groups))
    assert found == brute_force_components(pairs)


@settings(max_examples=200, deadline=None)
@given(PAIRS, st.floats(0.01, 0.9), st.integers(0, 5))
def test_grouped_split_shares_no_sentence_with_training(pairs, fraction, seed):
    try:
        train, validation = split_pairs(pairs, fraction, seed, grouped=True)
    except ValueError as error:  # one group only: nothing can stay in training
        assert len(set(pair_groups(pairs))) == 1 and "too few" in str(error)
        return
    assert sorted(train + validation) == sorted(pairs) and train and validation
    if len(set(pair_groups(validation))) < len(set(pair_groups(pairs))) - 1:  # could take more
        assert len(validation) >= max(1, int(len(pairs) * fraction))
    for (s, t), (s2, t2) in itertools.product(validation, train):
        assert not same(s, s2) and not same(t, t2)


@settings(max_examples=200, deadline=None)
@given(PAIRS, PAIRS)
def test_pairs_sharing_no_sentence_are_those_brute_force_keeps(pairs, held_out):
    expected = [(s, t) for s, t in pairs
                if not any(same(s, s2) or same(t, t2) for s2, t2 in held_out)]
    assert sharing_no_sentence(pairs, held_out) == expected


def write_tatoeba_like(path):
    """Eight English sentences, each with three Korean versions: a random split leaks."""
    lines = [f"한국어 {i} 버전 {v}\tEnglish sentence {i}." for i in range(8) for v in range(3)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_grouped_split_of_a_run_holds_out_whole_groups(tmp_path, capsys):
    data = write_tatoeba_like(tmp_path / "pairs.tsv")
    out = tmp_path / "run"
    status, _, err = run_main(
        ["train", "--arch", "transformer", "--data", str(data), "--out", str(out),
         "--epochs", "1", "--vocab-size", "80", "--validation-split", "grouped",
         "--validation-fraction", "0.2", "--model-arg", "num_layers=1",
         "--model-arg", "d_model=16", "--model-arg", "num_heads=2", "--model-arg", "d_ff=32"],
        capsys)
    assert status == 0, err
    config = TrainConfig.load(out / "config.json")
    assert config.validation_split == "grouped"
    train, validation = load_pairs(config)
    assert len(validation) >= 24 * 0.2 and len(validation) % 3 == 0
    assert not {t for _, t in validation} & {t for _, t in train}
    config.validation_split = "random"  # the same corpus split at random leaks
    train, validation = load_pairs(config)
    assert {t for _, t in validation} & {t for _, t in train}


@pytest.mark.parametrize("extra, fragment", [
    (["--stream"], "--stream splits by a hash of each pair"),
    (["--val", "VAL"], "--val is given"),
])
def test_a_grouped_split_that_cannot_be_carved_is_one_line(extra, fragment, tmp_path, capsys):
    data = write_tatoeba_like(tmp_path / "pairs.tsv")
    extra = [str(data) if item == "VAL" else item for item in extra]
    status, _, err = run_main(["train", "--data", str(data), "--out", str(tmp_path / "run"),
                               "--validation-split", "grouped", *extra], capsys)
    assert status == 2
    assert_one_line_error(err, fragment)
    assert not (tmp_path / "run").exists()


def test_a_grouped_split_of_a_built_in_task_is_one_line(tmp_path, capsys):
    status, _, err = run_main(["train", "--data", "dates", "--out", str(tmp_path / "run"),
                               "--validation-split", "grouped"], capsys)
    assert status == 2
    assert_one_line_error(err, "'dates' is a built-in task")


def test_one_group_cannot_be_split(tmp_path, capsys):
    data = tmp_path / "one.tsv"
    data.write_text("가\tA.\n나\tA.\n다\tA.\n", encoding="utf-8")
    status, _, err = run_main(["train", "--data", str(data), "--out", str(tmp_path / "run"),
                               "--validation-split", "grouped"], capsys)
    assert status == 2
    assert_one_line_error(err, "3 pairs in 1 groups", "pass --val")


def test_extra_data_trains_on_more_pairs_and_scores_on_the_same_split(tmp_path, capsys):
    """`--extra-data`: its pairs reach training and the vocabulary; the validation split is
    still `--data`'s, and extra pairs sharing a sentence with it are left out."""
    data = write_tatoeba_like(tmp_path / "pairs.tsv")
    alone = TrainConfig(data=str(data), validation_split="grouped", validation_fraction=0.2)
    train_alone, validation = load_pairs(alone)
    leaking = [("새 번역", validation[0][1]), (validation[1][0], "Another English.")]
    new = [(f"얼룩말 {i}", f"Zebras run {i}.") for i in range(4)]
    extra = tmp_path / "extra.tsv"
    extra.write_text("".join(f"{s}\t{t}\n" for s, t in leaking + new), encoding="utf-8")
    out = tmp_path / "run"
    status, _, err = run_main(
        ["train", "--arch", "transformer", "--data", str(data), "--extra-data", str(extra),
         "--out", str(out), "--epochs", "1", "--vocab-size", "80", "--validation-split",
         "grouped", "--validation-fraction", "0.2", "--model-arg", "num_layers=1",
         "--model-arg", "d_model=16", "--model-arg", "num_heads=2", "--model-arg", "d_ff=32"],
        capsys)
    assert status == 0, err
    config = TrainConfig.load(out / "config.json")
    assert config.extra_data == str(extra)
    train, validation_with_extra = load_pairs(config)
    assert validation_with_extra == validation
    assert train == train_alone + new
    assert "Z" in (out / "target_vocab.txt").read_text(encoding="utf-8").split()  # "Zebras"
    extra.unlink()  # what comes after training needs the validation split only
    status, _, err = run_main(["tune-alpha", str(out), "--beam", "2", "--alphas", "0.6"],
                              capsys)
    assert status == 0, err


@pytest.mark.parametrize("extra, fragment", [
    (["--stream"], "--extra-data is read into memory and cannot be streamed"),
    ([], "--extra-data 'MISSING' names no file"),
    (["--val", "MISSING"], "--val 'MISSING' names no file"),  # the flag read first is blamed
])
def test_extra_data_that_cannot_be_used_is_one_line(extra, fragment, tmp_path, capsys):
    data = write_tatoeba_like(tmp_path / "pairs.tsv")
    missing = str(tmp_path / "missing.tsv")
    status, _, err = run_main(["train", "--data", str(data), "--out", str(tmp_path / "run"),
                               "--extra-data", missing,
                               *[missing if arg == "MISSING" else arg for arg in extra]],
                              capsys)
    assert status == 2
    assert_one_line_error(err, fragment.replace("MISSING", missing))
    assert not (tmp_path / "run").exists()


def test_both_directions_trains_on_each_pair_reversed_and_validates_one_way(tmp_path, capsys):
    """`--both-directions`: the training pairs are the split's, then the same reversed; the
    validation pairs are the split's, one way, so no validation sentence reaches training."""
    data = write_tatoeba_like(tmp_path / "pairs.tsv")
    train_alone, validation = load_pairs(
        TrainConfig(data=str(data), validation_split="grouped", validation_fraction=0.2))
    out = tmp_path / "run"
    status, _, err = run_main(
        ["train", "--arch", "transformer", "--data", str(data), "--both-directions",
         "--shared-vocab", "--out", str(out), "--epochs", "1", "--vocab-size", "80",
         "--validation-split", "grouped", "--validation-fraction", "0.2",
         "--model-arg", "num_layers=1", "--model-arg", "d_model=16", "--model-arg",
         "num_heads=2", "--model-arg", "d_ff=32"], capsys)
    assert status == 0, err
    config = TrainConfig.load(out / "config.json")
    assert config.both_directions
    train, validation_both = load_pairs(config)
    assert validation_both == validation
    assert train == train_alone + [(target, source) for source, target in train_alone]
    held_out = {sentence for pair in validation for sentence in pair}
    assert not held_out & {sentence for pair in train for sentence in pair}


@pytest.mark.parametrize("flags, fragment", [
    ([], "--both-directions feeds target sentences to the encoder"),
    (["--shared-vocab", "--stream"], "--both-directions reverses pairs held in memory"),
])
def test_both_directions_that_cannot_be_used_is_one_line(flags, fragment, tmp_path, capsys):
    data = write_tatoeba_like(tmp_path / "pairs.tsv")
    status, _, err = run_main(["train", "--data", str(data), "--out", str(tmp_path / "run"),
                               "--both-directions", *flags], capsys)
    assert status == 2
    assert_one_line_error(err, fragment)
    assert not (tmp_path / "run").exists()
