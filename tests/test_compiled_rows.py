"""Decoding compiled with XLA is given at least `MIN_COMPILED_ROWS` decoder rows.

With one row (greedy search of one sentence), XLA's CPU backend drops the unit dimensions and
fuses each attention projection into a loop fusion (`kind=kLoop`) that walks its kernel column
by column, several times slower than the matrix kernel it calls for two rows or more.
"""

import re

import numpy as np
import tensorflow as tf

from keras_s2s.data.pipeline import encode_source
from keras_s2s.decoding import MIN_COMPILED_ROWS, Beam, Greedy
from keras_s2s.exporters.savedmodel import bucketed_source_ids
from keras_s2s.inference.translator import Translator


def loop_fused_dots(hlo):
    """The names of the loop fusions of optimized HLO text whose computation holds a dot."""
    bodies = dict(re.findall(r"^%(\S+) .*?\{\n(.*?)\n\}", hlo, flags=re.M | re.S))
    return [name for name in re.findall(r"kind=kLoop, calls=%([\w.\-]+)", hlo)
            if " dot(" in bodies[name]]


def test_one_sentence_compiles_its_projections_as_matrix_products(dates_transformer):
    """The program `Translator(jit_compile=True).translate` compiles for one sentence: no dot
    fused into a loop fusion, where the same decoder on the one row alone has them (the check
    can fail)."""
    translator = Translator.load(dates_transformer, jit_compile=True)
    text = "march 3, 1999"
    assert translator.translate([text])[0].text == Translator.load(
        dates_transformer).translate([text])[0].text
    ids = encode_source(tf.constant([text]), translator.source_tokenizer,
                        translator.max_source_length)
    padded = translator._padded_for_compilation(ids, Greedy().rows_per_input)
    assert padded.shape[0] == MIN_COMPILED_ROWS
    np.testing.assert_array_equal(padded[1], padded[0])
    decoder = translator._decoder(Greedy(), True)  # the function `translate` called

    def hlo(rows):
        return decoder.experimental_get_compiler_ir(rows, tf.constant([0, 0]))(
            stage="optimized_hlo")

    assert loop_fused_dots(hlo(ids)), "one row: XLA no longer fuses its projections"
    assert loop_fused_dots(hlo(padded)) == []


def test_a_beam_search_has_rows_enough_at_batch_1(dates_transformer):
    translator = Translator.load(dates_transformer, jit_compile=True)
    ids = tf.constant([[5, 6, 3]])
    assert translator._padded_for_compilation(ids, Beam(width=2).rows_per_input).shape[0] == 1
    assert translator._padded_for_compilation(ids, Beam(width=1).rows_per_input).shape[0] == 2


def test_an_xla_export_buckets_a_batch_of_one_as_two():
    """The export's buckets: 1 row → 2 (a copy of the first), 3 → 4, none stays none; a beam
    search (`min_rows=1`) keeps a batch of one."""
    ids = tf.constant([[5, 6, 3], [7, 3, 0], [8, 9, 3]])
    for rows, min_rows, expected in ((1, 2, 2), (3, 2, 4), (0, 2, 0), (1, 1, 1)):
        bucketed = bucketed_source_ids(ids[:rows], 32, 0, min_rows)
        assert bucketed.shape == (expected, 16)
        if rows:
            np.testing.assert_array_equal(bucketed[rows:, :3], np.repeat(ids[:1], expected - rows,
                                                                         axis=0))
