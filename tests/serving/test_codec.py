"""JSON <-> tensor conversion, against util/json_tensor.cc's rules."""

import base64

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2

from keras_s2s.serving import codec
from keras_s2s.serving.errors import ServingError


@pytest.mark.parametrize(
    "value, digits, text",
    [
        (3.0, 9, "3.0"),
        (42.0, 9, "42.0"),
        (9e6, 9, "9e+06"),
        (float(np.float32(0.1)), 9, "0.1"),
        (float(np.float32(1 / 3)), 9, "0.333333343"),
        (1 / 3, 17, "0.33333333333333331"),
        (-0.0, 9, "-0.0"),
        (float("nan"), 9, "NaN"),
        (float("inf"), 17, "Infinity"),
        (float("-inf"), 9, "-Infinity"),
    ],
)
def test_float_formatting(value, digits, text):
    assert codec.format_float(value, digits) == text


def test_row_response_with_one_and_several_outputs():
    single = {"y": np.array([[1, 2], [3, 4]], np.int64)}
    assert (
        codec.encode_predict_response(single, row_format=True)
        == '{"predictions": [[1, 2], [3, 4]]}'
    )
    several = {"a": np.array([True, False]), "b": np.array([b"x", b"\xe2\x82\xac"], dtype=object)}
    assert codec.encode_predict_response(several, row_format=True) == (
        '{"predictions": [{"a": true, "b": "x"}, {"a": false, "b": "\u20ac"}]}'
    )
    empty = {"y": np.zeros((0, 3), np.float32)}
    assert codec.encode_predict_response(empty, row_format=True) == '{"predictions": []}'


def test_row_response_needs_a_shared_batch_dimension():
    with pytest.raises(ServingError, match="has no shape information"):
        codec.encode_predict_response({"y": np.array(1.0, np.float32)}, row_format=True)
    with pytest.raises(ServingError, match="inconsistent batch size: 3 expecting: 2"):
        codec.encode_predict_response({"a": np.zeros(2), "b": np.zeros(3)}, row_format=True)


def test_columnar_response_keeps_scalars_and_encodes_bytes_outputs():
    outputs = {"score": np.array(0.5, np.float32), "image_bytes": np.array([b"\xff"], dtype=object)}
    assert codec.encode_predict_response(outputs, row_format=False) == (
        '{"outputs": {"score": 0.5, "image_bytes": [{"b64": "%s"}]}}'
        % base64.b64encode(b"\xff").decode()
    )


def test_unsupported_output_dtype():
    with pytest.raises(ServingError, match="unsupported type: half"):
        codec.encode_predict_response({"h": np.zeros(1, np.float16)}, row_format=False)


def test_request_values_are_typed_by_the_signature():
    arrays, row_format = codec.decode_predict_request(
        {"instances": [{"s": {"b64": "AAE="}, "f": [1, 2.5], "u": 255}]},
        {"s": tf.string, "f": tf.float64, "u": tf.uint8},
    )
    assert row_format
    assert arrays["s"].tolist() == [b"\x00\x01"]
    assert arrays["f"].dtype == np.float64 and arrays["f"].tolist() == [[1.0, 2.5]]
    assert arrays["u"].dtype == np.uint8 and arrays["u"].tolist() == [255]


def test_columnar_request_keeps_each_input_shape():
    arrays, row_format = codec.decode_predict_request(
        {"inputs": {"a": 1.5, "b": [[1, 2]], "extra": "ignored"}}, {"a": tf.float32, "b": tf.int32}
    )
    assert not row_format
    assert arrays["a"].shape == () and arrays["b"].shape == (1, 2)


def test_float_overflow_becomes_infinity():
    (array,) = codec.decode_predict_request({"inputs": [1e300, -1e300]}, {"x": tf.float32})[
        0
    ].values()
    assert array.tolist() == [float("inf"), float("-inf")]


