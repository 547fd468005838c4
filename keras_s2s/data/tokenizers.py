"""Subword tokenizers learned from training text, running as TensorFlow ops: WordPiece (the
default) and a SentencePiece unigram model.

WordPiece: the vocabulary is learned with keras-hub's `compute_word_piece_vocabulary` and
applied with keras-hub's `WordPieceTokenizer` (tensorflow-text `FastWordpieceTokenizer`
underneath). Text is NFC-normalised, split on whitespace and punctuation (each punctuation
mark is a token; Hangul words stay whole words), then each word is split into WordPiece
subwords (`##` marks a piece that continues a word).

Tokenizing and detokenizing are `tf.function`s of TF core and tensorflow-text ops only (regex
split, UTF-8 normalisation, case folding, FastWordpiece) that exist in tensorflow-text 2.20, so a
tokenizer can live inside an exported SavedModel served by TF Serving.

Detokenizing cannot know where the original text had spaces, so it re-inserts them by fixed rules
(`_SPACING_RULES`): no space before `. , ! ? ; : % ) ~`, none after `( $`, none inside
`don't` / `mother-in-law` / `2:30` / `1,000` / `03/04/2021` / `a.m.`; quotes, paired left to
right, hug the text they enclose, and a closing quote hugs a following Korean particle
(`"사랑해"를`). On the kor-eng corpus 99.9% of Korean and 100% of English sentences come back
exactly; what cannot come back is ambiguous spacing such as `유행(경향)을` vs `내 (여행용) 가방`.

SentencePiece (`SentencePieceSubwordTokenizer`): the model is learned by the `sentencepiece`
trainer on raw text (no pre-splitting: spaces are the piece `▁`, so text comes back exactly,
after NFKC normalisation) and applied in-graph by tensorflow-text's
`FastSentencepieceTokenizer`, whose ops hold the model as a constant: no resource, so nothing
breaks when `tf.random.set_seed` clears TensorFlow's kernel cache (which deletes the model of
the resource-owning `SentencepieceTokenizer` that keras-hub's `SentencePieceTokenizer` wraps).
Its model travels inside the tokenizer's settings file, so a run has the same two files per side
whatever its tokenizer. SentencePiece's BPE models are not offered: the fast tokenizer segments
them differently from the `sentencepiece` library (a test compares the two).
"""

import base64
import collections
import io
import json
import logging
import os
import unicodedata

import keras_hub
import tensorflow as tf
import tensorflow_text as tf_text

from keras_s2s.checks import check_choice
from keras_s2s.training.config import TOKENIZER_KINDS
from keras_s2s.special_tokens import END_ID, PAD_ID, SPECIAL_TOKENS, START_ID, UNK, UNK_ID

logger = logging.getLogger(__name__)

#: Whitespace the tokenizer splits words on (RE2's `\s`), besides control characters.
_SPLIT_CHARACTERS = frozenset(" \t\n\r\f")

_LETTER_OR_DIGIT = r"[\p{L}\p{N}]"

