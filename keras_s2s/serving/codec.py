"""JSON <-> tensors the way TF Serving's util/json_tensor.cc converts them.

Requests: row (`instances`) and columnar (`inputs`) predict bodies become numpy arrays typed by the
signature's input dtypes; classify/regress bodies become serialized tf.train.Examples.
Responses: arrays become `predictions`/`outputs`/`results` JSON with TF Serving's float
formatting (`%g` when it round-trips, `.0` on whole numbers, bare NaN/Infinity) and
`{"b64": ...}` for outputs named `*_bytes`.
Error messages follow TF Serving's wording so clients can match on them.
"""

import base64
import binascii
import json
import math
import re

import numpy as np
import orjson
import tensorflow as tf
from tensorflow.core.example import example_pb2, feature_pb2

from keras_s2s.serving.errors import ServingError

_INTEGER_RANGES = {
    tf.int8: (-(2**7), 2**7 - 1),
    tf.int16: (-(2**15), 2**15 - 1),
    tf.int32: (-(2**31), 2**31 - 1),
    tf.int64: (-(2**63), 2**63 - 1),
    tf.uint8: (0, 2**8 - 1),
    tf.uint16: (0, 2**16 - 1),
    tf.uint32: (0, 2**32 - 1),
    tf.uint64: (0, 2**64 - 1),
}
_FLOAT_DIGITS = {tf.float32: 9, tf.float64: 17}  # max_digits10
_TF_TYPE_NAMES = {tf.float32: "float", tf.float64: "double", tf.float16: "half"}
_PARSE_ERRORS = {  # Python json message prefix -> rapidjson's GetParseError_En text
    "Expecting value": "Invalid value.",
    "Extra data": "The document root must not be followed by other values.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string": "Missing a closing quotation mark in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
    "Invalid control character": "Invalid encoding in string.",
}


def dtype_name(dtype):
    """TensorFlow's DataTypeString: "float", "double", "int32", "string", ..."""
    return _TF_TYPE_NAMES.get(dtype, dtype.name)


def _invalid(message):
    return ServingError("INVALID_ARGUMENT", message)


_MAX_VALUE_CHARS = 256
_RAPIDJSON_FLOAT_MAX = 3.4028234e38  # rapidjson's Value::IsFloat: a double within this range


def json_value_to_string(value):
    """A JSON value as TF Serving prints it inside error messages (JsonValueToString): a number
    with a fraction or exponent as `format_float` writes a float32 when it lies in float32's
    range (as rapidjson reads it back) and a double beyond it, a string as rapidjson's Writer
    escapes it. Arrays and objects are compact JSON (TF Serving's PrettyWriter spreads them over
    lines), cut after `_MAX_VALUE_CHARS` characters so that errors about huge values stay small."""
    if isinstance(value, float):
        if abs(value) <= _RAPIDJSON_FLOAT_MAX:
            return format_float(float(np.float32(value)), 9)
        return format_float(value, 17)
    if isinstance(value, str):
        return json_string(value)
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (RecursionError, ValueError):
        return "<value nested too deeply to print>"
    return text if len(text) <= _MAX_VALUE_CHARS else text[:_MAX_VALUE_CHARS] + "..."


def _json_type(value):
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _type_error(value, dtype):
    return _invalid(
        f"JSON Value: {json_value_to_string(value)} Type: {_json_type(value)} "
        f"is not of expected type: {dtype_name(dtype)}"
    )


