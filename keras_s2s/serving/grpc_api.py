"""TF Serving's gRPC API: `PredictionService.Predict`, `GetModelMetadata` and
`ModelService.GetModelStatus` (tensorflow_serving.apis), on `--port`.

The services run on `grpc.aio` in the REST server's event loop and share its model manager,
request lanes (admission, threads, deadline), batching and request size limit, so a gRPC predict
and a REST one cost and queue the same. Errors carry TF Serving's status codes and messages
(prediction_service_impl.cc, predict_util.cc, get_model_status_impl.cc): NOT_FOUND for an unknown
model or version, INVALID_ARGUMENT for a malformed request, FAILED_PRECONDITION for an unknown
signature, UNAVAILABLE when a lane refuses the request.

TensorProtos become numpy arrays and back in `to_array` and `to_tensor_proto` only, for the server
and for `GrpcConnection`, the client side used by `keras_s2s.serving.Client` for grpc:// URLs.
"""

import asyncio
import logging
import time

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from keras_s2s.serving.errors import ServingError, public_message

logger = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
_PREDICT_METHOD_NAMES = (
    "tensorflow/serving/predict",
    "tensorflow/serving/classify",
    "tensorflow/serving/regress",
)
_SIGNATURE_DEF_FIELD = "signature_def"
#: The RPCs TF Serving counts in its request metrics, by their API label
#: (prediction_service_impl.cc: Predict, Classify, Regress; metadata and status calls are not
#: counted). Classify and Regress answer UNIMPLEMENTED here.
_COUNTED_METHODS = ("Predict",)


def to_array(tensor_proto, name):
    """The numpy array of a TensorProto (INVALID_ARGUMENT if it does not hold one)."""
    try:
        return tf.make_ndarray(tensor_proto)
    except (TypeError, ValueError) as error:
        raise ServingError(
            "INVALID_ARGUMENT", f"Input {name}: malformed TensorProto: {public_message(str(error))}"
        ) from None


def to_tensor_proto(value, dtype=None):
    """A TensorProto of an array (or nested lists, converted to `dtype`, a tf.DType)."""
    return tf.make_tensor_proto(value, dtype=dtype)


def _version_choice(model_spec):
    """(version, label) of a ModelSpec, each None when not given."""
    choice = model_spec.WhichOneof("version_choice")
    return (
        model_spec.version.value if choice == "version" else None,
        model_spec.version_label if choice == "version_label" else None,
    )


def _require_model_spec(request):
    if not request.HasField("model_spec"):
        raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec")
    return request.model_spec


def _check_input_names(signature, request_inputs):
    """predict_util.cc's VerifyRequestInputsSize, for any difference of names."""
    sent, expected = set(request_inputs), set(signature.input_dtypes)
    if sent != expected:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(expected - sent))}}}.",
        )


def _output_aliases(signature, output_filter):
    """The outputs to return: `output_filter` checked as predict_util.cc does, else all."""
    aliases = []
    for alias in output_filter:
        if alias not in signature.output_dtypes:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                f"the set {{{','.join(sorted(signature.output_dtypes))}}}.",
            )
        if alias in aliases:
            raise ServingError("INVALID_ARGUMENT", f"duplicate output tensor alias: {alias}")
        aliases.append(alias)
    return aliases or sorted(signature.output_dtypes)


def _input_arrays(request_inputs, input_dtypes):
    """{alias: array} of the request's TensorProtos, each of its signature's dtype."""
    arrays = {}
    for alias, dtype in input_dtypes.items():
        tensor_proto = request_inputs[alias]
        sent = tf.dtypes.as_dtype(tensor_proto.dtype) if tensor_proto.dtype else None
        if sent != dtype:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Expects arg {alias} to be {dtype.name} but "
                f"{sent.name if sent is not None else 'no dtype'} is provided",
            )
        arrays[alias] = to_array(tensor_proto, alias)
    return arrays