#: `(pattern, rewrite)` pairs applied in order to the words joined by single spaces. Rules whose
#: matches can share a character are applied twice, because RE2 replacements do not overlap
#: (`1 . 2 . 3` needs two passes).
_SPACING_RULES = (
    # Quote pairs, matched left to right, hug their content: `" Hi ! "` → `"Hi !"`;
    # `„ … “` (German) before `“ … ”` (English), since `“` closes one and opens the other.
    (r"„ ([^“]*?) “", r"„\1“"),
    (r"“ ([^”]*?) ”", r"“\1”"),
    (r'" ([^"]*?) "', r'"\1"'),
    # Contractions and elisions: `don ' t`, `it ’ s`, `we ' ll`, `o ' clock`, `O ' Brien`.
    (r"(\p{L}) (['’]) (s|t|m|d|ll|re|ve)\b", r"\1\2\3"),
    (r"\b([oOdDlL]) (['’]) (\p{L})", r"\1\2\3"),
    # The straight single quotes left are quotation marks: `' like muppets '` → `'like muppets'`.
    (r"' ([^']*?) '", r"'\1'"),
    # An unpaired straight quote at either end opens or closes the text: `" We` → `"We`.
    (r"^([\"']) ", r"\1"),
    (r" ([\"'])$", r"\1"),
    # A closing quote hugs a following Korean word, a particle (`"말" 의` → `"말"의`), unless
    # the quote ends a sentence (`…다." 그는`).
    (r'("[^" ][^"]*[^".?!]") (\p{Hangul})', r"\1\2"),
    (r"([^.?!][”’]) (\p{Hangul})", r"\1\2"),
    # Numbers: `2 : 30` → `2:30`, `4 . 5` → `4.5`, `1 / 6` → `1/6`, `1 , 000` → `1,000`
    # (a comma only before exactly three digits, so `October 4 , 1957` keeps its space).
    (r"(\d) ([.:/]) (\d)", r"\1\2\3"),
    (r"(\d) ([.:/]) (\d)", r"\1\2\3"),
    (r"(\d) , (\d{3})\b", r"\1,\2"),
    (r"(\d) , (\d{3})\b", r"\1,\2"),
    # A hyphen before a conjunction ends a shortened compound: `Obst- und Gemüse`, `pre- and`.
    (r"(\p{L}) - (und|oder|sowie|and|or) ", r"\1- \2 "),
    # Hyphens and slashes inside words: `mother - in - law`, `and / or`, `04 - Mar - 2021`.
    (rf"({_LETTER_OR_DIGIT}) ([-/]) ({_LETTER_OR_DIGIT})", r"\1\2\3"),
    (rf"({_LETTER_OR_DIGIT}) ([-/]) ({_LETTER_OR_DIGIT})", r"\1\2\3"),
    # No space before closing punctuation: `school .` → `school.`.
    (r" ([.,!?;:%)\]}~°…’”])", r"\1"),
    # Abbreviations: `a. m.` → `a.m.`, `U. S.` → `U.S.`.
    (r"\b([A-Za-z])\. ([A-Za-z])\.", r"\1.\2."),
    (r"\b([A-Za-z])\. ([A-Za-z])\.", r"\1.\2."),
    # Plural possessives: `boys ' toys` → `boys' toys` (a quote that opens, `says 'no`, is
    # already attached to its word).
    (r"(\p{L}s) '( |$)", r"\1'\2"),
    # No space after opening punctuation: `( a` → `(a`, `$ 5` → `$5`, `‘ a` → `‘a`. Not after
    # `“`, which also closes German quotes; paired quotes are already done above.
    (r"([(\[{$‘]) ", r"\1"),
    # Temperatures: `° C` → `°C`.
    (r"° ([CF])\b", r"°\1"),
)


def _normalize(strings):
    """NFC, the same normalisation for training and tokenizing (composed Hangul syllables)."""
    return tf_text.normalize_utf8(strings, "NFC")

#: `TOKENIZER_KINDS`, the tokenizers `train_tokenizers` learns (WordPiece, SentencePiece
#: unigram), is defined in `keras_s2s.training.config`, which the CLI's parser imports without
#: TensorFlow.