def parse_json(body):
    """Parses a request body (bytes) as rapidjson does in TF Serving; errors worded as rapidjson's.

    orjson (C) parses the common case; a body it refuses is parsed again by the standard library
    for the cases it handles differently: NaN/Infinity (rapidjson's kParseNanAndInfFlag),
    numbers beyond double range (+-inf, as TF Serving gives), integers beyond 64 bits (doubles,
    as rapidjson stores them, even past Python's 4,300-digit int limit), lone surrogate escapes
    (refused), nesting past `MAX_PARSE_DEPTH` (`_parse_deep`), and rapidjson's error wording.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _invalid(
            f"JSON Parse error: Invalid encoding in string. at offset: {error.start}"
        ) from None
    if not text.strip():
        raise _invalid(f"JSON Parse error: The document is empty. at offset: {len(text)}")
    try:
        value = json.loads(text, parse_int=_json_int)
    except RecursionError:
        return _parse_deep(body)
    except json.JSONDecodeError as error:
        raise _invalid(_parse_error_message(text, error)) from None
    _check_surrogates(text)
    return value


#: Deepest nesting parsed into Python values; values under keys the server reads are refused past
#: it, values under other keys are checked for balance only (TF Serving ignores unknown keys).
MAX_PARSE_DEPTH = 512
_MAX_DEEP_BODY_BYTES = 16 << 20  # the numpy scan of `_parse_deep` costs ~20 bytes per byte
_KNOWN_KEYS = {"signature_name", "instances", "inputs", "examples", "context"}


def _json_int(digits):
    """Integers as rapidjson parses them: int64/uint64 exactly, anything larger as a double."""
    if len(digits) <= 20:
        value = int(digits)
        if -(2**63) <= value < 2**64:
            return value
    return float(digits)  # inf past double range, with no 4,300-digit limit


def _parse_error_message(text, error):
    reason = next(
        (rapidjson for prefix, rapidjson in _PARSE_ERRORS.items() if error.msg.startswith(prefix)),
        None,
    )
    if reason is None and error.msg.startswith("Expecting ',' delimiter"):
        closer, container = _innermost_closer(text, error.pos), _container(text, error.pos)
        reason = f"Missing a comma or '{closer}' after an {container}."
    return f"JSON Parse error: {reason or 'Unspecific syntax error.'} at offset: {error.pos}"


_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)


def _check_surrogates(text):
    """Refuses `\ud800`-style escapes that are not a high surrogate followed by a low one:
    the standard library accepts them, but they cannot be encoded as UTF-8 (rapidjson refuses)."""
    if "\\u" not in text:
        return
    pending = None  # (offset, end) of a high surrogate waiting for its low half
    for match in _ESCAPE.finditer(text):
        code = int(match.group(1), 16) if match.group(1) else None
        if pending is not None:
            if code is None or not 0xDC00 <= code <= 0xDFFF or match.start() != pending[1]:
                break
            pending = None
            continue
        if code is not None and 0xD800 <= code <= 0xDBFF:
            pending = (match.start(), match.end())
        elif code is not None and 0xDC00 <= code <= 0xDFFF:
            pending = (match.start(), None)
            break
    else:
        if pending is None:
            return
    raise _invalid(
        f"JSON Parse error: The surrogate pair in string is invalid. at offset: {pending[0]}"
    )


def _structure(data):
    """Per byte of `data`: nesting depth after it and whether it lies outside strings (numpy)."""
    array = np.frombuffer(data, dtype=np.uint8)
    index = np.arange(len(array), dtype=np.int32)
    backslash = array == 0x5C
    last_other = np.maximum.accumulate(np.where(backslash, -1, index))
    run_before = np.zeros(len(array), dtype=np.int32)
    run_before[1:] = index[:-1] - last_other[:-1]  # backslashes right before each byte
    quote = (array == 0x22) & (run_before % 2 == 0)
    outside = ((np.cumsum(quote) - quote) % 2 == 0) & ~quote
    opens = outside & ((array == 0x5B) | (array == 0x7B))
    closes = outside & ((array == 0x5D) | (array == 0x7D))
    return np.cumsum(opens.astype(np.int32) - closes.astype(np.int32)), outside


def _parse_deep(body):
    """A body nested deeper than the parser recurses: split its top-level object into members
    with a vectorised scan, parse the members the server reads, and only balance-check the others.

    TF Serving accepts a 500,000-deep value under an unknown key and refuses one under
    `signature_name` with 400; so does this.
    """
    too_deep = _invalid(
        f"JSON Parse error: the document is nested deeper than {MAX_PARSE_DEPTH} levels"
    )
    if len(body) > _MAX_DEEP_BODY_BYTES:
        raise too_deep
    depth, outside = _structure(body)
    text_start = len(body) - len(body.lstrip())
    if depth.min(initial=0) < 0 or depth[-1] != 0 or body[text_start : text_start + 1] != b"{":
        raise too_deep
    end = text_start + int(np.flatnonzero(depth[text_start:] == 0)[0])
    if body[end + 1 :].strip():
        raise _invalid(
            "JSON Parse error: The document root must not be followed by other values. at "
            f"offset: {end + 1}"
        )
    top = outside & (depth == 1)
    array = np.frombuffer(body, dtype=np.uint8)
    commas = np.flatnonzero(top & (array == 0x2C))
    colons = np.flatnonzero(top & (array == 0x3A))
    bounds = [text_start, *commas.tolist(), end]
    result = {}
    for start, stop in zip(bounds, bounds[1:]):
        colon = colons[(colons > start) & (colons < stop)]
        if not len(colon):
            raise too_deep
        colon = int(colon[0])
        try:
            key = json.loads(body[start + 1 : colon])
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise too_deep from None
        if not isinstance(key, str):
            raise too_deep
        value_depth = int(depth[colon:stop].max(initial=1)) - 1
        if value_depth <= MAX_PARSE_DEPTH:
            result[key] = parse_json(body[colon + 1 : stop])
        elif key == "signature_name":
            raise _invalid("'signature_name' key must be a string value.")
        elif key in _KNOWN_KEYS:
            raise _invalid(
                f"JSON Parse error: the value of '{key}' is nested deeper than {MAX_PARSE_DEPTH} "
                "levels"
            )
    return result


def _open_brackets(text, end):
    """Brackets still open at `end`, outside strings."""
    stack, in_string, escaped = [], False, False
    for char in text[:end]:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack


def _innermost_closer(text, end):
    stack = _open_brackets(text, end)
    return "}" if stack and stack[-1] == "{" else "]"


def _container(text, end):
    return "object member" if _innermost_closer(text, end) == "}" else "array element"


def is_b64_object(value):
    """`{"b64": "<base64>"}`: a binary string value, not a named-input object."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_named_object(value):
    return isinstance(value, dict) and not is_b64_object(value)


