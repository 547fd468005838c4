"""Translators: tokenizers + a search, loaded from a run directory (our model and decoding) or
from a CTranslate2 export (`ctranslate2.Translator`)."""

import dataclasses
import logging

import numpy as np
import tensorflow as tf
from keras import ops

from keras_s2s.run import Run
from keras_s2s.data.pipeline import encode_source
from keras_s2s.decoding import (Beam, Greedy, check_constraints_allowed, check_strategy,
                                 length_penalty, min_compiled_inputs)
from keras_s2s.inference.alignment import replace_unknowns, word_alignments, word_ids
from keras_s2s.special_tokens import PAD_ID

logger = logging.getLogger(__name__)

@dataclasses.dataclass
class Translation:
    """One output: the text, its score, the tokens on both sides and where the model looked.

    `score` is the strategy's (log-probability; beam search: over the length penalty).
    `source_tokens` end with END. `attention` is `(len(output_tokens), len(source_tokens))`
    when asked for and the model has attention, else None. `alternatives` holds the next best
    hypotheses of a `Beam(n_best=N)` search, best first (N - 1 of them; each without
    alternatives of its own), and is empty otherwise. `alignments` links each output word to
    the source word it attends to most, `[(source_word, target_word), ...]` in output order
    (`keras_s2s.inference.alignment`), when there is `attention`, else None.

    An empty input (no token once tokenized: "" or only whitespace) is not decoded: its text is
    "", its score 0.0 (the log-probability of the one, certain, empty output), and it has no
    output tokens and no alternatives.
    """

    source: str
    text: str
    score: float
    source_tokens: list
    output_tokens: list
    attention: np.ndarray | None
    alternatives: list = dataclasses.field(default_factory=list)
    alignments: list | None = None


#: The rank of each guide of `Strategy.decode`: (batch, length), (batch, phrases, length).
GUIDE_RANKS = {"prefix": 2, "constraints": 3}


def _padded(rows, pad_id, width=None):
    """Lists of ids → an int32 array `(len(rows), width)` padded with `pad_id` (default width:
    the longest row, at least 1)."""
    width = width or max([len(row) for row in rows] + [1])
    return np.array([row + [pad_id] * (width - len(row)) for row in rows], "int32").reshape(
        len(rows), width)


def empty_sources(source_ids, pad_id=PAD_ID):
    """`(B, S)` ids → `(B,)` bool: rows holding no token but END (an empty or blank text)."""
    return tf.math.count_nonzero(source_ids != pad_id, axis=1) <= 1


def check_length_limit(model, max_source_length, max_target_length):
    """Raise ValueError if a length exceeds the `model.max_decode_length` limit."""
    limit = model.max_decode_length
    if limit is not None and max(max_source_length, max_target_length) > limit:
        raise ValueError(
            f"max_source_length={max_source_length} and max_target_length={max_target_length} "
            f"must not exceed the model's max_decode_length={limit}")


def blank_empty_sources(result, source_ids, pad_id=PAD_ID):
    """A decoding `result` (dict of batch-first tensors) with the rows of empty sources blanked:
    no output ids (all `pad_id`), length 0, score 0.0, as the `Translator` gives them without
    decoding, for graphs (export, TFLite) that decode whole batches."""
    empty = empty_sources(source_ids, pad_id)
    return {name: tf.where(tf.reshape(empty, [-1] + [1] * (value.shape.rank - 1)),
                           tf.fill(tf.shape(value), tf.constant(
                               pad_id if name == "tokens" else 0, value.dtype)), value)
            for name, value in result.items()}


