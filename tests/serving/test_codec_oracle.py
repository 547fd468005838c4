"""The REST codec's output and error text against references we did not write: numpy's float
formatting (Dragon4) and python-rapidjson, the C++ JSON library TF Serving parses and writes JSON
with.

TF Serving writes each float of an output in `WriteDecimal` (tensorflow_serving/util/
json_tensor.cc): printf `%g` (six significant digits, through absl::StrCat) when that text reads
back as the same float or double, else `%.*g` with max_digits10 (9 for float32, 17 for float64);
".0" after a whole number written without an exponent; NaN, Infinity and -Infinity as bare
tokens. Its error messages print a refused JSON number the same way (`JsonValueToString`), as a
float32 when rapidjson's `Value::IsFloat` holds. The expected digits are numpy's correctly
rounded ones (Dragon4, not printf), read back by rapidjson's parser; and %g is used exactly when
numpy's shortest round-trip text of the value has at most six significant digits.

Deliberate difference from rapidjson: TF Serving does not write tensor floats with rapidjson's
`Writer::Double` (its shortest text of the value as a double, which would write a float32 0.1 as
0.10000000149011612: the noise `WriteDecimal` exists to avoid), so rapidjson's number text is not
a reference for floats. rapidjson is the reference for reading the text back, for NaN and the
infinities, and for strings, which TF Serving writes with rapidjson's `Writer::String`.
"""

import json
import re
from decimal import Decimal

import numpy as np
import orjson
import pytest
import rapidjson
import tensorflow as tf
from hypothesis import example, given, settings
from hypothesis import strategies as st

from keras_s2s.serving import codec
from keras_s2s.serving.errors import ServingError

_SETTINGS = settings(max_examples=150, deadline=None)
_MAX_DIGITS = {np.float32: 9, np.float64: 17}
_PREFIX, _SUFFIX = '{"outputs": [', "]}"


def _finite_floats(dtype):
    """Finite floats of `dtype` (subnormals, +-0 and both ends of the exponent range included),
    and values a hair from a six-digit rounding tie (seven digits ending in 5)."""
    width = 32 if dtype == np.float32 else 64
    near_ties = st.builds(
        lambda digits, exponent, negative: (-1) ** negative * float(f"{digits}5e{exponent}"),
        st.integers(100_000, 999_999),
        st.integers(-40 if width == 32 else -300, 30 if width == 32 else 300),
        st.booleans(),
    )
    values = st.floats(width=width, allow_nan=False, allow_infinity=False) | near_ties
    return values.map(dtype).filter(np.isfinite)


def _expected_value(value, dtype):
    """The number TF Serving's text must hold, and the %g precision that wrote it: numpy's six
    correctly rounded digits when rapidjson reads them back as `value`, else max_digits10's."""
    six = np.format_float_scientific(value, unique=False, precision=5)
    if dtype(rapidjson.loads(six.replace(".e", "e"))) == value:
        return Decimal(six), 6
    digits = _MAX_DIGITS[dtype]
    return Decimal(np.format_float_scientific(value, unique=False, precision=digits - 1)), digits


def _shortest_digits(value):
    """How many significant digits numpy's shortest round-trip text of `value` has."""
    mantissa = np.format_float_scientific(value, unique=True).split("e")[0]
    return len(mantissa.lstrip("-").replace(".", "").lstrip("0")) or 1


def _output_tokens(array):
    """The text of each element of a 1-D output, as a columnar predict response writes it."""
    text = codec.encode_predict_response({"y": array}, row_format=False)
    assert text.startswith(_PREFIX) and text.endswith(_SUFFIX), text
    return text[len(_PREFIX) : -len(_SUFFIX)].split(", ")


def _check_float_text(text, value, dtype):
    expected, precision = _expected_value(value, dtype)
    assert Decimal(text) == expected, (text, value)
    assert (precision == 6) == (_shortest_digits(value) <= 6), (text, value)
    exponent = expected.adjusted() if expected else 0
    assert ("e" in text) == (exponent < -4 or exponent >= precision), (text, value)
    assert "." in text or "e" in text, text  # whole numbers keep ".0"
    assert text.startswith("-") == bool(np.signbit(value)), text
    for parsed in (rapidjson.loads(text), json.loads(text), orjson.loads(text)):
        assert dtype(parsed) == value and np.signbit(dtype(parsed)) == np.signbit(value), text


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_outputs_have_tf_servings_digits_and_read_back_exactly(dtype):
    @_SETTINGS
    @given(st.lists(_finite_floats(dtype), min_size=1, max_size=40))
    @example([np.finfo(dtype).max, np.finfo(dtype).smallest_subnormal, -0.0, 0.0, 1e6, 999999.5])
    @example([np.finfo(dtype).tiny, 1e-4, 9.999995e-5, 0.001953125, 123456789.0, 2.0**24 + 2])
    def check(values):
        array = np.array(values, dtype=dtype)
        for text, value in zip(_output_tokens(array), array):
            _check_float_text(text, value, dtype)

    check()