class _Subwords(tf.Module):
    """What every tokenizer here shares: the special ids (`pad_id`, `unk_id`, `start_id`,
    `end_id`; ids 0..3 are `SPECIAL_TOKENS` unless a subclass says otherwise), the vocabulary
    lookups, and the batch/one-string handling of `tokenize` and `detokenize`. A subclass
    provides `_tokenize_batch(strings (B,)) → (B, None)` and `_join(ids (B, None) ragged) →
    (B,)`, both `tf.function`s of TF and tensorflow-text ops."""

    pad_id, unk_id, start_id, end_id = PAD_ID, UNK_ID, START_ID, END_ID
    #: Whether the vocabulary must start with `SPECIAL_TOKENS` (the kinds trained here).
    _reserves_special_tokens = True

    def __init__(self, vocabulary, lowercase, name):
        super().__init__(name=name)
        vocabulary = list(vocabulary)
        if self._reserves_special_tokens and tuple(
                vocabulary[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(
                f"The vocabulary must start with {SPECIAL_TOKENS}, "
                f"got {vocabulary[: len(SPECIAL_TOKENS)]}."
            )
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("The vocabulary has duplicate tokens.")
        self._vocabulary = vocabulary
        self._ids = {token: token_id for token_id, token in enumerate(vocabulary)}
        self.lowercase = bool(lowercase)

    @property
    def vocabulary(self):
        """The tokens in id order (a copy)."""
        return list(self._vocabulary)

    @property
    def vocabulary_size(self):
        return len(self._vocabulary)

    def id_to_token(self, token_id):
        if not 0 <= token_id < len(self._vocabulary):
            raise ValueError(
                f"Token id {token_id} is out of range [0, {len(self._vocabulary) - 1}]."
            )
        return self._vocabulary[token_id]

    def token_to_id(self, token):
        if token not in self._ids:
            raise ValueError(f"Token {token!r} is not in the vocabulary.")
        return self._ids[token]

    def tokenize(self, strings):
        """Strings → subword ids, without start or end id.

        Args:
            strings: a string, or a list / 1-D string tensor of strings.

        Returns:
            int32 ids: a `tf.RaggedTensor` `(batch, None)` for a batch, a 1-D `tf.Tensor` for
            one string.
        """
        strings = tf.convert_to_tensor(strings, dtype=tf.string)
        if strings.shape.rank == 0:
            return self._tokenize_batch(strings[tf.newaxis])[0]
        return self._tokenize_batch(strings)

    def detokenize(self, ids):
        """Ids → text: drops padding and start ids, stops at the first end id, joins subwords.

        Args:
            ids: int ids, `(batch, time)` as a `tf.RaggedTensor` or dense tensor (padded with
                `pad_id`),
                or one sequence `(time,)`.

        Returns:
            A `tf.string` tensor `(batch,)`, or a scalar for one sequence.
        """
        if isinstance(ids, tf.RaggedTensor):
            ids = ids.to_tensor(default_value=self.pad_id)  # padding is dropped below anyway
        ids = tf.cast(tf.convert_to_tensor(ids), tf.int32)
        if ids.shape.rank == 1:
            return self._detokenize_batch(ids[tf.newaxis])[0]
        return self._detokenize_batch(ids)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)], autograph=False)
    def _detokenize_batch(self, ids):
        ends_seen = tf.math.cumsum(tf.cast(ids == self.end_id, tf.int32), axis=1)  # (B, time)
        keep = ends_seen == 0
        for skipped in self._skipped_ids():
            keep &= ids != skipped
        return self._join(tf.ragged.boolean_mask(ids, keep))

    def _skipped_ids(self):
        """The ids detokenizing drops (besides the end id and what follows it)."""
        return self.pad_id, self.start_id

    def _write(self, directory, prefix, settings):
        """Write the vocabulary (one token a line) and `settings` as `file_names(prefix)`."""
        os.makedirs(directory, exist_ok=True)
        vocabulary_path, settings_path = (os.path.join(directory, name)
                                          for name in file_names(prefix))
        with open(vocabulary_path, "w", encoding="utf-8", newline="\n") as file:
            file.writelines(f"{token}\n" for token in self._vocabulary)
        with open(settings_path, "w", encoding="utf-8") as file:
            json.dump({**settings, "vocabulary_file": os.path.basename(vocabulary_path),
                       "lowercase": self.lowercase}, file, indent=2)
            file.write("\n")
        return vocabulary_path, settings_path


