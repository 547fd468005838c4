"""One way to check arguments: every public layer and model refuses a bad one with a ValueError
`"{name} must be {expected}, got {value!r}"` when it is constructed (a bool is no number)."""

import pytest

from keras_s2s import checks
from keras_s2s.layers import (BahdanauAttention, LuongAttention, MultiHeadAttention,
                              PositionwiseFeedForward, ScaledDotProductAttention,
                              SinusoidalPositionalEncoding, TransformerDecoderLayer,
                              TransformerEncoderLayer)
from keras_s2s.models import AttentionSeq2Seq, Seq2Seq, Transformer

BAD_ARGUMENTS = [
    (lambda: BahdanauAttention(units=True), "units must be a positive int, got True"),
    (lambda: BahdanauAttention(4, dropout=1.0), r"dropout must be a number in \[0.0, 1.0\), "
                                                r"got 1.0"),
    (lambda: LuongAttention(score="cosine"), r"score must be one of \('dot', 'general', "
                                             r"'concat'\), got 'cosine'"),
    (lambda: LuongAttention(units=0), "units must be a positive int or None, got 0"),
    (lambda: LuongAttention(scale="yes"), "scale must be True or False, got 'yes'"),
    (lambda: ScaledDotProductAttention(dropout=True), r"dropout must be a number in "
                                                      r"\[0.0, 1.0\), got True"),
    (lambda: MultiHeadAttention(num_heads=True, key_dim=4), "num_heads must be a positive int, "
                                                            "got True"),
    (lambda: MultiHeadAttention(2, key_dim=0), "key_dim must be a positive int, got 0"),
    (lambda: MultiHeadAttention(2, 4, value_dim=2.5), "value_dim must be a positive int or "
                                                      "None, got 2.5"),
    (lambda: MultiHeadAttention(2, 4, output_dim=0), "output_dim must be a positive int or "
                                                     "None, got 0"),
    (lambda: MultiHeadAttention(2, 4, dropout=-0.1), "dropout must be a number in"),
    (lambda: MultiHeadAttention(2, 4, use_bias=1), "use_bias must be True or False, got 1"),
    (lambda: PositionwiseFeedForward(True, 8), "d_model must be a positive int, got True"),
    (lambda: PositionwiseFeedForward(4, 8, dropout=2), "dropout must be a number in"),
    (lambda: SinusoidalPositionalEncoding(max_length=True), "max_length must be a positive "
                                                            "int, got True"),
    (lambda: SinusoidalPositionalEncoding(8, max_wavelength=0), "max_wavelength must be a "
                                                                "number > 0.0, got 0"),
    (lambda: TransformerEncoderLayer(8, 3, 16), "d_model must be divisible by num_heads"),
    (lambda: TransformerEncoderLayer(8, 2, 16, normalize_first="pre"),
     "normalize_first must be True or False, got 'pre'"),
    (lambda: TransformerDecoderLayer(8, 2, d_ff=True), "d_ff must be a positive int, got True"),
    (lambda: TransformerDecoderLayer(8, 2, 16, layer_norm_epsilon=-1),
     "layer_norm_epsilon must be a number > 0.0, got -1"),
    (lambda: Seq2Seq(10, 10, embedding_dim=True), "embedding_dim must be a positive int, got "
                                                  "True"),
    (lambda: Seq2Seq(10, 10, bidirectional_encoder="yes"),
     "bidirectional_encoder must be True or False, got 'yes'"),
    (lambda: AttentionSeq2Seq(10, 10, step_order="luong"), "step_order must be one of"),
    (lambda: AttentionSeq2Seq(10, 10, input_feeding=1), "input_feeding must be True or False"),
    (lambda: Transformer(10, 10, max_length=True), "max_length must be a positive int, got "
                                                   "True"),
    (lambda: Transformer(10, 10, tie_embeddings=0), "tie_embeddings must be True or False, "
                                                    "got 0"),
]


@pytest.mark.parametrize("make, message", BAD_ARGUMENTS,
                         ids=[message.split(" ")[0] for _, message in BAD_ARGUMENTS])
def test_bad_arguments_are_refused_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("check, arguments, message", [
    (checks.check_int, ("n", 3, 4, 9), r"n must be an int in \[4, 9\], got 3"),
    (checks.check_int, ("n", 1, 2), "n must be an int >= 2, got 1"),
    (checks.check_non_negative_int, ("seed", -1), "seed must be a non-negative int, got -1"),
    (checks.check_number, ("p", 0.0, 0.0, 1.0, False), r"p must be a number in \(0.0, 1.0\], "
                                                       r"got 0.0"),
    (checks.check_fraction, ("smoothing", False), r"smoothing must be a number in \[0.0, "
                                                  r"1.0\), got False"),
    (checks.check_choice, ("cell", ["lstm"], ("lstm", "gru")), r"cell must be one of"),
])
def test_each_check_says_what_was_expected(check, arguments, message):
    with pytest.raises(ValueError, match=message):
        check(*arguments)


def test_valid_values_and_none_where_optional_pass():
    checks.check_positive_int("units", None, optional=True)
    checks.check_number("rate", 1, 0.0)
    checks.check_fraction("dropout", 0)
    checks.check_bool("scale", False)
