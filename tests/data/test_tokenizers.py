import pathlib

import numpy as np
import pytest
import tensorflow as tf

from keras_s2s.data.synthetic import generate
from keras_s2s.data.tokenizers import (SentencePieceSubwordTokenizer, SubwordTokenizer,
                                      load_tokenizer, train_tokenizers)
from keras_s2s.data.tsv import read_tsv
from keras_s2s.special_tokens import END_ID, PAD_ID, SPECIAL_TOKENS, START_ID, UNK_ID

KOR_ENG = pathlib.Path(__file__).parents[3] / "shared" / "data" / "kor-eng" / "train.tsv"

ENGLISH = [
    "I go to school.",
    "Don't worry, it's only 2:30.",
    "Tom's mother-in-law paid $1,000 for it!",
    'She said "hello" to me.',
    "Where are the boys' toys?",
    "It's 25% off (today only).",
    "Sputnik was launched on October 4, 1957.",
    "Actinium melts at 1,051°C.",
    "We'll be there at 7 a.m. tomorrow; I'd like that.",
    "The 'blue' one, and/or the red one: your choice.",
    "Is it 3.5 or 3.75?",
]
KOREAN = [
    "우린 바로 여기에 있을 거야.",
    "서둘러!",
    "\"사랑해\"를 프랑스어로 어떻게 말해?",
    "톰은 2시 30분에 약속이 있어.",
    "나는 학교에 간다, 그리고 집에 온다.",
    "이 여행은 기껏해야 1,000 달러일 거야.",
]


def texts_of(tensor):
    return [text.decode("utf-8") for text in tensor.numpy()]


@pytest.fixture(scope="module")
def tokenizer():
    return SubwordTokenizer.train(ENGLISH + KOREAN, vocab_size=300)


def test_special_tokens_come_first(tokenizer):
    assert tuple(tokenizer.vocabulary[:4]) == SPECIAL_TOKENS
    for token_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == token_id
        assert tokenizer.id_to_token(token_id) == token
    assert tokenizer.vocabulary_size == len(tokenizer.vocabulary) <= 300


@pytest.mark.parametrize("texts", [ENGLISH, KOREAN], ids=["english", "korean"])
def test_round_trip(tokenizer, texts):
    ids = tokenizer.tokenize(texts)
    assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
    assert ids.shape[0] == len(texts)
    assert int(tf.reduce_min(ids.flat_values)) > END_ID  # no special ids, no [UNK]
    assert texts_of(tokenizer.detokenize(ids)) == texts


def test_round_trip_of_dates():
    pairs = generate("dates", 400, seed=0)
    tokenizer, _ = train_tokenizers(pairs, vocab_size=500, shared=True)
    texts = [text for pair in pairs for text in pair]
    assert texts_of(tokenizer.detokenize(tokenizer.tokenize(texts))) == texts


def test_one_string_gives_one_sequence(tokenizer):
    ids = tokenizer.tokenize("I go to school.")
    assert isinstance(ids, tf.Tensor) and ids.shape.rank == 1
    assert tokenizer.detokenize(ids).numpy().decode() == "I go to school."


def test_detokenize_drops_specials_and_stops_at_end(tokenizer):
    school = tokenizer.tokenize("I go to school.").numpy().tolist()
    go = tokenizer.tokenize("서둘러!").numpy().tolist()
    dense = tf.constant([
        [START_ID] + school + [END_ID] + go,  # everything after END is dropped
        go + [END_ID] + [PAD_ID] * (len(school) + 1),
        go + [PAD_ID] * (len(school) + 2),  # no END: up to the padding
    ], dtype=tf.int64)
    assert texts_of(tokenizer.detokenize(dense)) == ["I go to school.", "서둘러!", "서둘러!"]
    ragged = tf.ragged.constant([[START_ID] + go + [END_ID], [END_ID] + go, []])
    assert texts_of(tokenizer.detokenize(ragged)) == ["서둘러!", "", ""]


def test_unknown_characters_map_to_unk(tokenizer):
    ids = tokenizer.tokenize(["I go to Zürich"]).to_list()[0]
    assert ids[-1] == UNK_ID and UNK_ID not in ids[:-1]


def test_tokenize_and_detokenize_in_tf_function_and_tf_data(tokenizer):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def round_trip(strings):
        return tokenizer.detokenize(tokenizer.tokenize(strings).to_tensor())

    assert texts_of(round_trip(tf.constant(ENGLISH))) == ENGLISH
    dataset = tf.data.Dataset.from_tensor_slices(KOREAN).batch(4).map(tokenizer.tokenize)
    rows = [row for batch in dataset for row in batch.to_list()]
    assert rows == tokenizer.tokenize(KOREAN).to_list()