class SubwordTokenizer(_Subwords):
    """A WordPiece subword tokenizer whose ids start with the special tokens.

    Ids 0..3 are `[PAD]`, `[UNK]`, `[START]`, `[END]` (see `keras_s2s.special_tokens`).
    `tokenize` adds no start or end id; the data pipeline does.

    Args:
        vocabulary: the tokens in id order; must start with `SPECIAL_TOKENS`.
        lowercase: case-fold text before tokenizing (detokenized text is then lower case).

    Example:
    >>> from keras_s2s.data import SubwordTokenizer
    >>> tokenizer = SubwordTokenizer.train(["I go to school.", "We go home."], vocab_size=100)
    >>> ids = tokenizer.tokenize(["I go to school."])        # RaggedTensor (1, None) int32
    >>> tokenizer.detokenize(ids).numpy()
    array([b'I go to school.'], dtype=object)
    """

    def __init__(self, vocabulary, lowercase=False):
        super().__init__(vocabulary, lowercase, name="subword_tokenizer")
        self._wordpiece = keras_hub.tokenizers.WordPieceTokenizer(
            vocabulary=vocabulary,
            lowercase=self.lowercase,
            strip_accents=False,  # accents are meaning in most languages; keep text reversible
            oov_token=UNK,
            dtype="int32",
        )

    @classmethod
    def train(cls, texts, vocab_size, lowercase=False):
        """Learn a vocabulary of about `vocab_size` tokens (specials included) from `texts`.

        The learner keeps subwords seen at least about 10 times, so a small corpus gives a
        smaller vocabulary than asked for. Every character of `texts` is kept (the learner alone
        keeps only its 1000 most frequent characters, fewer than Korean text uses), so the
        vocabulary exceeds `vocab_size` when the characters alone do not fit; that is logged.
        """
        texts = _checked_training_texts(texts, vocab_size)
        dataset = tf.data.Dataset.from_tensor_slices(texts).batch(1024).map(_normalize)
        vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
            dataset,
            vocabulary_size=vocab_size,
            lowercase=lowercase,
            strip_accents=False,
            reserved_tokens=list(SPECIAL_TOKENS),
        )
        vocabulary = _add_missing_characters(vocabulary, texts, lowercase)
        if len(vocabulary) > vocab_size:
            logger.warning(
                "The vocabulary has %d tokens, more than vocab_size=%d, to hold every character "
                "of the training text.", len(vocabulary), vocab_size,
            )
        return _logged(cls(vocabulary, lowercase=lowercase), texts)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def _tokenize_batch(self, strings):
        return self._wordpiece.tokenize(_normalize(strings))  # (batch, None)

    def _join(self, ids):
        words = self._wordpiece.detokenize(ids)  # (batch,)
        for pattern, rewrite in _SPACING_RULES:
            words = tf.strings.regex_replace(words, pattern, rewrite)
        return tf.strings.strip(words)

    def save(self, directory, prefix):
        """Write `file_names(prefix)`: the vocabulary (one token a line), then the settings.

        Returns:
            The two paths written.
        """
        return self._write(directory, prefix, {"type": "wordpiece"})

    @classmethod
    def from_settings(cls, directory, settings):
        """The tokenizer of a settings file written by `save` (see `load_tokenizer`)."""
        vocabulary_path = os.path.join(directory, settings["vocabulary_file"])
        with open(vocabulary_path, encoding="utf-8") as file:
            vocabulary = [line.rstrip("\n") for line in file]
        return cls(vocabulary, lowercase=settings["lowercase"])


