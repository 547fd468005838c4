"""Errors with TensorFlow status codes, mapped to HTTP the way TF Serving's http_server.cc does.

Messages sent to clients go through `public_message`: TensorFlow op errors carry the Python call
stack that built the graph and absolute server paths, which tell a client nothing it can act on
and an attacker where things are. The full text is logged server-side instead.
"""

import re

import tensorflow as tf

#: TensorFlow error code name -> HTTP status (tensorflow_serving/model_servers/http_server.cc).
HTTP_STATUS_BY_CODE = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}

_CODE_NAME_BY_TF_CODE = {getattr(tf.errors, name): name for name in HTTP_STATUS_BY_CODE}


class ServingError(Exception):
    """A request or load failure carrying a TensorFlow error code name (e.g. "NOT_FOUND").

    `http_status` overrides the code's HTTP status, for failures TF Serving has no code for
    (an oversized body is 413).
    """

    def __init__(self, code, message, http_status=None):
        if code not in HTTP_STATUS_BY_CODE:
            raise ValueError(
                f"Unknown error code {code!r}; expected one of {sorted(HTTP_STATUS_BY_CODE)}"
            )
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or HTTP_STATUS_BY_CODE[code]

    def __str__(self):
        return f"{self.code}: {self.message}"


# "Graph execution error:" and the "Detected at node X defined at (most recent call last):" stack
# that TensorFlow puts before the op's own message, one `File "...", line N, in f` entry per frame.
_TF_PREAMBLE = re.compile(
    r"^(Graph execution error:|Detected at node .* defined at \(most recent call last\):)$"
)
_STACK_FRAME = re.compile(r'^\s+File "[^"]*", line \d+, in ')
# The node and function names TensorFlow appends to an op's message (a graph's assertion), and
# the placeholder of a stack it did not record: nothing a client can act on.
_NODE_TRAILER = re.compile(r"^\s*\[\[\{\{.*\}\}\]\]( \[Op:\S+\])?$|^<stack traces unavailable>$")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(?:/[^\s/\"':,;()\[\]{}]+){2,}/?")
_MAX_MESSAGE_CHARS = 4096


def _shorten_path(match):
    """`/srv/models/dates/3/saved_model.pb` -> `.../3/saved_model.pb`: enough to tell which
    version failed, nothing about where the server keeps its files."""
    parts = match.group(0).rstrip("/").split("/")
    return ".../" + "/".join(parts[-2:])


def public_message(message):
    """`message` without TensorFlow's graph-construction stack, absolute paths shortened, and
    capped in length (a client echoing a 60 MB value must not get it back in the error)."""
    lines = message.splitlines()
    kept, skipping_frame = [], False
    for line in lines:
        if _NODE_TRAILER.match(line):
            continue
        if _TF_PREAMBLE.match(line.strip()) or _STACK_FRAME.match(line):
            skipping_frame = True
            continue
        if skipping_frame and (not line.strip() or line.startswith("    ")):
            continue  # the frame's source line, or the blank line between frames
        skipping_frame = False
        kept.append(line)
    text = _ABSOLUTE_PATH.sub(_shorten_path, "\n".join(kept).strip())
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[:_MAX_MESSAGE_CHARS] + "... (truncated)"
    return text


def error_from_exception(error):
    """Turns any exception raised while loading or running a model into a ServingError."""
    if isinstance(error, ServingError):
        return error
    if isinstance(error, tf.errors.OpError):
        return ServingError(
            _CODE_NAME_BY_TF_CODE.get(error.error_code, "UNKNOWN"), public_message(error.message)
        )
    if isinstance(error, FileNotFoundError):
        return ServingError("NOT_FOUND", public_message(str(error)))
    if isinstance(error, (TypeError, ValueError)):
        return ServingError("INVALID_ARGUMENT", public_message(str(error)))
    return ServingError("UNKNOWN", public_message(f"{type(error).__name__}: {error}"))
