"""Data: TSV reading, built-in synthetic tasks, subword tokenizers and the tf.data pipeline.

    pairs = read_tsv("train.tsv")                     # or synthetic.generate("dates", 10_000)
    source_tokenizer, target_tokenizer = train_tokenizers(pairs, vocab_size=8000)
    dataset, stats = make_dataset(pairs, source_tokenizer, target_tokenizer, batch_size=64,
                                  max_source_length=64, max_target_length=64)
"""

from keras_s2s.data.pipeline import DatasetStats, encode_source, make_dataset
from keras_s2s.data.synthetic import DATE_CASES, DATE_FORMATS, TASKS, format_date, generate
from keras_s2s.data.tokenizers import (SentencePieceSubwordTokenizer, SubwordTokenizer,
                                      load_tokenizer, train_tokenizers)
from keras_s2s.data.tsv import DataError, normalize_text, read_tsv

__all__ = [
    "read_tsv",
    "normalize_text",
    "DataError",
    "generate",
    "format_date",
    "TASKS",
    "DATE_FORMATS",
    "DATE_CASES",
    "SubwordTokenizer",
    "SentencePieceSubwordTokenizer",
    "load_tokenizer",
    "train_tokenizers",
    "make_dataset",
    "encode_source",
    "DatasetStats",
]