class SentencePieceSubwordTokenizer(_Subwords):
    """A SentencePiece unigram tokenizer whose ids start with the special tokens.

    Ids 0..3 are `[PAD]`, `[UNK]`, `[START]`, `[END]` (the model is trained with them at those
    ids); `tokenize` adds no start or end id. Spaces are part of the pieces (`▁`), so
    detokenizing gives the text back exactly, after the model's NFKC normalisation.

    Args:
        proto: the serialized SentencePiece model (bytes).
        lowercase: whether the model case-folds (`nmt_nfkc_cf` normalisation); recorded so the
            run says so. It is the model's normalisation that lowercases.

    Example:
    >>> from keras_s2s.data import SentencePieceSubwordTokenizer
    >>> tokenizer = SentencePieceSubwordTokenizer.train(
    ...     ["I go to school.", "We go home."] * 20, vocab_size=30)
    >>> ids = tokenizer.tokenize(["I go to school."])        # RaggedTensor (1, None) int32
    >>> tokenizer.detokenize(ids).numpy()
    array([b'I go to school.'], dtype=object)
    """

    def __init__(self, proto, lowercase=False):
        import sentencepiece

        proto = bytes(proto)
        processor = sentencepiece.SentencePieceProcessor(model_proto=proto)
        super().__init__([processor.id_to_piece(i) for i in range(processor.get_piece_size())],
                         lowercase, name="sentencepiece_tokenizer")
        self._proto = proto
        self._sentencepiece = tf_text.FastSentencepieceTokenizer(proto)

    @classmethod
    def train(cls, texts, vocab_size, lowercase=False):
        """Learn a unigram model of at most `vocab_size` pieces (specials included; fewer when
        the text has fewer) covering every character of `texts`.

        The `sentencepiece` trainer runs directly: keras-hub 0.32's
        `compute_sentence_piece_proto` takes no special-id options, and ours must sit at ids
        0..3.
        """
        import sentencepiece

        texts = _checked_training_texts(texts, vocab_size)
        model = io.BytesIO()
        pad, unk, start, end = SPECIAL_TOKENS
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
            model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
            normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=START_ID, eos_id=END_ID, pad_piece=pad,
            unk_piece=unk, bos_piece=start, eos_piece=end, minloglevel=2, num_threads=2)
        return _logged(cls(model.getvalue(), lowercase=lowercase), texts)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def _tokenize_batch(self, strings):
        return self._sentencepiece.tokenize(strings)  # (batch, None)

    def _join(self, ids):
        return self._sentencepiece.detokenize(ids)  # (batch,)

    @property
    def proto(self):
        """The serialized SentencePiece model (what an app tokenizing with the TFLite model
        loads)."""
        return self._proto

    def save(self, directory, prefix):
        """Write `file_names(prefix)`: the pieces (one a line, in id order), then the settings
        with the model inside (base64).

        Returns:
            The two paths written.
        """
        return self._write(directory, prefix, {
            "type": "sentencepiece", "model": base64.b64encode(self._proto).decode("ascii")})

    @classmethod
    def from_settings(cls, directory, settings):
        """The tokenizer of a settings file written by `save` (see `load_tokenizer`)."""
        return cls(base64.b64decode(settings["model"]), lowercase=settings["lowercase"])