def _decode_b64(value):
    """Standard or web-safe base64, padding optional; anything else is refused."""
    encoded = value["b64"]
    web_safe = "-" in encoded or "_" in encoded
    try:
        return base64.b64decode(
            encoded + "=" * (-len(encoded) % 4), altchars=b"-_" if web_safe else None, validate=True
        )
    except (binascii.Error, ValueError):
        raise _invalid(
            f"JSON Value: {json_value_to_string(value)} not formatted correctly for base64 data"
        ) from None


def _scalar_converter(dtype):
    """Returns a function checking one JSON scalar against `dtype` and converting it."""
    if dtype in _FLOAT_DIGITS:

        def to_float(value):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _type_error(value, dtype)
            try:
                return float(value)
            except OverflowError:  # integers beyond double range, as rapidjson's double parse
                return math.copysign(math.inf, value)

        return to_float
    if dtype in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[dtype]

        def to_int(value):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise _type_error(value, dtype)
            return value

        return to_int
    if dtype == tf.bool:

        def to_bool(value):
            if not isinstance(value, bool):
                raise _type_error(value, dtype)
            return value

        return to_bool
    if dtype == tf.string:

        def to_bytes(value):
            if is_b64_object(value):
                return _decode_b64(value)
            if not isinstance(value, str):
                raise _type_error(value, dtype)
            try:
                return value.encode("utf-8")
            except UnicodeEncodeError:
                raise _invalid(
                    f"JSON Value: {json_value_to_string(value)}: The surrogate pair in string is "
                    "invalid."
                ) from None

        return to_bytes

    def unsupported(value):
        raise ServingError(
            "UNIMPLEMENTED",
            f"Conversion of JSON Value: {json_value_to_string(value)} to type: "
            f"{dtype_name(dtype)} is not supported",
        )

    return unsupported


def _numpy_dtype(dtype):
    return object if dtype == tf.string else dtype.as_numpy_dtype


#: Most dimensions a JSON value may have (numpy's limit; TF Serving's json_tensor allows no more).
MAX_RANK = 64
_KINDS = {  # JSON scalar types each dtype accepts on the fast path
    "float": {float, int},
    "int": {int},
    "bool": {bool},
}


def json_to_array(value, dtype):
    """A JSON value or (nested, rectangular) list as a numpy array of `dtype`; ragged lists refused.

    Numeric and bool values are converted by numpy in C (`_fast_array`); anything the fast path
    does not accept takes the element-by-element path below, which words the error.
    """
    array = _fast_array(value, dtype)
    if array is not None:
        return array
    shape, probe = [], value
    while isinstance(probe, list):
        shape.append(len(probe))
        if len(shape) > MAX_RANK:
            raise _invalid(
                f"JSON value is nested more than {MAX_RANK} levels deep; tensors have at most "
                f"{MAX_RANK} dimensions"
            )
        if not probe:
            break
        probe = probe[0]
    flat = []
    _flatten(value, shape, 0, _scalar_converter(dtype), flat)
    if dtype == tf.string:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    with np.errstate(over="ignore"):  # double -> float overflow gives +-inf, as in TF Serving
        return np.array(flat, dtype=_numpy_dtype(dtype)).reshape(shape)


