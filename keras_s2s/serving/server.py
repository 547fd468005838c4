"""`keras-s2s serve`: TensorFlow Serving's REST API for any SavedModel, without tensorflow_model_server.

Same URLs, bodies, responses, error messages and status codes as TF Serving's REST API, same flags
and models.config, so one client, one set of curl lines and one export directory work with both.

Why aiohttp rather than http.server: it is asynchronous (thousands of open keep-alive connections
cost no threads, and requests waiting for a batch do not hold one), mature and widely deployed,
small (no framework around it), and it enforces request body limits and HTTP/1.1 keep-alive
itself. Everything slow -- JSON decoding, tensor conversion, model execution, JSON encoding -- runs
in a thread pool (TensorFlow releases the GIL), so the event loop only routes requests.
"""

import argparse
import asyncio
import concurrent.futures
import json
import logging
import re
import signal
import socket
import threading
import urllib.parse

from aiohttp import web
from google.protobuf import json_format

from keras_s2s.serving import codec
from keras_s2s.serving.batching import BatchScheduler
from keras_s2s.serving.config import ConfigError, ServerOptions, add_arguments, read_model_config_file
from keras_s2s.serving.errors import ServingError
from keras_s2s.serving.models import ModelManager, status_json_entries

__all__ = ["ModelServer", "add_arguments", "run", "main"]

logger = logging.getLogger(__name__)

_V1_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
_POST_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.IGNORECASE
)
_GET_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE
)
_CORS_ORIGIN = re.compile(r"https?://.*")
_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}
# What libevent's evhttp_send_error answers for paths outside /v1 (not JSON).
_NOT_FOUND_HTML = "<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n</BODY></HTML>\n"
_METHOD_NAMES = {
    "predict": ("tensorflow/serving/predict", "tensorflow/serving/classify", "tensorflow/serving/regress"),
    "classify": ("tensorflow/serving/classify",),
    "regress": ("tensorflow/serving/regress",),
}
_SIGNATURE_KINDS = {"predict": "prediction", "classify": "classification", "regress": "regression"}


def _error_json(message):
    """TF Serving's error body, pretty-printed as rapidjson's PrettyWriter does."""
    return '{\n    "error": ' + json.dumps(message, ensure_ascii=False) + "\n}"