class MarianTokenizer(_Subwords):
    """One side of Hugging Face's `MarianTokenizer` (OPUS-MT checkpoints), in-graph.

    Text → a leading `>>xx<<` language code kept whole (as `MarianTokenizer.remove_language_code`
    does) + the SentencePiece pieces of the rest (that side's `source.spm` / `target.spm`, run by
    tensorflow-text's `FastSentencepieceTokenizer`), each mapped to its id in the checkpoint's
    vocabulary (`vocab.json`, or `target_vocab.json` for the target side of a separate-vocabulary
    checkpoint); a piece or code the vocabulary lacks is `<unk>`. The mapping from SentencePiece
    ids to vocabulary ids is a constant array, so nothing here is a resource. Like
    `MarianTokenizer`, no punctuation normalisation is applied (it defines a Moses normaliser but
    never calls it when tokenizing), and the end id (`</s>`) is appended by the caller
    (`encode_source`), as by `MarianTokenizer`'s `build_inputs_with_special_tokens`.

    Detokenizing is `MarianTokenizer.decode(ids, skip_special_tokens=True)`: special tokens
    (`<pad>`, `<unk>`, `</s>` and what follows it) are dropped, the pieces joined, `▁` made a
    space and the ends stripped.

    The special ids are the vocabulary's: `</s>` ends, `<unk>` is unknown, `<pad>` pads and
    starts the decoder (Marian's `decoder_start_token_id`).

    Args:
        proto: the serialized SentencePiece model of this side (bytes).
        vocabulary: the checkpoint's tokens in id order (`vocab.json` inverted).
    """

    _reserves_special_tokens = False
    #: The special tokens of a Marian vocabulary, by role.
    SPECIAL_PIECES = {"end": "</s>", "unk": "<unk>", "pad": "<pad>"}

    def __init__(self, proto, vocabulary):
        import sentencepiece

        super().__init__(vocabulary, False, name="marian_tokenizer")
        for role, token in self.SPECIAL_PIECES.items():
            if token not in self._ids:
                raise ValueError(f"the Marian vocabulary has no {token!r} token ({role})")
        self.end_id, self.unk_id = self._ids["</s>"], self._ids["<unk>"]
        self.pad_id = self.start_id = self._ids["<pad>"]
        self._proto = bytes(proto)
        processor = sentencepiece.SentencePieceProcessor(model_proto=self._proto)
        self._piece_ids = tf.constant([  # SentencePiece id → vocabulary id
            self._ids.get(processor.id_to_piece(i), self.unk_id)
            for i in range(processor.get_piece_size())], tf.int32)
        codes = [token for token in vocabulary if token.startswith(">>") and token.endswith("<<")]
        self._codes = tf.constant(codes or [""], tf.string)  # "" never matches a real code
        self._code_ids = tf.constant([self._ids[code] for code in codes] or [self.unk_id],
                                     tf.int32)
        self._pieces = tf.constant(vocabulary, tf.string)
        self._sentencepiece = tf_text.FastSentencepieceTokenizer(self._proto)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def _tokenize_batch(self, strings):
        has_code = tf.strings.regex_full_match(strings, r"(?s)>>.*?<<.*")  # (B,)
        codes = tf.strings.regex_replace(strings, r"(?s)^(>>.*?<<).*$", r"\1",
                                         replace_global=False)
        rest = tf.where(has_code, tf.strings.regex_replace(strings, r"(?s)^>>.*?<<", "",
                                                           replace_global=False), strings)
        matches = tf.equal(codes[:, None], self._codes[None, :])  # (B, codes)
        code_ids = tf.where(tf.reduce_any(matches, axis=1),
                            tf.gather(self._code_ids, tf.argmax(tf.cast(matches, tf.int32),
                                                                axis=1, output_type=tf.int32)),
                            self.unk_id)  # (B,)
        pieces = tf.gather(self._piece_ids, self._sentencepiece.tokenize(rest))  # (B, None)
        code_ids = tf.RaggedTensor.from_row_lengths(  # (B, 0 or 1)
            tf.boolean_mask(code_ids, has_code), tf.cast(has_code, pieces.row_splits.dtype))
        return tf.concat([code_ids, pieces], axis=1)

    def _skipped_ids(self):
        return self.pad_id, self.unk_id  # `<unk>` is a special token to `MarianTokenizer`

    def _join(self, ids):
        text = tf.strings.reduce_join(tf.gather(self._pieces, ids), axis=1)  # (B,)
        return tf.strings.strip(tf.strings.regex_replace(text, "▁", " "))

    @property
    def proto(self):
        """The serialized SentencePiece model of this side."""
        return self._proto

    def save(self, directory, prefix):
        """Write `file_names(prefix)`: the vocabulary (one token a line, in id order), then the
        settings with the SentencePiece model inside (base64). Returns the two paths."""
        return self._write(directory, prefix, {
            "type": "marian", "model": base64.b64encode(self._proto).decode("ascii")})

    @classmethod
    def from_settings(cls, directory, settings):
        """The tokenizer of a settings file written by `save` (see `load_tokenizer`)."""
        vocabulary_path = os.path.join(directory, settings["vocabulary_file"])
        with open(vocabulary_path, encoding="utf-8", newline="\n") as file:
            vocabulary = file.read().split("\n")[:-1]
        return cls(base64.b64decode(settings["model"]), vocabulary)


#: The tokenizer class of each settings file's "type".
_TYPES = {"wordpiece": SubwordTokenizer, "sentencepiece": SentencePieceSubwordTokenizer,
          "marian": MarianTokenizer}


