"""Word alignments from cross-attention, and unknown output words replaced by source words.

The model attends from output subwords to source subwords; people (and alignment tools such as
fast_align) speak of words. `word_alignments` merges the attention of a word's subwords: the
rows of one target word are summed, then the columns of each source word, and each target word
is linked to the source word that holds the most of that sum. Words are the tokenizer's: a
WordPiece token starting with `##` continues the word before it, a SentencePiece piece starts
a word when it starts with `▁` (so punctuation the pre-tokenizer splits off is a word of its
own); the special tokens (padding, start, end) belong to no word, the unknown token is one.

The attention is `Translation.attention`: for a Transformer, its last decoder layer's
cross-attention averaged over heads (what the explorer's heat map shows by default); for the
RNNs with attention, their one attention.
"""

import numpy as np

from keras_s2s.data.tokenizers import SubwordTokenizer


def word_ids(tokens, tokenizer):
    """The word index of each of `tokens` (strings of `tokenizer`'s vocabulary), None for a
    special token that is no word (padding, start, end)."""
    no_word = {tokenizer.id_to_token(token_id) for token_id in
               (tokenizer.pad_id, tokenizer.start_id, tokenizer.end_id)}
    unknown = tokenizer.id_to_token(tokenizer.unk_id)
    ids, word = [], -1
    for token in tokens:
        if token in no_word:
            ids.append(None)
            continue
        if word < 0 or token == unknown or _starts_word(token, tokenizer):
            word += 1
        ids.append(word)
    return ids


def _starts_word(token, tokenizer):
    if isinstance(tokenizer, SubwordTokenizer):  # WordPiece marks the pieces that continue
        return not token.startswith("##")
    return token.startswith("▁")  # SentencePiece marks the pieces that start


def word_text(pieces, tokenizer):
    """The text of the word made of `pieces` (tokens of `tokenizer`)."""
    marker = "##" if isinstance(tokenizer, SubwordTokenizer) else "▁"
    return "".join(piece.removeprefix(marker) for piece in pieces)


def word_alignments(attention, source_word_ids, target_word_ids):
    """Link each target word to the source word it attends to most.

    Args:
        attention: `(T, S)` weights of T output subwords over S source subwords.
        source_word_ids, target_word_ids: the word index of each source (S) and target (T)
            subword, None for one that belongs to no word (`word_ids`).

    Returns:
        `[(source_word, target_word), ...]` in target word order, one pair per target word
        (none when the source has no word).
    """
    attention = np.asarray(attention, dtype="float64")
    source_words = _membership(source_word_ids)  # (S, source words)
    target_words = _membership(target_word_ids)  # (T, target words)
    if not source_words.shape[1]:
        return []
    merged = target_words.T @ attention @ source_words  # (target words, source words)
    return [(int(source), target) for target, source in enumerate(merged.argmax(axis=1))]


def _membership(word_ids):
    """`(len(word_ids), words)` 0/1 matrix: row i has a 1 in the column of its word, if any."""
    words = max((word for word in word_ids if word is not None), default=-1) + 1
    matrix = np.zeros((len(word_ids), words))
    for row, word in enumerate(word_ids):
        if word is not None:
            matrix[row, word] = 1.0
    return matrix


def pharaoh(alignments):
    """`[(source_word, target_word), ...]` → the Pharaoh format "0-0 1-2 ..."."""
    return " ".join(f"{source}-{target}" for source, target in alignments)


def replace_unknowns(translation, source_tokenizer, target_tokenizer):
    """`translation.text` with each unknown output token replaced by the source word it
    attends to most (its source subwords' weights summed, as in `word_alignments`). Needs
    `translation.attention`; the text stays as it is when its unknown tokens cannot be told
    apart (a detokenizer that drops them)."""
    unknown = target_tokenizer.id_to_token(target_tokenizer.unk_id)
    rows = [row for row, token in enumerate(translation.output_tokens) if token == unknown]
    pieces = translation.text.split(unknown)
    source_ids = word_ids(translation.source_tokens, source_tokenizer)
    source_words = _membership(source_ids)  # (S, source words)
    if not rows or len(pieces) != len(rows) + 1 or not source_words.shape[1]:
        return translation.text
    tokens_of_word = [[token for token, word in zip(translation.source_tokens, source_ids)
                       if word == index] for index in range(source_words.shape[1])]
    best_words = (np.asarray(translation.attention)[rows] @ source_words).argmax(axis=1)
    return pieces[0] + "".join(word_text(tokens_of_word[word], source_tokenizer) + piece
                               for word, piece in zip(best_words, pieces[1:]))
