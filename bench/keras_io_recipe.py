"""The keras.io "English-to-Spanish translation with KerasHub" recipe, as a quality baseline.

Reproduced from keras.io/examples/nlp/neural_machine_translation_with_keras_hub (the recipe the
brief compares against): separate WordPiece vocabularies of 15,000 tokens learned with
`keras_hub.tokenizers.compute_word_piece_vocabulary`, sequences of 40 tokens packed with
`StartEndPacker`, `TokenAndPositionEmbedding` (learned positions, `mask_zero`), one
`keras_hub.layers.TransformerEncoder` and one `TransformerDecoder` (256 wide, 8 heads, 2048
feed-forward), dropout 0.5 and a softmax Dense layer, trained with `rmsprop` on
`sparse_categorical_crossentropy` at batch 64, and decoded with `keras_hub.samplers.GreedySampler`
rerunning the whole model at every step (no cache). The one change: the recipe lowercases its
Spanish–English text; we keep case, because the references we score against are cased.
"""

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from keras_s2s.training.loop import TimeBudget

RESERVED_TOKENS = ["[PAD]", "[UNK]", "[START]", "[END]"]
MAX_SEQUENCE_LENGTH = 40
VOCAB_SIZE = 15000
EMBED_DIM = 256
INTERMEDIATE_DIM = 2048
NUM_HEADS = 8
BATCH_SIZE = 64


def _tokenizer(texts):
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(texts).batch(1000), vocabulary_size=VOCAB_SIZE,
        reserved_tokens=RESERVED_TOKENS)
    return keras_hub.tokenizers.WordPieceTokenizer(vocabulary=vocabulary, lowercase=False)


class KerasIoRecipe:
    """Train the recipe's model on `(source, target)` pairs for a budget, then translate."""

    def __init__(self, train_pairs):
        sources, targets = [s for s, _ in train_pairs], [t for _, t in train_pairs]
        self.source_tokenizer = _tokenizer(sources)
        self.target_tokenizer = _tokenizer(targets)
        self.train_pairs = train_pairs
        self.model = self._build()

    def _build(self):
        source_vocab = self.source_tokenizer.vocabulary_size()
        target_vocab = self.target_tokenizer.vocabulary_size()
        encoder_inputs = keras.Input(shape=(None,), dtype="int64", name="encoder_inputs")
        x = keras_hub.layers.TokenAndPositionEmbedding(
            source_vocab, MAX_SEQUENCE_LENGTH, EMBED_DIM, mask_zero=True)(encoder_inputs)
        encoder_outputs = keras_hub.layers.TransformerEncoder(
            intermediate_dim=INTERMEDIATE_DIM, num_heads=NUM_HEADS)(inputs=x)
        decoder_inputs = keras.Input(shape=(None,), dtype="int64", name="decoder_inputs")
        x = keras_hub.layers.TokenAndPositionEmbedding(
            target_vocab, MAX_SEQUENCE_LENGTH, EMBED_DIM, mask_zero=True)(decoder_inputs)
        x = keras_hub.layers.TransformerDecoder(
            intermediate_dim=INTERMEDIATE_DIM, num_heads=NUM_HEADS)(
                decoder_sequence=x, encoder_sequence=encoder_outputs)
        x = keras.layers.Dropout(0.5)(x)
        outputs = keras.layers.Dense(target_vocab, activation="softmax")(x)
        model = keras.Model([encoder_inputs, decoder_inputs], outputs, name="keras_io_recipe")
        model.compile("rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    def _pack_source(self, texts):
        packer = keras_hub.layers.StartEndPacker(
            sequence_length=MAX_SEQUENCE_LENGTH,
            pad_value=self.source_tokenizer.token_to_id("[PAD]"))
        return packer(self.source_tokenizer(texts))

    def _dataset(self):
        sources = [s for s, _ in self.train_pairs]
        targets = [t for _, t in self.train_pairs]
        target_packer = keras_hub.layers.StartEndPacker(
            sequence_length=MAX_SEQUENCE_LENGTH + 1,
            start_value=self.target_tokenizer.token_to_id("[START]"),
            end_value=self.target_tokenizer.token_to_id("[END]"),
            pad_value=self.target_tokenizer.token_to_id("[PAD]"))

        def preprocess(source, target):
            target = target_packer(self.target_tokenizer(target))
            return ({"encoder_inputs": self._pack_source(source),
                     "decoder_inputs": target[:, :-1]}, target[:, 1:])

        return (tf.data.Dataset.from_tensor_slices((sources, targets))
                .shuffle(2048, seed=0).batch(BATCH_SIZE)
                .map(preprocess, num_parallel_calls=tf.data.AUTOTUNE).prefetch(16))

    def fit(self, minutes, max_epochs=1000):
        """Train until `minutes` of wall-clock time are spent; returns the epochs started."""
        history = self.model.fit(self._dataset(), epochs=max_epochs, verbose=0,
                                 callbacks=[TimeBudget(60 * minutes)])
        return len(history.history["loss"])

    def translate(self, texts, batch_size=64):
        """The recipe's `decode_sequences`: uncached greedy search, batch by batch."""
        start_id = self.target_tokenizer.token_to_id("[START]")
        end_id = self.target_tokenizer.token_to_id("[END]")
        pad_id = self.target_tokenizer.token_to_id("[PAD]")
        sampler = keras_hub.samplers.GreedySampler()
        results = []
        for begin in range(0, len(texts), batch_size):
            encoder_tokens = self._pack_source(tf.constant(texts[begin:begin + batch_size]))
            batch = encoder_tokens.shape[0]

            def next(prompt, cache, index, encoder_tokens=encoder_tokens):
                logits = self.model([encoder_tokens, prompt])[:, index - 1, :]
                return logits, None, cache

            prompt = tf.concat([tf.fill((batch, 1), start_id),
                                tf.fill((batch, MAX_SEQUENCE_LENGTH - 1), pad_id)], axis=-1)
            generated = sampler(next, prompt, stop_token_ids=[end_id], index=1)
            for row in np.asarray(generated):
                ids = [int(i) for i in row[1:] if i not in (pad_id, start_id)]
                if end_id in ids:
                    ids = ids[:ids.index(end_id)]
                results.append(self.target_tokenizer.detokenize([ids])[0] if ids else "")
        return [r.numpy().decode("utf-8") if hasattr(r, "numpy") else str(r) for r in results]