@_SETTINGS
@given(st.lists(_finite_floats(np.float32), min_size=1, max_size=20))
def test_regression_results_have_tf_servings_float_digits(values):
    array = np.array(values, dtype=np.float32)
    text = codec.encode_regress_response({"outputs": array}, len(array))
    tokens = text[len('{"results": [') : -len("]}")].split(", ")
    for token, value in zip(tokens, array):
        _check_float_text(token, value, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_floats_are_written_as_rapidjson_writes_them(dtype, value):
    expected = rapidjson.dumps(float(value))  # its kWriteNanAndInfFlag tokens, as TF Serving's
    assert _output_tokens(np.array([value, 1.0], dtype=dtype))[0] == expected


@_SETTINGS
@given(
    st.lists(st.floats(width=32), min_size=0, max_size=12),
    st.lists(st.floats(), min_size=0, max_size=12),
    st.integers(1, 3),
)
def test_responses_read_back_as_the_arrays_they_hold(floats32, floats64, columns):
    """Row and columnar responses of several outputs parse (rapidjson, json) to the same values,
    NaN and the signs of zeros and infinities included."""
    rows = max(len(floats32), len(floats64)) // columns
    outputs = {
        "scores": np.resize(np.array(floats32 or [0.0], np.float32), (rows, columns)),
        "logits": np.resize(np.array(floats64 or [0.0], np.float64), (rows, columns)),
        "lengths": np.arange(rows, dtype=np.int32),
    }
    for row_format in (True, False):
        text = codec.encode_predict_response(outputs, row_format)
        for parsed in (rapidjson.loads(text), json.loads(text)):
            if row_format:
                columns_read = {
                    name: [row[name] for row in parsed["predictions"]] for name in outputs
                }
            else:
                columns_read = parsed["outputs"]
            for name, array in outputs.items():
                read = np.array(columns_read[name], dtype=array.dtype).reshape(array.shape)
                np.testing.assert_array_equal(read, array)
                signed = ~np.isnan(array)  # NaN is written without its sign, as by TF Serving
                np.testing.assert_array_equal(np.signbit(read[signed]), np.signbit(array[signed]))


@_SETTINGS
@given(st.lists(st.text(max_size=12), min_size=1, max_size=6))
@example(["\x1f", "\x0b\x0e\x0f\x1a", 'quote " and \\u001f', "\x00\x7f/\u2028é한"])
def test_string_outputs_are_written_as_rapidjsons_writer_writes_them(texts):
    array = np.array([text.encode("utf-8") for text in texts], dtype=object)
    expected = ", ".join(rapidjson.dumps(text, ensure_ascii=False) for text in texts)
    assert codec.encode_predict_response({"y": array}, row_format=False) == (
        _PREFIX + expected + _SUFFIX
    )


def _refusal_text(value, dtype):
    """The `JSON Value: ...` text of the error that refuses `value` for an input of `dtype`."""
    with pytest.raises(ServingError) as refusal:
        codec.decode_predict_request({"instances": [value]}, {"x": dtype})
    message = str(refusal.value)
    match = re.search(r"JSON Value: (.*) Type: \w+ is not of expected type: \w+$", message)
    assert match, message
    return match.group(1)


@_SETTINGS
@given(st.floats(allow_nan=False, allow_infinity=False) | _finite_floats(np.float32))
@example(1 / 3)
@example(1e-50)
@example(-3.4028235e38)
@example(3.40282345e38)
def test_refused_numbers_are_printed_as_tf_serving_prints_them(value):
    """TF Serving prints a refused JSON number with `WriteDecimal` too, as a float32 when it
    lies in float32's range (rapidjson's `Value::IsFloat`: within +-3.4028234e38) and as a
    double beyond it."""
    text = _refusal_text(float(value), tf.int32)
    if abs(float(value)) <= 3.4028234e38:  # compared as doubles
        _check_float_text(text, np.float32(value), np.float32)
    else:
        _check_float_text(text, np.float64(value), np.float64)


@_SETTINGS
@given(st.text(max_size=12))
@example("\x1f\x0b")
def test_refused_strings_are_printed_as_rapidjsons_writer_writes_them(text):
    assert _refusal_text(text, tf.int32) == rapidjson.dumps(text, ensure_ascii=False)