def load_tokenizer(directory, prefix):
    """Read a tokenizer written by its `save(directory, prefix)`, of whichever type."""
    settings_path = os.path.join(directory, file_names(prefix)[1])
    with open(settings_path, encoding="utf-8") as file:
        try:
            settings = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{settings_path} is not valid JSON: {error}") from None
    kind = settings.get("type") if isinstance(settings, dict) else None
    if kind not in _TYPES:
        raise ValueError(f"{settings_path}: unknown tokenizer type {kind!r}; known: "
                         f"{sorted(_TYPES)}")
    return _TYPES[kind].from_settings(directory, settings)


def file_names(prefix):
    """The files a tokenizer's `save(directory, prefix)` writes: `(vocabulary, settings)`."""
    return f"{prefix}_vocab.txt", f"{prefix}_tokenizer.json"


def _checked_training_texts(texts, vocab_size):
    """`texts` as a list, after checking them and `vocab_size` for training."""
    texts = list(texts)
    if not all(isinstance(text, str) for text in texts) or not any(map(str.strip, texts)):
        raise ValueError("texts must be a sequence of str holding at least one word.")
    if not isinstance(vocab_size, int) or vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size must be an int greater than {len(SPECIAL_TOKENS)} "
            f"(the special tokens), got {vocab_size!r}."
        )
    return texts


def _logged(tokenizer, texts):
    """`tokenizer`, after logging its size and the share of [UNK] in `texts`."""
    ids = tokenizer.tokenize(texts).flat_values
    unk_rate = float(tf.reduce_mean(tf.cast(ids == UNK_ID, tf.float32)))
    logger.info("Learned a %d-token vocabulary from %d texts; %.2f%% of their tokens are "
                "[UNK].", tokenizer.vocabulary_size, len(texts), 100 * unk_rate)
    return tokenizer


def _add_missing_characters(vocabulary, texts, lowercase):
    """Append each character of `texts` missing from `vocabulary`, as a word and as a `##` piece.

    Characters are normalised as the tokenizer does; whitespace and control characters, which
    the tokenizer splits on, are left out. The most frequent characters come first.
    """
    strings = _normalize(tf.constant(texts))
    if lowercase:
        strings = tf_text.case_fold_utf8(strings)
    characters = tf.strings.unicode_split(strings, "UTF-8").flat_values.numpy()
    counts = collections.Counter(character.decode("utf-8") for character in characters)
    known = set(vocabulary)
    missing = []
    for character, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if character in _SPLIT_CHARACTERS or unicodedata.category(character) in ("Cc", "Cf"):
            continue
        missing += [token for token in (character, "##" + character) if token not in known]
    if missing:
        logger.info("Added %d character tokens the subword learner left out.", len(missing))
    return list(vocabulary) + missing


def train_tokenizers(pairs, vocab_size, shared=False, lowercase=False, kind="wordpiece"):
    """Learn the source and target tokenizers from `(source, target)` pairs.

    Args:
        pairs: `(source, target)` string pairs (the training split).
        vocab_size: the target size of each vocabulary (of the one vocabulary when shared);
            see `SubwordTokenizer.train`.
        shared: learn one vocabulary from both sides and use it for both (useful when the
            languages share a script, e.g. for the `copy`/`reverse` tasks or en–de).
        lowercase: case-fold text before tokenizing.
        kind: one of `TOKENIZER_KINDS`: "wordpiece" (`SubwordTokenizer`) or "unigram"
            (SentencePiece, `SentencePieceSubwordTokenizer`).

    Returns:
        `(source_tokenizer, target_tokenizer)`; the same object twice when `shared`.
    """
    check_choice("kind", kind, TOKENIZER_KINDS)
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs must hold at least one (source, target) pair.")

    def learn(texts):
        if kind == "wordpiece":
            return SubwordTokenizer.train(texts, vocab_size, lowercase=lowercase)
        return SentencePieceSubwordTokenizer.train(texts, vocab_size, lowercase=lowercase)

    sources = [source for source, _ in pairs]
    targets = [target for _, target in pairs]
    if shared:
        tokenizer = learn(sources + targets)
        return tokenizer, tokenizer
    return learn(sources), learn(targets)