class _Rpcs:
    """What the services share with the REST server, and the one place each RPC ends."""

    def __init__(self, manager, options, admitted, call, execute, record_request):
        self.manager = manager
        self.options = options
        self.admitted = admitted  # async (body bytes, work(ticket)) -> result, in a lane
        self.call = call  # async (ticket, function, *args): function(*args) on the lane's threads
        # async (ticket, signature, inputs, model name, verb): a model run, maybe batched
        self.execute = execute
        self.record_request = record_request  # metrics.record_request
        self._timeout_seconds = options.rest_api_timeout_in_ms / 1000

    async def answer(self, method, request, context, work):
        """`await work` within the request's deadline; every RPC's outcome is known here (a
        status code name), and errors become TF Serving's gRPC status and message. The methods
        TF Serving counts in its request metrics are counted here, by status."""
        started = time.monotonic()
        remaining = context.time_remaining()
        timeout = self._timeout_seconds if remaining is None else min(
            remaining, self._timeout_seconds)
        code, message = "OK", ""
        try:
            return await asyncio.wait_for(work, timeout)
        except asyncio.CancelledError:  # the client went away
            code = "CANCELLED"
            raise
        except ServingError as error:
            code, message = error.code, error.message
        except asyncio.TimeoutError:
            code = "DEADLINE_EXCEEDED"
            message = f"Deadline Exceeded: the request took longer than {timeout * 1000:.0f} ms"
        except Exception:  # a bug here must still answer with a status, and say no more
            logger.exception("gRPC %s failed", method)
            code, message = "INTERNAL", "the server failed to handle the request (see its log)"
        finally:
            seconds = time.monotonic() - started
            logger.debug("gRPC %s: %s in %.1f ms", method, code, seconds * 1000)
            if method in _COUNTED_METHODS:
                self.record_request(request.model_spec.name, method, code, seconds,
                                    entrypoint="GRPC")
        await context.abort(grpc.StatusCode[code], message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference answer UNIMPLEMENTED."""

    def __init__(self, rpcs):
        self._rpcs = rpcs

    async def Predict(self, request, context):  # noqa: N802  (the proto's method name)
        return await self._rpcs.answer("Predict", request, context, self._predict(request))

    async def GetModelMetadata(self, request, context):  # noqa: N802
        return await self._rpcs.answer("GetModelMetadata", request, context,
                                       self._metadata(request))

    async def _predict(self, request):
        rpcs = self._rpcs
        model_spec = _require_model_spec(request)
        servable = rpcs.manager.servable(model_spec.name, *_version_choice(model_spec))
        signature_name = model_spec.signature_name or DEFAULT_SIGNATURE
        if signature_name not in servable.signatures:
            raise ServingError(
                "FAILED_PRECONDITION", f'Serving signature key "{signature_name}" not found.'
            )
        signature = servable.signatures[signature_name]
        if (
            rpcs.options.enable_signature_method_name_check
            and signature.method_name not in _PREDICT_METHOD_NAMES
        ):
            raise ServingError(
                "INTERNAL",
                "Expected prediction signature method_name to be one of "
                f"{{{', '.join(_PREDICT_METHOD_NAMES)}}}. Was: {signature.method_name}",
            )
        _check_input_names(signature, request.inputs)
        aliases = _output_aliases(signature, request.output_filter)

        async def run(ticket):
            inputs = await rpcs.call(ticket, _input_arrays, request.inputs, signature.input_dtypes)
            outputs = await rpcs.execute(ticket, signature, inputs, servable.name, "predict")
            response = await rpcs.call(ticket, _predict_response, outputs, aliases)
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = signature_name
            return response

        return await rpcs.admitted(request.ByteSize(), run)

    async def _metadata(self, request):
        model_spec = _require_model_spec(request)
        if not request.metadata_field:
            raise ServingError(
                "INVALID_ARGUMENT",
                "GetModelMetadataRequest must specify at least one metadata_field",
            )
        for field in request.metadata_field:
            if field != _SIGNATURE_DEF_FIELD:
                raise ServingError("INVALID_ARGUMENT", f"Metadata field {field} is not supported")
        servable = self._rpcs.manager.servable(model_spec.name, *_version_choice(model_spec))
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in servable.signature_defs.items():
            signature_defs.signature_def[key].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata[_SIGNATURE_DEF_FIELD].Pack(signature_defs)
        return response


def _predict_response(outputs, aliases):
    response = predict_pb2.PredictResponse()
    for alias in aliases:
        response.outputs[alias].CopyFrom(to_tensor_proto(outputs[alias]))
    return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus; HandleReloadConfigRequest answers UNIMPLEMENTED (models.config is polled
    with --model_config_file_poll_wait_seconds instead)."""

    def __init__(self, rpcs):
        self._rpcs = rpcs

    async def GetModelStatus(self, request, context):  # noqa: N802
        return await self._rpcs.answer("GetModelStatus", request, context, self._status(request))

    async def _status(self, request):
        model_spec = _require_model_spec(request)
        version = model_spec.version.value if model_spec.HasField("version") else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in self._rpcs.manager.status(model_spec.name, version):
            status = response.model_version_status.add(
                version=entry.version,
                state=get_model_status_pb2.ModelVersionStatus.State.Value(entry.state),
            )
            error_codes = status.status.DESCRIPTOR.fields_by_name["error_code"].enum_type
            status.status.error_code = error_codes.values_by_name[entry.error_code].number
            status.status.error_message = entry.error_message
        return response


async def start_server(options, manager, admitted, call, execute, record_request):
    """Starts the services on `options.rest_api_host`:`options.port` (0: a free port) in the
    running event loop; returns the `grpc.aio` server and its port. Messages larger than
    --rest_api_max_body_bytes are refused (RESOURCE_EXHAUSTED), as REST bodies are.
    `record_request` is `metrics.record_request`, passed in so that the client side
    (`GrpcConnection`) needs no prometheus_client."""
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", options.rest_api_max_body_bytes),
        ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared port
    ])
    rpcs = _Rpcs(manager, options, admitted, call, execute, record_request)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(rpcs), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(rpcs), server)
    host = options.rest_api_host
    address = f"[{host}]:{options.port}" if ":" in host else f"{host}:{options.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"Cannot serve gRPC on {address} (--port): {error}") from None
    await server.start()
    return server, port