def _kind(dtype):
    if dtype in _FLOAT_DIGITS:
        return "float"
    if dtype in _INTEGER_RANGES:
        return "int"
    return "bool" if dtype == tf.bool else None


def _fast_array(value, dtype):
    """`value` converted by numpy when it is rectangular and every scalar is of a type `dtype`
    accepts (no bools for numbers, no floats for integers, in range); None otherwise."""
    kind = _kind(dtype)
    if kind is None:
        return None
    try:
        objects = np.array(value, dtype=object)
    except (ValueError, RecursionError):  # ragged, or more than numpy's 64 dimensions
        return None
    flat = objects.ravel().tolist()
    if not set(map(type, flat)) <= _KINDS[kind]:  # lists left inside: ragged
        return None
    try:
        if kind == "float":
            with np.errstate(over="ignore"):
                return (
                    np.array(flat, dtype=np.float64)
                    .astype(dtype.as_numpy_dtype)
                    .reshape(objects.shape)
                )
        if kind == "int":
            wide = np.array(flat, dtype=np.uint64 if dtype == tf.uint64 else np.int64)
            low, high = _INTEGER_RANGES[dtype]
            if wide.size and not (low <= int(wide.min()) and int(wide.max()) <= high):
                return None
            return wide.astype(dtype.as_numpy_dtype).reshape(objects.shape)
        return np.array(flat, dtype=bool).reshape(objects.shape)
    except OverflowError:  # integers beyond 64 bits or float range: the exact path decides
        return None


def _flatten(value, shape, depth, convert, out):
    if depth == len(shape):
        if isinstance(value, list):
            raise _invalid(
                f"Expecting a scalar at depth {depth} of shape {shape} "
                f"but got JSON Value: {json_value_to_string(value)}"
            )
        out.append(convert(value))
        return
    if not isinstance(value, list):
        raise _invalid(
            f"Expecting a list at depth {depth} of shape {shape} but got JSON Value: "
            f"{json_value_to_string(value)}"
        )
    if len(value) != shape[depth]:
        raise _invalid(
            f"Expecting tensor size: {shape[depth]} but got: {len(value)} at depth {depth} "
            f"(ragged lists are not supported): {json_value_to_string(value)}"
        )
    for item in value:
        _flatten(item, shape, depth + 1, convert, out)


def signature_name_of(request):
    """The request's `signature_name`, or "serving_default"; the request must be a JSON object."""
    if not isinstance(request, dict):
        raise _invalid(f"JSON Value: {json_value_to_string(request)} Is not object")
    name = request.get("signature_name", "serving_default")
    if not isinstance(name, str):
        raise _invalid("'signature_name' key must be a string value.")
    return name


def decode_predict_request(request, input_dtypes):
    """Converts a predict body into ({input name: array}, is_row_format)."""
    has_instances, has_inputs = "instances" in request, "inputs" in request
    if has_instances and has_inputs:
        raise _invalid(
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exclusively"
        )
    if has_instances:
        return _decode_instances(request["instances"], input_dtypes), True
    if has_inputs:
        return _decode_inputs(request["inputs"], input_dtypes), False
    raise _invalid("Missing 'inputs' or 'instances' key")


def _wrap_element_error(error, prefix):
    return ServingError(error.code, f"{prefix} Error: {error.code}: {error.message}")


def _decode_instances(instances, input_dtypes):
    if not isinstance(instances, list):
        raise _invalid("Expecting 'instances' to be an list/array")
    if not instances:
        raise _invalid("No values in 'instances' array")
    arrays = _fast_instances(instances, input_dtypes)
    return arrays if arrays is not None else _exact_instances(instances, input_dtypes)


def _fast_instances(instances, input_dtypes):
    """Stacks row-format inputs with numpy in one go (see `_fast_array`); None when any row is
    not plain or any value not of the fast path's types, for `_exact_instances` to explain."""
    if _is_named_object(instances[0]):
        names = set(input_dtypes)
        if not all(type(row) is dict and row.keys() == names for row in instances):
            return None
        columns = {name: [row[name] for row in instances] for name in input_dtypes}
    elif len(input_dtypes) == 1:
        columns = {next(iter(input_dtypes)): instances}
    else:
        return None
    arrays = {}
    for name, values in columns.items():
        arrays[name] = _fast_array(values, input_dtypes[name])
        if arrays[name] is None:
            return None
    return arrays


