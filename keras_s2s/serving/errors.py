"""Errors with TensorFlow status codes, mapped to HTTP the way TF Serving's http_server.cc does."""

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
            raise ValueError(f"Unknown error code {code!r}; expected one of {sorted(HTTP_STATUS_BY_CODE)}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or HTTP_STATUS_BY_CODE[code]

    def __str__(self):
        return f"{self.code}: {self.message}"


def error_from_exception(error):
    """Turns any exception raised while loading or running a model into a ServingError."""
    if isinstance(error, ServingError):
        return error
    if isinstance(error, tf.errors.OpError):
        return ServingError(_CODE_NAME_BY_TF_CODE.get(error.error_code, "UNKNOWN"), error.message)
    if isinstance(error, FileNotFoundError):
        return ServingError("NOT_FOUND", str(error))
    if isinstance(error, (TypeError, ValueError)):
        return ServingError("INVALID_ARGUMENT", str(error))
    return ServingError("UNKNOWN", f"{type(error).__name__}: {error}")