class GrpcConnection:
    """The client side: one model on a TF Serving gRPC port, answering as the REST client does
    (JSON-like values: lists, strings, dicts)."""

    def __init__(self, target, model_name, version=None, label=None, timeout=30.0):
        self.target = target
        self._channel = grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", -1)]
        )
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._model_name = model_name
        self._version = version
        self._label = label
        self._timeout = timeout
        self._input_dtypes = {}  # signature name -> {alias: tf.DType}

    def _fill_spec(self, model_spec, signature_name=None):
        model_spec.name = self._model_name
        if self._version is not None:
            model_spec.version.value = int(self._version)
        elif self._label is not None:
            model_spec.version_label = self._label
        if signature_name is not None:
            model_spec.signature_name = signature_name

    def _call(self, method, request):
        """`method(request)`; gRPC errors become (status code name, details) exceptions."""
        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise GrpcRequestError(error.code().name, error.details() or "") from None

    def status(self):
        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_spec(request.model_spec)
        return _to_dict(self._call(self._models.GetModelStatus, request))

    def _metadata_response(self):
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=[_SIGNATURE_DEF_FIELD]
        )
        self._fill_spec(request.model_spec)
        return self._call(self._predictions.GetModelMetadata, request)

    def metadata(self):
        return _to_dict(self._metadata_response())

    def input_dtypes(self, signature_name=None):
        """{alias: tf.DType} of a signature's inputs, from the model's metadata (fetched once)."""
        name = signature_name or DEFAULT_SIGNATURE
        if name not in self._input_dtypes:
            signature_defs = get_model_metadata_pb2.SignatureDefMap()
            self._metadata_response().metadata[_SIGNATURE_DEF_FIELD].Unpack(signature_defs)
            for key, signature_def in signature_defs.signature_def.items():
                self._input_dtypes[key] = {
                    alias: tf.dtypes.as_dtype(info.dtype)
                    for alias, info in signature_def.inputs.items()
                }
            if name not in self._input_dtypes:
                raise GrpcRequestError(
                    "FAILED_PRECONDITION", f'Serving signature key "{name}" not found.'
                )
        return self._input_dtypes[name]

    def predict(self, inputs, signature_name=None):
        """{output alias: nested lists} of a Predict of {input alias: values}."""
        dtypes = self.input_dtypes(signature_name)
        request = predict_pb2.PredictRequest()
        self._fill_spec(request.model_spec, signature_name)
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(to_tensor_proto(value, dtypes.get(alias)))
        response = self._call(self._predictions.Predict, request)
        return {alias: _to_json_like(to_array(tensor_proto, alias))
                for alias, tensor_proto in response.outputs.items()}

    def close(self):
        self._channel.close()


class GrpcRequestError(Exception):
    """A gRPC call that failed: `code` is the status code name, `message` its details."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _to_dict(message):
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _to_json_like(array):
    """Nested lists, strings decoded from UTF-8, as REST's JSON gives them."""
    if array.dtype == object:
        decode = np.vectorize(lambda value: value.decode("utf-8", "replace"), otypes=[object])
        array = decode(array) if array.size else array
    return array.tolist()