def test_save_and_load_give_identical_ids(tokenizer, tmp_path):
    vocabulary_path, settings_path = tokenizer.save(tmp_path / "run", "source")
    lines = pathlib.Path(vocabulary_path).read_text(encoding="utf-8").splitlines()
    assert lines == tokenizer.vocabulary
    loaded = load_tokenizer(tmp_path / "run", "source")
    assert loaded.vocabulary == tokenizer.vocabulary and loaded.lowercase is False
    assert loaded.tokenize(ENGLISH + KOREAN).to_list() == tokenizer.tokenize(
        ENGLISH + KOREAN).to_list()


def test_lowercase_is_kept_through_save_and_load(tmp_path):
    tokenizer = SubwordTokenizer.train(["Hello World", "HELLO there"], 100, lowercase=True)
    assert not any(token.lower() != token for token in tokenizer.vocabulary[4:])
    assert texts_of(tokenizer.detokenize(tokenizer.tokenize(["HeLLo World"]))) == ["hello world"]
    tokenizer.save(tmp_path, "target")
    assert load_tokenizer(tmp_path, "target").lowercase is True


def test_shared_and_separate_vocabularies():
    pairs = [("the cat sat", "die Katze saß"), ("the dog ran", "der Hund rannte")]
    source, target = train_tokenizers(pairs, vocab_size=200, shared=True)
    assert source is target
    assert texts_of(source.detokenize(source.tokenize(["die Katze sat"]))) == ["die Katze sat"]
    source, target = train_tokenizers(pairs, vocab_size=200)
    assert source.vocabulary != target.vocabulary
    assert "ß" in target.vocabulary and "ß" not in source.vocabulary


def test_every_training_character_is_in_the_vocabulary():
    # 1100 distinct syllables: more than the subword learner's 1000-character alphabet.
    syllables = [chr(0xAC00 + 7 * i) for i in range(1100)]
    texts = [" ".join(syllables[i:i + 10]) for i in range(0, 1100, 10)]
    tokenizer = SubwordTokenizer.train(texts, vocab_size=5000)
    assert all(UNK_ID not in row for row in tokenizer.tokenize(texts).to_list())


@pytest.mark.parametrize("vocabulary, match", [
    (["[UNK]", "[PAD]", "[START]", "[END]", "a"], "must start with"),
    (list(SPECIAL_TOKENS) + ["a", "a"], "duplicate"),
])
def test_invalid_vocabulary(vocabulary, match):
    with pytest.raises(ValueError, match=match):
        SubwordTokenizer(vocabulary)


def test_invalid_training_arguments(tokenizer):
    with pytest.raises(ValueError, match="vocab_size"):
        SubwordTokenizer.train(["a b"], vocab_size=4)
    with pytest.raises(ValueError, match="texts"):
        SubwordTokenizer.train([], vocab_size=100)
    with pytest.raises(ValueError, match="out of range"):
        tokenizer.id_to_token(tokenizer.vocabulary_size)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizer.token_to_id("no such token")


def test_saved_model_uses_only_serving_compatible_ops(tokenizer, tmp_path):
    """TF Serving links tensorflow-text 2.20: only these custom ops, and no Python callbacks.

    The five ops below were checked present in the tensorflow-text 2.20.0 wheel's kernels.
    """
    custom_ops = saved_round_trip_ops(tokenizer, tmp_path)
    assert custom_ops <= {"RegexSplitWithOffsets", "NormalizeUTF8", "CaseFoldUTF8",
                          "FastWordpieceTokenizeWithOffsets", "TFText>FastWordpieceDetokenize"}