@pytest.mark.parametrize(
    "value, dtype, message",
    [
        (True, tf.float32, "JSON Value: true Type: True is not of expected type: float"),
        (300, tf.int8, "JSON Value: 300 Type: Number is not of expected type: int8"),
        (-1, tf.uint32, "is not of expected type: uint32"),
        (2**63, tf.int64, "is not of expected type: int64"),
        (1, tf.string, "JSON Value: 1 Type: Number is not of expected type: string"),
        ({"b64": "x", "y": 1}, tf.string, "Type: Object is not of expected type: string"),
        (None, tf.bool, "JSON Value: null Type: Null is not of expected type: bool"),
        ([[1], [2, 3]], tf.int32, "Expecting tensor size: 1 but got: 2"),
        ([[1], 2], tf.int32, "Expecting a list at depth 1"),
    ],
)
def test_wrong_values_are_refused(value, dtype, message):
    with pytest.raises(ServingError, match=".*") as error:
        codec.json_to_array(value, dtype)
    assert error.value.code == "INVALID_ARGUMENT"
    assert message in error.value.message


def test_unsupported_input_dtype_is_unimplemented():
    with pytest.raises(ServingError) as error:
        codec.json_to_array([1.0], tf.bfloat16)
    assert error.value.http_status == 501


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "JSON Parse error: The document is empty. at offset: 0"),
        (b"{} x", "The document root must not be followed by other values."),
        (b'{"a": 1 "b": 2}', "Missing a comma or '}' after an object member."),
        (b'{"a": [1 2]}', "Missing a comma or ']' after an array element."),
        (b'{"a": "x}', "Missing a closing quotation mark in string."),
        (b'{"a": "\xff"}', "Invalid encoding in string."),
    ],
)
def test_parse_errors_use_rapidjson_wording(body, message):
    with pytest.raises(ServingError) as error:
        codec.parse_json(body)
    assert error.value.code == "INVALID_ARGUMENT"
    assert message in error.value.message


def test_parse_accepts_nan_and_infinity():
    assert codec.parse_json(b'{"x": [NaN, Infinity, -Infinity]}')["x"][1] == float("inf")


def test_examples_with_context():
    (serialized,) = codec.decode_examples(
        {
            "context": {"lang": "en", "n": 1},
            "examples": [{"n": [2, 3], "w": 0.5, "flag": True, "raw": {"b64": "/w=="}}],
        }
    )
    example = example_pb2.Example.FromString(serialized)
    features = example.features.feature
    assert features["lang"].bytes_list.value == [b"en"]
    assert features["n"].int64_list.value == [2, 3]  # the example's value replaces the context's
    assert features["w"].float_list.value == [0.5]
    assert features["flag"].int64_list.value == [1]
    assert features["raw"].bytes_list.value == [b"\xff"]


@pytest.mark.parametrize(
    "request_body, message",
    [
        ({}, "Missing 'examples' key"),
        ({"examples": {}}, "'examples' must be an array"),
        ({"examples": []}, "'examples' array is empty"),
        ({"examples": [1]}, "must be a JSON object"),
        ({"examples": [{"a": None}]}, "Type: Null"),
        ({"examples": [{"a": [[1]]}]}, "Type: Array"),
        ({"examples": [{"a": 2**64}]}, "does not fit int64"),
    ],
)
def test_bad_examples(request_body, message):
    with pytest.raises(ServingError, match=".*") as error:
        codec.decode_examples(request_body)
    assert message in error.value.message


def test_classify_and_regress_results():
    outputs = {
        "classes": np.array([[b"a", b"b"]], dtype=object),
        "scores": np.array([[0.25, 0.75]], np.float32),
    }
    assert codec.encode_classify_response(outputs, 1) == '{"results": [[["a", 0.25], ["b", 0.75]]]}'
    scores_only = {"scores": np.array([[0.5]], np.float32)}
    assert codec.encode_classify_response(scores_only, 1) == '{"results": [[["", 0.5]]]}'
    assert (
        codec.encode_regress_response({"outputs": np.array([[1.0], [2.5]], np.float32)}, 2)
        == '{"results": [1.0, 2.5]}'
    )
    with pytest.raises(ServingError, match="Input batch size did not match output batch size"):
        codec.encode_regress_response({"outputs": np.array([1.0], np.float32)}, 2)
    with pytest.raises(ServingError, match="Expected scores Tensor of DT_FLOAT"):
        codec.encode_classify_response({"scores": np.array([[1.0]])}, 1)