def _exact_instances(instances, input_dtypes):
    """Row-format inputs converted row by row, with TF Serving's error for the first bad one."""
    named = _is_named_object(instances[0])
    if not named and len(input_dtypes) != 1:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            f"required as per tensorinfo_map: {sorted(input_dtypes)}"
        )
    columns = {name: [] for name in input_dtypes}
    for index, element in enumerate(instances):
        if named:
            if not _is_named_object(element):
                raise _invalid(
                    f"Expecting object but got {_json_type(element)} at item {index} of input list"
                )
            if set(element) != set(input_dtypes):
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{json_value_to_string(element)} keys: {sorted(element)} expected: "
                    f"{sorted(input_dtypes)}"
                )
            for name, dtype in input_dtypes.items():
                try:
                    columns[name].append(json_to_array(element[name], dtype))
                except ServingError as error:
                    raise _wrap_element_error(
                        error,
                        f"Failed to process element: {index} key: {name} of 'instances' list.",
                    ) from None
        else:
            if _is_named_object(element):
                raise _invalid(f"Expecting value/list but got object at item {index} of input list")
            ((name, dtype),) = input_dtypes.items()
            try:
                columns[name].append(json_to_array(element, dtype))
            except ServingError as error:
                raise _wrap_element_error(
                    error, f"Failed to process element: {index} of 'instances' list."
                ) from None
    arrays = {}
    for name, values in columns.items():
        if values[0].ndim >= MAX_RANK:  # stacking adds the batch dimension
            raise _invalid(
                f"Instances of {name} have {values[0].ndim} dimensions; at most {MAX_RANK - 1} "
                "are supported"
            )
        expected = values[0].shape
        for index, value in enumerate(values):
            if value.shape != expected:
                raise _invalid(
                    f"Expecting shape {list(expected)} but got: {list(value.shape)} for input: "
                    f"{name} "
                    f"at item {index} of 'instances' list (all instances must have the same shape)"
                )
        arrays[name] = np.stack(values) if values[0].dtype != object else _stack_objects(values)
    return arrays


def _stack_objects(values):
    """np.stack for arrays of bytes objects (np.stack would nest 0-d object arrays)."""
    stacked = np.empty(sum(value.size for value in values), dtype=object)
    stacked[:] = [item for value in values for item in value.ravel().tolist()]
    return stacked.reshape((len(values),) + values[0].shape)


def _decode_inputs(inputs, input_dtypes):
    if _is_named_object(inputs):
        arrays = {}
        for name, dtype in input_dtypes.items():
            if name not in inputs:
                raise _invalid(f"Missing named input: {name} in 'inputs' object.")
            arrays[name] = json_to_array(inputs[name], dtype)
        return arrays
    if len(input_dtypes) != 1:
        raise _invalid(
            "inputs is a plain value/list, but expecting an object as multiple input tensors "
            f"required as per tensorinfo_map: {sorted(input_dtypes)}"
        )
    ((name, dtype),) = input_dtypes.items()
    return {name: json_to_array(inputs, dtype)}