def saved_round_trip_ops(tokenizer, tmp_path):
    """The custom (tensorflow-text) ops of a SavedModel of `tokenizer`'s round trip, after
    checking it holds no Python and gives KOREAN back once saved and loaded."""
    module = tf.Module()
    module.tokenizer = tokenizer
    module.round_trip = tf.function(
        lambda strings: tokenizer.detokenize(tokenizer.tokenize(strings).to_tensor()),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    graph = module.round_trip.get_concrete_function().graph.as_graph_def()
    op_types = {node.op for node in graph.node}
    op_types |= {node.op for function in graph.library.function for node in function.node_def}
    assert not op_types & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
    tf.saved_model.save(module, str(tmp_path / "model"))
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    assert texts_of(loaded.round_trip(tf.constant(KOREAN))) == KOREAN
    return {op for op in op_types if not hasattr(tf.raw_ops, op)}


def test_round_trip_rate_on_kor_eng():
    if not KOR_ENG.exists():
        pytest.skip(f"shared corpus not found at {KOR_ENG}")
    pairs = read_tsv(KOR_ENG)
    source_tokenizer, target_tokenizer = train_tokenizers(pairs, vocab_size=8000)
    for tokenizer, texts in ((source_tokenizer, [s for s, _ in pairs]),
                             (target_tokenizer, [t for _, t in pairs])):
        decoded = texts_of(tokenizer.detokenize(tokenizer.tokenize(texts)))
        assert np.mean([a == b for a, b in zip(decoded, texts)]) >= 0.99


@pytest.fixture(scope="module")
def sentencepiece():
    source, target = train_tokenizers(list(zip(ENGLISH, KOREAN * 2)) * 3, vocab_size=200,
                                      shared=True, kind="unigram")
    assert source is target
    return source


@pytest.mark.parametrize("texts", [ENGLISH, KOREAN], ids=["english", "korean"])
def test_sentencepiece_round_trip_with_special_ids_first(sentencepiece, texts):
    """SentencePiece models keep our special ids 0..3 and give the text back exactly."""
    assert isinstance(sentencepiece, SentencePieceSubwordTokenizer)
    assert tuple(sentencepiece.vocabulary[:4]) == SPECIAL_TOKENS
    ids = sentencepiece.tokenize(texts)
    assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
    assert int(tf.reduce_min(ids.flat_values)) > END_ID
    assert texts_of(sentencepiece.detokenize(ids)) == texts
    padded = tf.concat([tf.fill([len(texts), 1], START_ID), ids.to_tensor(),
                        tf.fill([len(texts), 1], END_ID), tf.fill([len(texts), 2], 17)], 1)
    assert texts_of(sentencepiece.detokenize(padded)) == texts  # START dropped, cut at END


def test_sentencepiece_matches_the_sentencepiece_library_and_survives_save_and_load(
        sentencepiece, tmp_path):
    """The in-graph ids are those of the `sentencepiece` library on the same model, and the
    saved settings file carries the model."""
    import sentencepiece as spm

    reference = spm.SentencePieceProcessor(model_proto=sentencepiece.proto)
    assert sentencepiece.tokenize(ENGLISH + KOREAN).to_list() == reference.encode(
        ENGLISH + KOREAN)
    assert sentencepiece.vocabulary == [reference.id_to_piece(i)
                                        for i in range(reference.get_piece_size())]
    sentencepiece.save(tmp_path, "source")
    loaded = load_tokenizer(tmp_path, "source")
    assert type(loaded) is SentencePieceSubwordTokenizer
    assert loaded.tokenize(KOREAN).to_list() == sentencepiece.tokenize(KOREAN).to_list()


def test_sentencepiece_lowercase_and_bad_arguments(tmp_path):
    tokenizer = SentencePieceSubwordTokenizer.train(["Hello World", "HELLO there"] * 5, 40,
                                                    lowercase=True)
    assert texts_of(tokenizer.detokenize(tokenizer.tokenize(["HeLLo World"]))) == [
        "hello world"]
    tokenizer.save(tmp_path, "target")
    assert load_tokenizer(tmp_path, "target").lowercase is True
    with pytest.raises(ValueError, match="kind must be one of"):
        train_tokenizers([("a", "b")], 40, kind="bpe")
    (tmp_path / "target_tokenizer.json").write_text('{"type": "morfessor"}')
    with pytest.raises(ValueError, match="unknown tokenizer type 'morfessor'"):
        load_tokenizer(tmp_path, "target")


def test_sentencepiece_survives_a_cleared_kernel_cache(sentencepiece):
    """`tf.random.set_seed` clears TensorFlow's kernel cache, which deletes the model of a
    resource-owning SentencePiece op; ours holds its model as a constant."""
    before = sentencepiece.tokenize(ENGLISH).to_list()
    tf.random.set_seed(7)
    assert sentencepiece.tokenize(ENGLISH).to_list() == before
    assert texts_of(sentencepiece.detokenize(sentencepiece.tokenize(KOREAN))) == KOREAN


def test_sentencepiece_saved_model_uses_only_serving_ops(sentencepiece, tmp_path):
    """tensorflow-text's fast SentencePiece kernels, which TF Serving links, and no Python."""
    assert saved_round_trip_ops(sentencepiece, tmp_path) <= {
        "TFText>FastSentencepieceTokenize", "TFText>FastSentencepieceDetokenize"}