class ModelServer:
    """The REST server: models from `options`, HTTP on an aiohttp loop in a background thread.

    Example:
        server = ModelServer(ServerOptions(models=[ModelConfig("dates", "export/dates")], rest_api_port=0))
        port = server.start()  # loads the models, then listens on 127.0.0.1:port
        ...
        server.stop()
    """

    def __init__(self, options):
        self.options = options
        config_reader = None
        if options.model_config_file:
            path = options.model_config_file
            config_reader = lambda: read_model_config_file(path)  # noqa: E731
        self._manager = ModelManager(
            options.models,
            poll_wait_seconds=options.file_system_poll_wait_seconds,
            max_num_load_retries=options.max_num_load_retries,
            load_retry_interval_seconds=options.load_retry_interval_micros / 1e6,
            allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
            config_reader=config_reader,
            config_poll_wait_seconds=options.model_config_file_poll_wait_seconds,
        )
        self._timeout_seconds = options.rest_api_timeout_in_ms / 1000
        self._pool = None
        self._scheduler = None
        self._loop = None
        self._thread = None
        self.port = None

    @property
    def url(self):
        host = self.options.rest_api_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self):
        """Loads the models, starts listening, and returns the bound port (a free one for port 0)."""
        if self._thread is not None:
            raise RuntimeError("ModelServer is already started")
        self._manager.start()
        host = self.options.rest_api_host
        try:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.options.rest_api_num_threads, thread_name_prefix="rest"
            )
            if self.options.batching is not None:
                self._scheduler = BatchScheduler(self.options.batching)
            sock = socket.create_server(
                (host, self.options.rest_api_port), family=socket.AF_INET6 if ":" in host else socket.AF_INET
            )
            self.port = sock.getsockname()[1]
            self._loop = asyncio.new_event_loop()
            ready = concurrent.futures.Future()
            self._thread = threading.Thread(target=self._serve, args=(sock, ready), name="rest-api", daemon=True)
            self._thread.start()
            ready.result()
        except BaseException:
            self.stop()
            raise
        logger.info("Exporting HTTP/REST API at:%s:%d ...", host, self.port)
        return self.port

    def _serve(self, sock, ready):
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=self.options.rest_api_max_body_bytes)
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self._timeout_seconds)
        try:
            self._loop.run_until_complete(runner.setup())
            self._loop.run_until_complete(web.SockSite(runner, sock).start())
        except BaseException as error:
            sock.close()
            self._loop.run_until_complete(runner.cleanup())
            self._loop.close()
            ready.set_exception(error)
            return
        ready.set_result(None)
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def stop(self):
        """Stops listening (letting requests in flight finish), then batching, polling and the pool."""
        if self._thread is not None:
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._thread = None
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None
        self._manager.stop()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    # HTTP.

    async def _handle(self, request):
        path = request.rel_url.raw_path
        if not _V1_PATH.fullmatch(path):
            return web.Response(status=404, text=_NOT_FOUND_HTML, content_type="text/html")
        status, text = 200, ""
        try:
            if request.method == "OPTIONS":
                if not _CORS_ORIGIN.fullmatch(request.headers.get("Origin", "")):
                    raise ServingError("INVALID_ARGUMENT", "Origin header is missing in CORS preflight")
            else:
                text = await asyncio.wait_for(self._respond(request, path), self._timeout_seconds)
        except ServingError as error:
            status, text = error.http_status, _error_json(error.message)
        except asyncio.TimeoutError:
            status = 504
            text = _error_json(
                f"Deadline Exceeded: the request took longer than {self.options.rest_api_timeout_in_ms} ms "
                "(--rest_api_timeout_in_ms)"
            )
        except Exception as error:  # a bug here must still answer in TF Serving's format
            logger.exception("Request %s %s failed", request.method, path)
            status, text = 500, _error_json(f"INTERNAL: {type(error).__name__}: {error}")
        headers = {"Content-Type": "application/json"}
        if self.options.rest_api_enable_cors_support:
            headers.update(_CORS_HEADERS)
        return web.Response(status=status, body=text.encode("utf-8"), headers=headers)

    async def _respond(self, request, path):
        method = request.method
        post = _POST_PATH.fullmatch(path) if method == "POST" else None
        if post is not None and post.group(4) in _METHOD_NAMES:
            name, version, label, verb = post.groups()
            body = await self._read_body(request)
            return await self._post(verb, *_model_request(name, version, label), body)
        get = _GET_PATH.fullmatch(path) if method == "GET" else None
        if get is not None:
            name, version, label, subresource = get.groups()
            if name is None:
                raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
            name, version, label = _model_request(name, version, label)
            if subresource == "metadata":
                servable = self._manager.servable(name, version, label)
                return await self._call(_metadata_json, servable)
            return json.dumps(
                {"model_version_status": status_json_entries(self._manager.status(name, version))}, indent=1
            )
        raise ServingError("INVALID_ARGUMENT", f"Malformed request: {method} {path}")

    async def _read_body(self, request):
        limit = self.options.rest_api_max_body_bytes
        too_large = ServingError(
            "RESOURCE_EXHAUSTED",
            f"Request body is larger than {limit} bytes (--rest_api_max_body_bytes)",
            http_status=413,
        )
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None

    async def _call(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    async def _execute(self, signature, inputs):
        if self._scheduler is None:
            return await self._call(signature.run, inputs)
        return await asyncio.wrap_future(self._scheduler.submit(signature, signature.run, inputs))

    async def _post(self, verb, name, version, label, body):
        request = await self._call(codec.parse_json, body)
        signature_name = codec.signature_name_of(request)
        signature = self._manager.servable(name, version, label).signature(signature_name)
        if self.options.enable_signature_method_name_check and signature.method_name not in _METHOD_NAMES[verb]:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Expected {_SIGNATURE_KINDS[verb]} signature method_name to be "
                f"{' or '.join(_METHOD_NAMES[verb])}. Was: {signature.method_name}",
            )
        if verb == "predict":
            inputs, row_format = await self._call(codec.decode_predict_request, request, signature.input_dtypes)
            outputs = await self._execute(signature, inputs)
            return await self._call(codec.encode_predict_response, outputs, row_format)
        if len(signature.input_dtypes) != 1:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Expected one input Tensor in signature {signature_name}, got {sorted(signature.input_dtypes)}",
            )
        serialized = await self._call(codec.decode_examples, request)
        (input_name,) = signature.input_dtypes
        outputs = await self._execute(signature, {input_name: serialized})
        encode = codec.encode_classify_response if verb == "classify" else codec.encode_regress_response
        return await self._call(encode, outputs, len(serialized))


def _model_request(name, version, label):
    """Percent-decodes the model name and label and checks the version fits int64."""
    if version is not None:
        if int(version) >= 2**63:
            raise ServingError("INVALID_ARGUMENT", f"Failed to convert version: {version}")
        version = int(version)
    return urllib.parse.unquote(name), version, None if label is None else urllib.parse.unquote(label)


def _metadata_json(servable):
    """GetModelMetadataResponse as TF Serving's JSON (proto field names, defaults printed)."""
    signature_defs = {
        key: json_format.MessageToDict(
            signature_def, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        for key, signature_def in servable.signature_defs.items()
    }
    return json.dumps(
        {
            "model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": {"signature_def": signature_defs}},
        },
        indent=1,
    )


def run(args):
    """Serves the models of parsed flags `args` until SIGINT or SIGTERM."""
    server = ModelServer(ServerOptions.from_args(args))
    server.start()
    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping.wait(1.0):  # a timed wait keeps the main thread responsive to signals
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logger.info("Shutting down")
        server.stop()


def main(argv=None):
    """`keras-s2s serve` as a standalone program; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="keras-s2s serve", description="TensorFlow Serving's REST API for SavedModels, without TF Serving."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(args)
    except (ConfigError, ServingError, OSError) as error:
        logger.error("%s", error)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while models were still loading
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