def format_float(value, digits):
    """One float as TF Serving writes it: %g if it round-trips, else `digits` significant digits."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = "%g" % value
    round_trips = np.float32(text) == np.float32(value) if digits == 9 else float(text) == value
    if not round_trips:
        text = "%.*g" % (digits, value)
    if "." not in text and "e" not in text:
        text += ".0"
    return text


_CHUNK = 1 << 16  # elements formatted per C call: bounds how long one call holds the GIL


def _format_each(template, values):
    """`template % value` for each value, in chunks (other threads run between chunks)."""
    out = []
    for start in range(0, len(values), _CHUNK):
        out.extend(map(template.__mod__, values[start : start + _CHUNK]))
    return out


def _float32_short_round_trips(flat):
    """For each float32: does `%g` (6 significant digits) read back as the same float32?

    Vectorised: the 6-digit rounding is computed in float64 (error ~1e-16 relative, ~1e-9 float32
    ulp) and must lie within half the float32 gap on its side of the value. Values within 1e-4
    of the half-ulp limit (ties, decided by round-half-even) are checked one by one by reading
    `%g` back.
    """
    magnitude = np.abs(flat.astype(np.float64))
    positive = (magnitude > 0) & np.isfinite(magnitude)
    safe = np.where(positive, magnitude, 1.0)
    exponent = np.floor(np.log10(safe))
    exponent += (safe >= 10.0 ** (exponent + 1)).astype(np.float64) - (
        safe < 10.0**exponent
    ).astype(np.float64)
    scale = 10.0 ** (exponent - 5)
    rounded = np.rint(safe / scale) * scale
    with np.errstate(over="ignore", invalid="ignore"):
        up, down = np.spacing(np.abs(flat)), -np.spacing(
            -np.abs(flat)
        )  # float32 gaps (up: inf at max)
        gap = np.where(rounded >= safe, up, down).astype(np.float64)
        ulps_off = np.where(np.isfinite(gap), np.abs(rounded - safe) / gap, np.inf)
    short = ~positive | (ulps_off < 0.5 - 1e-4)
    ties = np.flatnonzero(positive & (np.abs(ulps_off - 0.5) <= 1e-4))
    values = flat[ties].tolist()
    short[ties] = [np.float32("%g" % value) == np.float32(value) for value in values]
    return short


def _float_tokens(flat, digits):
    """TF Serving's float text (`format_float`) for a flat array, vectorised.

    float32 values that `%g` writes exactly, between 1e-4 and 1e6, are written by orjson (its
    shortest form has the same digits and notation there); numpy sorts the others into groups of
    one printf format each, so that each costs one C-level format call.
    """
    finite = np.isfinite(flat)
    magnitude = np.abs(flat)
    if digits == 9:
        short = finite & _float32_short_round_trips(flat)
        by_orjson = short & (((magnitude >= 1e-4) & (magnitude < 1e6)) | (flat == 0))
        shortest = orjson.dumps(np.ascontiguousarray(flat), option=orjson.OPT_SERIALIZE_NUMPY)
        shortest = shortest.decode("ascii")[1:-1].split(",") if len(flat) else []
        if by_orjson.all():
            return shortest
    else:  # float64: check `%g` by reading it back (exact; float64 outputs are rare)
        short = np.zeros(flat.shape, dtype=bool)
        candidates = np.flatnonzero(finite)
        values = flat[candidates].tolist()
        short[candidates] = (
            np.array(list(map(float, _format_each("%g", values))), dtype=np.float64) == values
        )
        by_orjson, shortest = np.zeros(flat.shape, dtype=bool), None
    whole = finite & (flat == np.trunc(flat))
    rest = ~by_orjson
    groups = (  # (mask, printf format); whole numbers printed in full get ".0"
        (rest & short & whole & (magnitude < 1e6), "%.1f"),
        (rest & short & ~(whole & (magnitude < 1e6)), "%g"),
        (finite & ~short & whole & (magnitude < 10.0**digits), "%.1f"),
        (finite & ~short & ~(whole & (magnitude < 10.0**digits)), f"%.{digits}g"),
    )
    tokens = np.empty(flat.shape, dtype=object)
    if by_orjson.any():
        tokens[by_orjson] = np.array(shortest, dtype=object)[by_orjson]
    for mask, template in groups:
        indices = np.flatnonzero(mask)
        if len(indices):
            tokens[indices] = _format_each(template, flat[indices].astype(np.float64).tolist())
    for mask, text in (
        (np.isnan(flat), "NaN"),
        (flat == np.inf, "Infinity"),
        (flat == -np.inf, "-Infinity"),
    ):
        tokens[mask] = text
    return tokens.tolist()


_RAPIDJSON_STRING_ESCAPES = {code: f"\\u{code:04X}" for code in range(0x20)} | {
    ord(char): "\\" + escape for char, escape in zip('"\\\b\f\n\r\t', '"\\bfnrt')
}


def json_string(text):
    """`text` as a JSON string the way rapidjson's Writer writes it (TF Serving's string outputs):
    UTF-8 kept, control characters as \\b \\f \\n \\r \\t or \\u00XX with upper-case hex."""
    return '"' + text.translate(_RAPIDJSON_STRING_ESCAPES) + '"'


def _tokens(array, name):
    """The JSON text of each element of `array`, flattened in C order."""
    dtype = tf.as_dtype(array.dtype) if array.dtype != object else tf.string
    flat = array.ravel()
    if dtype in _FLOAT_DIGITS:
        return _float_tokens(flat, _FLOAT_DIGITS[dtype])
    if dtype in _INTEGER_RANGES:
        return list(map(str, flat.tolist()))
    if dtype == tf.bool:
        return np.where(flat, "true", "false").tolist()
    if dtype == tf.string:
        values = flat.tolist()
        if name.endswith("_bytes"):
            return ['{"b64": "%s"}' % base64.b64encode(value).decode("ascii") for value in values]
        return [json_string(value.decode("utf-8", "replace")) for value in values]
    raise _invalid(f"Tensor name: {name} has unsupported type: {dtype_name(dtype)} for JSON output")


def _joined(tokens, shape, row_marker=None):
    """The nested JSON list of C-order `tokens` shaped `shape`, built with one join: between
    elements i and i+1 go as many "]" and "[" as dimensions end at i+1. With `row_marker`, row
    boundaries (dim 0) get the marker instead, to split the text into per-row texts."""
    ndim = len(shape)
    if ndim == 0:
        return tokens[0]
    if not tokens:  # a zero-size dimension: nothing to join, the nesting alone
        return _empty_nest(shape)
    closes = np.zeros(len(tokens) - 1, dtype=np.int64)
    size = 1
    for dim in reversed(shape[1:]):
        size *= dim
        closes[size - 1 :: size] += 1
    separators = ["]" * k + ", " + "[" * k for k in range(ndim)]
    if row_marker is not None:
        separators[ndim - 1] = "]" * (ndim - 1) + row_marker + "[" * (ndim - 1)
    parts = [None] * (2 * len(tokens) - 1)
    parts[0::2] = tokens
    parts[1::2] = map(separators.__getitem__, closes.tolist())
    depth = ndim - 1 if row_marker is not None else ndim
    return "[" * depth + "".join(parts) + "]" * depth


def _empty_nest(shape):
    if not shape:
        return ""
    if shape[0] == 0:
        return "[]"
    return "[" + ", ".join([_empty_nest(shape[1:])] * shape[0]) + "]"


def _instances(array, name):
    """The JSON text of each row (dim 0 slice) of `array`."""
    tokens = _tokens(array, name)
    if array.ndim == 1:
        return tokens
    if array.size == 0:
        return [_empty_nest(array.shape[1:])] * array.shape[0]
    return _joined(tokens, array.shape, row_marker="\x00").split("\x00")


def encode_predict_response(outputs, row_format):
    """`{"predictions": ...}` for row requests, `{"outputs": ...}` for columnar ones."""
    if not row_format:
        if len(outputs) == 1:
            ((name, array),) = outputs.items()
            return '{"outputs": ' + _joined(_tokens(array, name), array.shape) + "}"
        members = [
            f"{json_string(name)}: {_joined(_tokens(array, name), array.shape)}"
            for name, array in outputs.items()
        ]
        return '{"outputs": {' + ", ".join(members) + "}}"
    batch_size = None
    for name, array in outputs.items():
        if array.ndim == 0:
            raise _invalid(f"Tensor name: {name} has no shape information ")
        if batch_size is not None and array.shape[0] != batch_size:
            raise _invalid(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: "
                f"{batch_size}"
            )
        batch_size = array.shape[0]
    if len(outputs) == 1:  # the rows joined are the whole array's nested list
        ((name, array),) = outputs.items()
        return '{"predictions": ' + _joined(_tokens(array, name), array.shape) + "}"
    rows = {name: _instances(array, name) for name, array in outputs.items()}
    predictions = [
        "{" + ", ".join(f"{json_string(name)}: {values[i]}" for name, values in rows.items()) + "}"
        for i in range(batch_size or 0)
    ]
    return '{"predictions": [' + ", ".join(predictions) + "]}"


def _feature_from_json(name, value, where):
    values = value if isinstance(value, list) else [value]
    feature = feature_pb2.Feature()
    kinds = set()
    for item in values:
        if isinstance(item, str) or is_b64_object(item):
            kinds.add("bytes_list")
        elif isinstance(item, bool) or isinstance(item, int):
            if not isinstance(item, bool) and not -(2**63) <= item < 2**63:
                raise _invalid(f"{where}: feature {name!r} value {item} does not fit int64")
            kinds.add("int64_list")
        elif isinstance(item, float):
            kinds.add("float_list")
        else:
            raise _invalid(
                f"{where}: feature {name!r} has JSON Value: {json_value_to_string(item)} Type: "
                f"{_json_type(item)}; "
                'expected a string, {"b64": ...}, number or bool, or a flat list of one of them'
            )
    if len(kinds) > 1:
        raise _invalid(
            f"{where}: feature {name!r} mixes value types {sorted(kinds)}: "
            f"{json_value_to_string(value)}"
        )
    if kinds == {"bytes_list"}:
        feature.bytes_list.value.extend(
            _decode_b64(item) if is_b64_object(item) else item.encode("utf-8") for item in values
        )
    elif kinds == {"int64_list"}:
        feature.int64_list.value.extend(int(item) for item in values)
    elif kinds == {"float_list"}:
        feature.float_list.value.extend(values)
    return feature


def _example_from_json(value, where):
    if not _is_named_object(value):
        raise _invalid(
            f"{where} must be a JSON object mapping feature names to values, got: "
            f"{json_value_to_string(value)}"
        )
    example = example_pb2.Example()
    for name, feature in value.items():
        example.features.feature[name].CopyFrom(_feature_from_json(name, feature, where))
    return example


def decode_examples(request):
    """Serialized tf.train.Examples for a classify/regress body (context merged into each)."""
    examples = request.get("examples")
    if examples is None:
        raise _invalid("Missing 'examples' key in request; expected a list of JSON objects")
    if not isinstance(examples, list):
        raise _invalid(
            f"'examples' must be an array of JSON objects, got: {json_value_to_string(examples)}"
        )
    if not examples:
        raise _invalid("'examples' array is empty")
    context = b""
    if "context" in request:
        context = _example_from_json(request["context"], "'context'").SerializeToString()
    serialized = np.empty(len(examples), dtype=object)
    for index, example in enumerate(examples):
        serialized[index] = (
            context + _example_from_json(example, f"'examples' item {index}").SerializeToString()
        )
    return serialized


def _check_batch(name, array, batch_size, allowed_ranks, shape_text):
    if array.shape[:1] != (batch_size,):
        raise _invalid(
            f"Input batch size did not match output batch size: {batch_size} vs. "
            f"{array.shape[0] if array.ndim else 'scalar'} (output {name})"
        )
    if array.ndim not in allowed_ranks:
        raise _invalid(f"Expected {name} Tensor shape: {shape_text} but got {list(array.shape)}")


def encode_classify_response(outputs, batch_size):
    """`{"results": [[[label, score], ...], ...]}` from `classes` and/or `scores` outputs
    (label "" without classes, score 0.0 without scores)."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    if classes is None and scores is None:
        raise _invalid(
            "Expected classification signature outputs to contain classes or scores, got "
            f"{sorted(outputs)}"
        )
    if classes is not None:
        if classes.dtype != object:
            raise _invalid(
                "Expected classes Tensor of DT_STRING. Got: "
                f"{dtype_name(tf.as_dtype(classes.dtype))}"
            )
        _check_batch("classes", classes, batch_size, (2,), "[batch_size num_classes]")
    if scores is not None:
        if scores.dtype != np.float32:
            raise _invalid(
                f"Expected scores Tensor of DT_FLOAT. Got: {dtype_name(tf.as_dtype(scores.dtype))}"
            )
        _check_batch("scores", scores, batch_size, (2,), "[batch_size num_classes]")
    if classes is not None and scores is not None and classes.shape != scores.shape:
        raise _invalid(
            f"Tensors class and score should match in shape, got {list(classes.shape)} and "
            f"{list(scores.shape)}"
        )
    reference = classes if classes is not None else scores
    results = []
    for row in range(batch_size):
        pairs = []
        for column in range(reference.shape[1]):
            label = classes[row, column].decode("utf-8", "replace") if classes is not None else ""
            score = float(scores[row, column]) if scores is not None else 0.0
            pairs.append(f"[{json_string(label)}, {format_float(score, 9)}]")
        results.append("[" + ", ".join(pairs) + "]")
    return '{"results": [' + ", ".join(results) + "]}"


def encode_regress_response(outputs, batch_size):
    """`{"results": [v1, v2, ...]}` from the `outputs` output ([batch] or [batch, 1] floats)."""
    values = outputs.get("outputs")
    if values is None:
        raise _invalid(f"Expected a regression output named 'outputs', got {sorted(outputs)}")
    if values.dtype != np.float32:
        raise _invalid(
            f"Expected output Tensor of DT_FLOAT. Got: {dtype_name(tf.as_dtype(values.dtype))}"
        )
    _check_batch("output", values, batch_size, (1, 2), "[batch_size] or [batch_size, 1]")
    if values.ndim == 2 and values.shape[1] != 1:
        raise _invalid(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{list(values.shape)}"
        )
    return (
        '{"results": ['
        + ", ".join(format_float(value, 9) for value in values.ravel().tolist())
        + "]}"
    )