class _TranslatorBase:
    """What both translators share: batching texts, and turning a search's outputs into
    `Translation`s. A subclass sets the tokenizers, `max_source_length` and `has_attention`."""

    def _translate_texts(self, texts, strategy, attention, batch_size, decode):
        """`decode(rows (n, S) int32 ids of non-empty sources, batch_number)` → the search's
        outputs as numpy arrays with a hypothesis axis (`tokens` `(n, N, T)`, `lengths`,
        `scores` `(n, N)`, `attention` `(n, N, T, S)` when asked for)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        texts = list(texts)
        if not texts:
            return []
        # Each text is tokenized once. Batches hold texts of similar lengths, as CTranslate2
        # and fairseq form them: less padding, and no short text waits for the longest output
        # of its batch. The translations come back in the order of `texts`.
        all_ids = encode_source(texts, self.source_tokenizer, self.max_source_length).numpy()
        lengths = np.count_nonzero(all_ids != self.source_tokenizer.pad_id, axis=1)
        order = np.argsort(lengths, kind="stable")
        translations = [None] * len(texts)
        for number, start in enumerate(range(0, len(texts), batch_size)):
            rows = order[start:start + batch_size]
            batch = self._translate_batch(
                [texts[row] for row in rows], all_ids[rows, :lengths[rows].max()],
                lambda ids, picked, rows=rows: decode(ids, number, rows[picked]),
                strategy.n_best, bool(attention))
            for row, translation in zip(rows, batch):
                translations[row] = translation
        return translations

    def _translate_batch(self, texts, source_ids, decode, n_best, attention):
        """`texts` and their ids `(n, S)` as `encode_source` lays them out → `Translation`s.
        `decode(ids, picked)` decodes the rows `picked` of them (the non-empty ones)."""
        pad_id = self.source_tokenizer.pad_id
        decoded = np.flatnonzero(~empty_sources(source_ids, pad_id).numpy())  # rows to decode
        result = {}
        if len(decoded):
            result = decode(tf.gather(source_ids, decoded), decoded)
            shape = result["tokens"].shape
            result["texts"] = self.target_tokenizer.detokenize(
                result["tokens"].reshape(-1, shape[-1])).numpy().reshape(shape[:2])
        attention = attention and self.has_attention
        translations = []
        for row, text in enumerate(texts):
            source_length = int(np.count_nonzero(source_ids[row] != pad_id))
            source_tokens = [self.source_tokenizer.id_to_token(int(i))
                             for i in source_ids[row, :source_length]]
            index = np.searchsorted(decoded, row)
            if index == len(decoded) or decoded[index] != row:  # an empty input
                translations.append(Translation(
                    source=text, text="", score=0.0, source_tokens=source_tokens,
                    output_tokens=[],
                    attention=np.zeros((0, source_length), "float32") if attention else None))
                continue
            hypotheses = []
            for rank in range(n_best):
                length = int(result["lengths"][index, rank])
                hypotheses.append(Translation(
                    source=text, text=result["texts"][index, rank].decode("utf-8"),
                    score=float(result["scores"][index, rank]), source_tokens=source_tokens,
                    output_tokens=[self.target_tokenizer.id_to_token(int(i)) for i in
                                   result["tokens"][index, rank, :length]],
                    attention=result["attention"][index, rank, :length, :source_length]
                    if attention else None))
            hypotheses[0].alternatives = hypotheses[1:]
            translations.append(hypotheses[0])
        if attention:
            for translation in translations:
                for hypothesis in [translation, *translation.alternatives]:
                    hypothesis.alignments = word_alignments(
                        hypothesis.attention,
                        word_ids(hypothesis.source_tokens, self.source_tokenizer),
                        word_ids(hypothesis.output_tokens, self.target_tokenizer))
        return translations

    def replace_unknowns(self, translation):
        """`translation.text` with each unknown output token replaced by the source word it
        attends to most (`keras_s2s.inference.alignment.replace_unknowns`)."""
        return replace_unknowns(translation, self.source_tokenizer, self.target_tokenizer)


class Translator(_TranslatorBase):
    """Translate text with a trained model.

    Args:
        model: a model keeping the contract of `keras_s2s.models.base`.
        source_tokenizer, target_tokenizer: `SubwordTokenizer`s of the two sides.
        max_source_length: longer inputs are truncated to this many tokens.
        max_target_length: the most output tokens (the end token included).
        jit_compile: compile the decoding loop with XLA, once per input shape (batches are
            padded to a few shapes: rows to a power of two, sources to a multiple of 16
            tokens). It pays off for long outputs and beam search, and can lose for short ones
            while it compiles (docs/RESULTS.md §1), so measure on your data. The compiled
            programs last as long as the process; `keras-s2s --xla on` keeps them on disk
            between commands, and Python
            users do the same by setting `TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=DIR`
            before TensorFlow starts.
    """

    def __init__(self, model, source_tokenizer, target_tokenizer, max_source_length,
                 max_target_length, jit_compile=False):
        check_length_limit(model, max_source_length, max_target_length)
        self.model = model
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self.jit_compile = bool(jit_compile)
        self.has_attention = model.has_attention
        self._decoders = {}

    @classmethod
    def from_run(cls, run, jit_compile=False):
        """The translator of an opened `keras_s2s.run.Run`: its model, tokenizers and
        lengths."""
        return cls(run.model, run.source_tokenizer, run.target_tokenizer,
                   run.config.max_source_length, run.config.max_target_length,
                   jit_compile=jit_compile)

    @classmethod
    def load(cls, path, jit_compile=False):
        """The translator of the trained run at `path` (a run directory, or an export version
        directory): `Translator.from_run(Run.open(path))`.

        >>> translator = Translator.load("runs/dates")  # doctest: +SKIP
        >>> translator.translate(["March 4th, 2021"], strategy=Beam(4))[0].text  # doctest: +SKIP
        '2021-03-04'
        """
        return cls.from_run(Run.open(path), jit_compile=jit_compile)

    def _decoder(self, strategy, attention, guides=()):
        """A compiled decoding function `(source_ids, seed, *guides)` per strategy, attention
        flag and the names of the guides given ("prefix", "constraints": `decode`'s
        arguments); a sampling strategy's seed is an input, so one function serves every
        seed."""
        key = (strategy, attention, guides)
        if key not in self._decoders:
            self._decoders[key] = tf.function(
                lambda source_ids, seed, *values: strategy.decode(
                    self.model, source_ids, self.max_target_length, attention=attention,
                    seed=seed, **dict(zip(guides, values))),
                input_signature=[tf.TensorSpec([None, None], tf.int32),
                                 tf.TensorSpec([2], tf.int32)] + [
                    tf.TensorSpec([None] * GUIDE_RANKS[name], tf.int32) for name in guides],
                reduce_retracing=True, jit_compile=self.jit_compile)
        return self._decoders[key]

    def _target_ids(self, texts, what):
        """Target-side `texts` → lists of ids (no end token); a one-line ValueError naming one
        that leaves no room for the end token."""
        room = self.max_target_length - 1
        ids = self.target_tokenizer.tokenize(list(texts)).to_list() if texts else []
        for text, row in zip(texts, ids):
            if len(row) > room:
                raise ValueError(f"the {what} {text!r} has {len(row)} tokens; at most {room} fit "
                                 f"before the end token (max_target_length "
                                 f"{self.max_target_length})")
        return ids

    def _guides(self, count, strategy, prefixes, constraints):
        """The prefixes and constraints of `count` texts as `decode`'s int32 arrays, by name,
        padded with the target padding id; checked, with one-line errors."""
        guides, pad_id = {}, self.target_tokenizer.pad_id
        for name, given in (("prefixes", prefixes), ("constraints", constraints)):
            if given is not None and (isinstance(given, str) or len(given) != count):
                raise ValueError(f"{name} must be a list with one entry per text ({count}), got "
                                 f"{given!r}")
        if prefixes is not None:
            guides["prefix"] = _padded(self._target_ids(prefixes, "prefix"), pad_id)
        if constraints is not None:
            check_constraints_allowed(strategy)
            phrases = []
            for row in constraints:
                if isinstance(row, str):
                    raise ValueError(f"constraints must be lists of phrases, one list per text, "
                                     f"got {row!r}")
                ids = self._target_ids(row, "constraint")
                for text, phrase in zip(row, ids):
                    if not phrase:
                        raise ValueError(f"the constraint {text!r} is empty: it holds no token")
                total = sum(map(len, ids))
                if total > self.max_target_length - 1:
                    raise ValueError(f"the constraints {list(row)!r} hold {total} tokens; at most "
                                     f"{self.max_target_length - 1} fit before the end token "
                                     f"(max_target_length {self.max_target_length})")
                phrases.append(ids)
            width = max([len(phrase) for row in phrases for phrase in row] + [1])
            most = max([len(row) for row in phrases] + [1])  # phrases of one text
            guides["constraints"] = np.stack([_padded(row + [[]] * (most - len(row)), pad_id, width)
                                              for row in phrases])
        return guides

    def _padded_for_compilation(self, source_ids, rows_per_input):
        """`source_ids` padded to one of few shapes, so XLA compiles a handful of programs:
        rows to a power of two (copies of the first row) and to at least
        `decoding.MIN_COMPILED_ROWS` decoder rows of `rows_per_input` each, columns to a
        multiple of 16."""
        rows, columns = source_ids.shape
        target_rows = max(1 << (rows - 1).bit_length(), min_compiled_inputs(rows_per_input))
        target_columns = max(columns, min(-(-columns // 16) * 16, self.max_source_length))
        source_ids = tf.pad(source_ids, [[0, 0], [0, target_columns - columns]],
                            constant_values=self.source_tokenizer.pad_id)
        return tf.concat([source_ids, tf.repeat(source_ids[:1], target_rows - rows, axis=0)],
                         axis=0)

    def translate(self, texts, strategy=Greedy(), attention=True, batch_size=64,
                  prefixes=None, constraints=None):
        """Translate a list of strings → list[Translation], one per text, in order.

        Args:
            texts: a list of strings.
            strategy: a `keras_s2s.decoding` strategy: `Greedy()` (default), `Beam(width,
                alpha, n_best)` or `Sample(temperature, top_k, top_p, seed)`. A `Sample`
                without a seed draws fresh randomness on every call; with one, the same texts
                give the same outputs.
            attention: record the attention weights (`Translation.attention`); turn it off
                when they are not needed, to save the decoder's attention buffers.
            batch_size: texts decoded at once.
            prefixes: None, or one string per text ("" for none) its translation starts
                with (tokenized by the target tokenizer, without the end token); the
                translation goes on from there and its score counts the prefix.
            constraints: None, or one list of phrases per text (an empty list for none) its
                translation must contain; beam search only (`keras_s2s.decoding` says how, and
                what comes back when a phrase does not fit). An empty input is not decoded,
                whatever its prefix or constraints.
        """
        check_strategy(strategy)
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        texts = list(texts)
        if not texts:
            return []
        guides = self._guides(len(texts), strategy, prefixes, constraints)
        seed = None
        if strategy.random:  # the seed goes in as a tensor
            seed = strategy.seed if strategy.seed is not None else int(
                np.random.default_rng().integers(2 ** 31 - 1))
            strategy = strategy.without_seed()
        decoder = self._decoder(strategy, bool(attention), tuple(guides))

        def decode(rows, number, text_rows):
            seeds = tf.constant([seed or 0, number], tf.int32)  # one stream per batch
            values = [guides[name][text_rows] for name in guides]
            if self.jit_compile:
                padded_rows = self._padded_for_compilation(rows, strategy.rows_per_input)
                padded = decoder(padded_rows, seeds, *[np.concatenate(
                    [value, np.repeat(value[:1], len(padded_rows) - len(rows), axis=0)])
                    for value in values])
                result = {name: value[:len(rows)] for name, value in padded.items()}
            else:
                result = decoder(rows, seeds, *values)
            return {name: value.numpy() if strategy.n_best > 1 else value.numpy()[:, None]
                    for name, value in result.items()}  # (rows, n_best, ...)

        return self._translate_texts(texts, strategy, attention, batch_size, decode)

    def attention_heads(self, translation):
        """The cross-attention of one `Translation` (or one of its alternatives) by layer and
        head, `(layers, heads, len(output_tokens), len(source_tokens))`, or None when it has no
        `attention`. Models with several (a Transformer) recompute it from the output tokens
        (`cross_attention_heads`); for the others it is `translation.attention` as one layer of
        one head. A Transformer's last layer averaged over heads is `translation.attention`.
        """
        if translation.attention is None:
            return None
        if translation.output_tokens:
            source_ids = [[self.source_tokenizer.token_to_id(token)
                           for token in translation.source_tokens]]
            target_in_ids = [[self.model.start_id] + [self.target_tokenizer.token_to_id(token)
                                           for token in translation.output_tokens[:-1]]]
            heads = self.model.cross_attention_heads(np.array(source_ids, "int32"),
                                                     np.array(target_in_ids, "int32"))
            if heads is not None:
                return np.asarray(heads[0], "float32")
        return translation.attention[None, None]


class CTranslate2Translator(_TranslatorBase):
    """Translate with a CTranslate2 export (`keras_s2s.exporters.ctranslate2`): our tokenizers
    in Python, `ctranslate2.Translator` for the search; `translate` as `Translator.translate`.

    `Greedy()` is CTranslate2's greedy search and `Beam(width, alpha, n_best)` its beam search
    of that width. Scores are ours: log-probabilities (END included), over the GNMT length
    penalty ((5 + |Y|) / 6)^α for beam search. CTranslate2's own `length_penalty` divides by
    |Y|^α instead, a different ranking, so it is asked for the raw log-probabilities (penalty
    0) of all `width` hypotheses it finishes, and those are ranked by our penalty. Its search
    differs in two ways: a step finishes hypotheses only among its `width` best candidates
    (ours: among the 2·width best, so an unlikely early END still ends one), and it stops once
    `width` hypotheses have finished (ours: once no live one can beat them). On a trained
    model's peaked distributions both give the same outputs (tests/test_ctranslate2.py); on
    flat ones they can differ. `Translation.attention` is CTranslate2's (the last layer's
    cross-attention averaged over heads, as ours), except that its beam search reports a wrong
    first row (other rows agree with ours; greedy search's agree everywhere). Sampling is not
    offered (CTranslate2 draws its own numbers).

    Args:
        run: the `keras_s2s.run.Run` of a CTranslate2 export.
        threads: CPU threads of one translation (CTranslate2's `intra_threads`; 0: its default).
    """

    def __init__(self, run, threads=0):
        import ctranslate2

        self.source_tokenizer, self.target_tokenizer = run.source_tokenizer, run.target_tokenizer
        self.max_source_length = run.config.max_source_length
        self.max_target_length = run.config.max_target_length
        self.has_attention = True  # CTranslate2 takes Transformers only (`Family.ctranslate2`)
        self.translator = ctranslate2.Translator(run.directory, device="cpu",
                                                 intra_threads=threads)
        self._source_vocabulary = self.source_tokenizer.vocabulary
        self._target_ids = {token: i for i, token in
                            enumerate(self.target_tokenizer.vocabulary)}

    def translate(self, texts, strategy=Greedy(), attention=True, batch_size=64):
        """As `Translator.translate`, for `Greedy()` and `Beam(...)` strategies."""
        check_strategy(strategy)
        if not isinstance(strategy, (Greedy, Beam)):
            raise ValueError(f"a CTranslate2 export decodes with Greedy() or Beam(...), not "
                             f"{strategy!r}")
        width = strategy.width if isinstance(strategy, Beam) else 1
        options = dict(beam_size=width, num_hypotheses=width, length_penalty=0.0,
                       min_decoding_length=0, max_decoding_length=self.max_target_length,
                       max_input_length=0, return_scores=True, return_end_token=True,
                       return_attention=bool(attention))

        def decode(rows, number, text_rows):
            sources = [[self._source_vocabulary[i] for i in
                        row[:np.count_nonzero(row != self.source_tokenizer.pad_id)]]
                       for row in rows.numpy()]  # END included
            return self._outputs(self.translator.translate_batch(sources, **options),
                                 rows.shape[1], strategy)

        return self._translate_texts(texts, strategy, attention, batch_size, decode)

    def _outputs(self, results, source_length, strategy):
        """CTranslate2's results → the arrays `_translate_batch` reads, best `n_best` first."""
        n_best, length = strategy.n_best, self.max_target_length
        outputs = {"tokens": np.zeros((len(results), n_best, length), "int32"),
                   "lengths": np.zeros((len(results), n_best), "int32"),
                   "scores": np.zeros((len(results), n_best), "float32"),
                   "attention": np.zeros((len(results), n_best, length, source_length),
                                         "float32")}
        for row, result in enumerate(results):
            lengths = np.array([len(tokens) for tokens in result.hypotheses])
            scores = np.array(result.scores, "float32")
            if isinstance(strategy, Beam):
                scores = scores / ops.convert_to_numpy(length_penalty(lengths, strategy.alpha))
            for rank, best in enumerate(np.argsort(-scores, kind="stable")[:n_best]):
                outputs["tokens"][row, rank, :lengths[best]] = [
                    self._target_ids[token] for token in result.hypotheses[best]]
                outputs["lengths"][row, rank] = lengths[best]
                outputs["scores"][row, rank] = scores[best]
                if result.attention:
                    weights = np.array(result.attention[best], "float32")  # (|Y|, S)
                    outputs["attention"][row, rank, :len(weights), :weights.shape[1]] = weights
        return outputs


def translator_for(run, jit_compile=False):
    """A `Translator` of a trained `run`, or a `CTranslate2Translator` of a CTranslate2 export
    (`jit_compile` is keras-s2s's own decoding, so it is an error there)."""
    if run.is_ctranslate2:
        if jit_compile:
            raise ValueError(f"{run.directory!r} is a CTranslate2 export, decoded by "
                             f"CTranslate2: XLA compilation applies to keras-s2s's own decoding")
        return CTranslate2Translator(run)
    return Translator.from_run(run, jit_compile=jit_compile)
