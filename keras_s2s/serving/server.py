"""`keras-s2s serve`: TensorFlow Serving's REST API for any SavedModel, without
tensorflow_model_server.

Same URLs, bodies, responses, error messages and status codes as TF Serving's REST API, same flags
and models.config, so one client, one set of curl lines and one export directory work with both.

Why aiohttp rather than http.server: it is asynchronous (thousands of open keep-alive connections
cost no threads, and requests waiting for a batch do not hold one), mature and widely deployed,
and small: its low-level server is used, with no framework around it. Everything slow -- gzip,
JSON decoding, tensor conversion, model execution, JSON encoding -- runs on threads
(TensorFlow, numpy and orjson do their work in C), so the event loop only reads, routes and
writes. Requests run in lanes by body size (small, regular, large; see `lanes`), each with its
own threads and its stages run in admission order, so that big requests cannot take the threads of
small ones, and requests finish one by one rather than all together; a request that would wait
past its deadline is refused at once (503), one past its deadline gets 504 and its stages that
have not started never start.

Hostile clients: a request's headers must arrive within `rest_api_header_timeout_in_ms`, its body
without pausing longer than `rest_api_body_timeout_in_ms`; idle keep-alive connections close after
`rest_api_keepalive_timeout_in_ms`; at most `rest_api_max_connections` are open. Every error,
HTTP-level ones included, is TF Serving's `{"error": ...}` JSON, without server internals; repeated
log lines are rate-limited.

TF Serving's gRPC API (`grpc_api`) runs in the same event loop on `--port`, sharing the models,
lanes, batching and limits. Versions replay their warm-up requests (`warmup`) before serving; with
`--monitoring_config_file`, TF Serving's Prometheus metrics (`metrics`) are served on the REST port.
"""

import argparse
import asyncio
import concurrent.futures
import functools
import http
import json
import logging
import re
import resource
import signal
import socket
import sys
import threading
import time
import urllib.parse
import zlib

from aiohttp import web, web_protocol

from keras_s2s.serving import codec, grpc_api, metrics
from keras_s2s.serving.batching import BatchScheduler
from keras_s2s.serving.config import (
    ConfigError,
    ServerOptions,
    add_arguments,
    read_model_config_file,
    read_monitoring_config_file,
)
from keras_s2s.serving.errors import ServingError
from keras_s2s.serving.lanes import Lane
from keras_s2s.serving.models import ModelManager, status_json_entries

__all__ = ["ModelServer", "add_arguments", "run", "main"]

logger = logging.getLogger(__name__)

_V1_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
_POST_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_GET_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_CORS_ORIGIN = re.compile(r"https?://.*")
_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}
# What libevent's evhttp_send_error answers for paths outside /v1 (not JSON).
_NOT_FOUND_HTML = ("<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n"
                   "<H1>Not Found</H1>\n</BODY></HTML>\n")
_METHOD_NAMES = {
    "predict": (
        "tensorflow/serving/predict",
        "tensorflow/serving/classify",
        "tensorflow/serving/regress",
    ),
    "classify": ("tensorflow/serving/classify",),
    "regress": ("tensorflow/serving/regress",),
}
_SIGNATURE_KINDS = {"predict": "prediction", "classify": "classification", "regress": "regression"}


def _error_json(message):
    """TF Serving's error body, pretty-printed as rapidjson's PrettyWriter does."""
    return '{\n    "error": ' + json.dumps(message, ensure_ascii=False) + "\n}"


def _error_response(status, message, close=False):
    """An error answer; `close` ends the connection after it (the request was not fully read)."""
    response = web.Response(
        status=status,
        body=_error_json(message).encode("utf-8", "replace"),
        headers={"Content-Type": "application/json"},
    )
    if close:
        response.force_close()
    return response


class RepeatedLogFilter(logging.Filter):
    """Lets at most `burst` records with the same logger, level and message template through per
    `interval` seconds; the next one let through says how many were dropped.

    One misbehaving client can make a server log the same line (with a traceback) thousands of
    times a second; that fills disks, not understanding.
    """

    def __init__(self, burst=5, interval=60.0):
        super().__init__()
        self._burst = burst
        self._interval = interval
        self._seen = {}  # key -> [window start, passed in window, dropped]
        self._lock = threading.Lock()

    def filter(self, record):
        key = (record.name, record.levelno, str(record.msg)[:80])
        now = time.monotonic()
        with self._lock:
            window = self._seen.get(key)
            if window is None or now - window[0] >= self._interval:
                dropped = window[2] if window is not None else 0
                self._seen[key] = [now, 1, 0]
                if len(self._seen) > 10000:  # many distinct lines: forget the old windows
                    self._seen = {key: self._seen[key]}
            elif window[1] < self._burst:
                window[1] += 1
                dropped = 0
            else:
                window[2] += 1
                return False
        if dropped:
            record.msg = f"{record.getMessage()} ({dropped} similar messages dropped)"
            record.args = None
        return True


#: Loggers that hostile traffic can make repeat themselves.
_RATE_LIMITED_LOGGERS = (
    "keras_s2s.serving.server",
    "keras_s2s.serving.batching",
    "keras_s2s.serving.lanes",
    "keras_s2s.serving.models",
    "aiohttp.server",
    "aiohttp.web",
    "asyncio",
)


class _Connection(web_protocol.RequestHandler):
    """aiohttp's HTTP/1.1 connection, plus a header deadline, the connection limit, and
    protocol errors (bad request line, URL or headers too long, bad method...) as JSON.

    The one use of aiohttp beyond its documented API: none of the three has a public hook (a
    middleware or `web.Application` sees requests only once parsed, and aiohttp has no header
    timeout nor connection limit), so the connection class is subclassed, overriding its
    protocol callbacks and `handle_error`; no private attribute of aiohttp's is read.
    """

    def __init__(self, server, header_timeout, **kwargs):
        super().__init__(server, **kwargs)
        self._server = server
        self._header_timeout = header_timeout
        self._header_timer = None
        self._busy = False

    def connection_made(self, transport):
        super().connection_made(transport)
        if not self._server.admit(self):
            transport.write(_SERVICE_UNAVAILABLE)
            self.force_close()
            return
        self._arm_header_timer()

    def connection_lost(self, exc):
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data):
        if not self._busy and self._header_timer is None:
            self._arm_header_timer()  # the first byte of the next request on this connection
        super().data_received(data)

    @property
    def busy(self):
        """Handling a request (else waiting for one, or for the rest of its headers)."""
        return self._busy

    def request_started(self):
        self._busy = True
        self._disarm_header_timer()

    def request_finished(self):
        self._busy = False

    def _arm_header_timer(self):
        self._disarm_header_timer()
        self._header_timer = asyncio.get_running_loop().call_later(
            self._header_timeout, self._headers_too_slow
        )

    def _disarm_header_timer(self):
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self):
        self._header_timer = None
        if not self._busy:
            self.force_close()

    def handle_error(self, request, status=500, exc=None, message=None):
        logger.info("Refused a malformed HTTP request (%d): %s", status, message or exc)
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        text = f"{phrase}: {message}" if status < 500 and message else phrase
        return _error_response(status, text, close=True)


def _raw_response(status, message):
    """A whole HTTP/1.1 response with TF Serving's error body, for when no request was parsed."""
    body = _error_json(message).encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_SERVICE_UNAVAILABLE = _raw_response(503, "Too many open connections (--rest_api_max_connections)")


class _Server(web.Server):
    """aiohttp's low-level server making `_Connection`s, at most `max_connections` open: past it
    the oldest connection not handling a request is closed to make room, or the new one refused."""

    def __init__(self, handler, max_connections, header_timeout, loop, **kwargs):
        super().__init__(handler, loop=loop, **kwargs)
        self._max_connections = max_connections
        self._header_timeout = header_timeout
        self._event_loop = loop
        self._connection_kwargs = kwargs

    def __call__(self):
        return _Connection(self, self._header_timeout, loop=self._event_loop,
                           **self._connection_kwargs)

    def admit(self, connection):
        """Whether `connection` may stay open, closing the oldest one not handling a request
        (idle, or still sending headers) to make room."""
        open_ = [other for other in self.connections if other.transport is not None]  # not closing
        if len(open_) <= self._max_connections:
            return True
        idle = next((other for other in open_ if other is not connection and not other.busy), None)
        if idle is None:
            return False
        idle.force_close()
        return True


class ModelServer:
    """The server: models from `options`, HTTP (and gRPC when `options.port` is set) on an
    asyncio loop in a background thread.

    Example:
        server = ModelServer(ServerOptions(models=[ModelConfig("dates", "export/dates")],
                                           rest_api_port=0, port=0))
        port = server.start()  # loads the models, then listens on 127.0.0.1:port
        server.grpc_port  # gRPC's (no gRPC without `port`)
        ...
        server.stop()
    """

    def __init__(self, options):
        self.options = options
        config_reader = None
        if options.model_config_file:
            path = options.model_config_file
            config_reader = lambda: read_model_config_file(path)  # noqa: E731
        allow_unavailable_labels = options.allow_version_labels_for_unavailable_models
        self._manager = ModelManager(
            options.models,
            poll_wait_seconds=options.file_system_poll_wait_seconds,
            max_num_load_retries=options.max_num_load_retries,
            load_retry_interval_seconds=options.load_retry_interval_micros / 1e6,
            allow_version_labels_for_unavailable_models=allow_unavailable_labels,
            config_reader=config_reader,
            config_poll_wait_seconds=options.model_config_file_poll_wait_seconds,
            warmup_iterations=(
                options.num_request_iterations_for_warmup if options.enable_model_warmup else 0
            ),
            xla_cpu_compilation_enabled=options.xla_cpu_compilation_enabled,
        )
        self._metrics_path = (
            read_monitoring_config_file(options.monitoring_config_file)
            if options.monitoring_config_file
            else None
        )
        self._timeout_seconds = options.rest_api_timeout_in_ms / 1000
        self._lanes = []  # (largest body in bytes, Lane), smallest first
        self._scheduler = None
        self._loop = None
        self._thread = None
        self._log_filter = RepeatedLogFilter()
        self._grpc_server = None
        self.port = None
        self.grpc_port = None  # the bound gRPC port, when options.port is set

    @property
    def url(self):
        host = self.options.rest_api_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self):
        """Loads the models, starts listening, and returns the bound port (a free one for
        port 0)."""
        if self._thread is not None:
            raise RuntimeError("ModelServer is already started")
        for name in _RATE_LIMITED_LOGGERS:
            logging.getLogger(name).addFilter(self._log_filter)
        self._manager.start()
        host = self.options.rest_api_host
        try:
            options = self.options
            bulk_model_runs = threading.BoundedSemaphore(options.rest_api_num_bulk_model_runs)
            self._lanes = [
                (limit, Lane(name, threads, self._timeout_seconds, model_runs))
                for name, limit, threads, model_runs in (
                    ("small", options.rest_api_small_request_bytes,
                     options.rest_api_num_small_request_threads, None),
                    ("regular", options.rest_api_large_request_bytes,
                     options.rest_api_num_threads, bulk_model_runs),
                    ("large", float("inf"), options.rest_api_num_large_request_threads,
                     bulk_model_runs),
                )
            ]
            if self.options.batching is not None:
                self._scheduler = BatchScheduler(self.options.batching)
            sock = socket.create_server(
                (host, self.options.rest_api_port),
                family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                backlog=min(self.options.rest_api_max_connections, socket.SOMAXCONN),
            )
            self.port = sock.getsockname()[1]
            self._loop = asyncio.new_event_loop()
            ready = concurrent.futures.Future()
            self._thread = threading.Thread(
                target=self._serve, args=(sock, ready), name="rest-api", daemon=True
            )
            self._thread.start()
            ready.result()
        except BaseException:
            self.stop()
            raise
        return self.port

    def _max_connections(self):
        """--rest_api_max_connections, within the open-file limit (raised to fit where allowed)."""
        wanted = self.options.rest_api_max_connections
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        needed = wanted + 256  # model files, pipes, the listening socket, TensorFlow's own
        if soft != resource.RLIM_INFINITY and soft < needed:
            target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass
        if soft != resource.RLIM_INFINITY and soft < needed:
            allowed = max(1, soft - 256)
            logger.warning(
                "Open-file limit %d allows %d connections, not %d", soft, allowed, wanted
            )
            return allowed
        return wanted

    def _serve(self, sock, ready):
        asyncio.set_event_loop(self._loop)
        options = self.options
        runner = None
        try:
            server = _Server(
                self._handle,
                max_connections=self._max_connections(),
                header_timeout=options.rest_api_header_timeout_in_ms / 1000,
                loop=self._loop,
                keepalive_timeout=options.rest_api_keepalive_timeout_in_ms / 1000,
                auto_decompress=False,  # bodies are inflated on lane threads, within the size limit
                access_log=None,
                max_line_size=8190,
                max_field_size=8190,
                max_headers=100,
            )
            runner = web.ServerRunner(server, shutdown_timeout=self._timeout_seconds)
            self._loop.run_until_complete(runner.setup())
            self._loop.run_until_complete(web.SockSite(runner, sock).start())
            if options.port is not None:
                self._loop.run_until_complete(self._start_grpc())
        except BaseException as error:
            if runner is not None:  # stops the site first, if it is serving the socket
                self._loop.run_until_complete(runner.cleanup())
            sock.close()
            self._loop.close()
            ready.set_exception(error)
            return
        ready.set_result(None)
        self._loop.run_forever()
        if self._grpc_server is not None:
            self._loop.run_until_complete(self._grpc_server.stop(self._timeout_seconds))
        self._loop.run_until_complete(runner.cleanup())
        pending = asyncio.all_tasks(self._loop)  # connections aiohttp's cleanup left waiting
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _start_grpc(self):
        """TF Serving's gRPC services on `options.port`, sharing the model manager, lanes,
        batching and body size limit with REST."""
        self._grpc_server, self.grpc_port = await grpc_api.start_server(
            self.options, self._manager, self._admitted, self._call, self._execute,
            metrics.record_request,
        )

    def stop(self):
        """Stops listening (letting requests in flight finish), then batching, polling and the
        lanes."""
        if self._thread is not None:
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._thread = None
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None
        self._manager.stop()
        for _, lane in self._lanes:
            lane.stop()
        self._lanes = []
        for name in _RATE_LIMITED_LOGGERS:
            logging.getLogger(name).removeFilter(self._log_filter)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    # HTTP.

    async def _handle(self, request):
        request.protocol.request_started()
        try:
            return await self._answer(request)
        finally:
            request.protocol.request_finished()

    async def _answer(self, request):
        path = request.rel_url.raw_path
        if path == self._metrics_path:
            return web.Response(text=metrics.exposition(), content_type="text/plain")
        if not _V1_PATH.fullmatch(path):
            return web.Response(status=404, text=_NOT_FOUND_HTML, content_type="text/html")
        start = time.monotonic()
        status, code, text, close = 200, "OK", "", False
        labels = {"model_name": "", "api": ""}  # filled in as the request is understood
        try:
            if request.method == "OPTIONS":
                if not _CORS_ORIGIN.fullmatch(request.headers.get("Origin", "")):
                    raise ServingError(
                        "INVALID_ARGUMENT", "Origin header is missing in CORS preflight"
                    )
            else:
                text = await asyncio.wait_for(
                    self._respond(request, path, labels), self._timeout_seconds
                )
        except ServingError as error:
            status, code, text = error.http_status, error.code, _error_json(error.message)
            close = status in (408, 413)  # the rest of the body is not read
        except asyncio.TimeoutError:
            status, code = 504, "DEADLINE_EXCEEDED"
            text = _error_json(
                "Deadline Exceeded: the request took longer than "
                f"{self.options.rest_api_timeout_in_ms} ms "
                "(--rest_api_timeout_in_ms)"
            )
        except Exception:  # a bug here must still answer in TF Serving's format, and say no more
            logger.exception("Request %s %s failed", request.method, path[:200])
            status, code, text = 500, "INTERNAL", _error_json(
                "INTERNAL: the server failed to handle the request (see its log)"
            )
        metrics.record_request(
            labels["model_name"], labels["api"], code, time.monotonic() - start
        )
        headers = {"Content-Type": "application/json"}
        if self.options.rest_api_enable_cors_support:
            headers.update(_CORS_HEADERS)
        response = web.Response(
            status=status, body=text.encode("utf-8", "replace"), headers=headers
        )
        if close:
            response.force_close()
        return response

    async def _respond(self, request, path, labels):
        """The answer's JSON; fills `labels` with the model name and API of its metrics."""
        method = request.method
        post = _POST_PATH.fullmatch(path) if method == "POST" else None
        if post is not None and post.group(4) in _METHOD_NAMES:
            name, version, label, verb = post.groups()
            model_request = _model_request(name, version, label)
            labels.update(model_name=model_request[0], api=verb)
            body, gzipped = await self._read_body(request)
            if gzipped:  # inflated in the lane of its size as sent, then run in that of its size
                limit = self.options.rest_api_max_body_bytes
                body = await self._admitted(
                    len(body), lambda ticket: self._call(ticket, _gunzip, body, limit)
                )
            return await self._admitted(
                len(body), lambda ticket: self._post(ticket, verb, *model_request, body)
            )
        get = _GET_PATH.fullmatch(path) if method == "GET" else None
        if get is not None:
            name, version, label, subresource = get.groups()
            if name is None:
                raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
            name, version, label = _model_request(name, version, label)
            labels["model_name"] = name
            if subresource == "metadata":
                return self._manager.servable(name, version, label).metadata_json
            return json.dumps(
                {"model_version_status": status_json_entries(self._manager.status(name, version))},
                indent=1,
            )
        raise ServingError("INVALID_ARGUMENT", f"Malformed request: {method} {path[:200]}")

    async def _read_body(self, request):
        """The body as sent and whether it is gzip: at most --rest_api_max_body_bytes (else
        413), with no pause longer than --rest_api_body_timeout_in_ms (else 408)."""
        limit = self.options.rest_api_max_body_bytes
        too_large = _body_too_large(limit)
        if request.content_length is not None and request.content_length > limit:
            raise too_large  # before any "100 Continue": the client need not send it
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", ""):
            raise ServingError(
                "UNIMPLEMENTED",
                f"Unsupported Content-Encoding: {encoding[:100]} (gzip and identity are)",
                http_status=415,
            )
        expect = request.headers.get("Expect")
        if expect is not None:
            if expect.lower() != "100-continue":
                raise ServingError(
                    "INVALID_ARGUMENT", f"Unsupported Expect: {expect[:100]}", http_status=417
                )
            # What aiohttp's web.Application does for routes (their default `expect_handler`);
            # its low-level server leaves it to the handler.
            await request.writer.write(b"HTTP/%d.%d 100 Continue\r\n\r\n" % request.version)
        chunks, size = [], 0
        pause = self.options.rest_api_body_timeout_in_ms / 1000
        while True:
            try:
                chunk = await asyncio.wait_for(request.content.readany(), pause)
            except asyncio.TimeoutError:
                raise ServingError(
                    "DEADLINE_EXCEEDED",
                    "The request body stopped arriving for "
                    f"{self.options.rest_api_body_timeout_in_ms} ms "
                    "(--rest_api_body_timeout_in_ms)",
                    http_status=408,
                ) from None
            except Exception as error:  # aiohttp's payload errors: truncated chunked body, ...
                raise ServingError(
                    "INVALID_ARGUMENT", f"Malformed request body: {error}", http_status=400
                ) from None
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks), encoding == "gzip"

    async def _admitted(self, size, work):
        """`await work(ticket)` with a ticket of the lane of `size` bytes (UNAVAILABLE if it
        would wait past the deadline)."""
        lane = next(lane for limit, lane in self._lanes if size <= limit)
        ticket = lane.admit(size)
        try:
            return await work(ticket)
        finally:
            lane.release(ticket)

    async def _call(self, ticket, function, *args):
        """Runs `function(*args)` as a job of `ticket`'s request, in its lane."""
        return await asyncio.wrap_future(ticket.lane.submit(ticket, function, *args))

    async def _execute(self, ticket, signature, inputs, name, verb):
        """Runs `signature` on `inputs` (batched with others when batching is on), recording
        the wall time as the runtime latency of model `name`."""
        if self._scheduler is None:
            return await self._call(ticket, self._run_model, ticket, signature, inputs, name,
                                    verb)
        start = time.monotonic()
        outputs = await asyncio.wrap_future(
            self._scheduler.submit(signature, signature.run, inputs)
        )
        metrics.record_runtime(name, verb.capitalize(), time.monotonic() - start)
        return outputs

    def _run_model(self, ticket, signature, inputs, name, verb):
        """`_execute` without batching, on a thread of `ticket`'s lane."""
        start = time.monotonic()
        outputs = ticket.stage(ticket.lane.run_model, signature.run, inputs)
        metrics.record_runtime(name, verb.capitalize(), time.monotonic() - start)
        return outputs

    async def _post(self, ticket, verb, name, version, label, body):
        """The answer's JSON. Without batching, every stage (parse, build the inputs, run the
        model, write JSON) is one job of the request's lane: each hand-off between the event
        loop and a lane thread costs a request two thread wake-ups, on a busy machine a time
        slice each. With batching the model runs in the batch scheduler, between a job
        before it and one after, so that waiting for a batch holds no lane thread."""
        model_request = (verb, name, version, label, body)
        if self._scheduler is None:
            return await self._call(ticket, self._post_unbatched, ticket, *model_request)
        signature, inputs, answer = await self._call(
            ticket, self._request_inputs, ticket, *model_request
        )
        outputs = await self._execute(ticket, signature, inputs, name, verb)
        return await self._call(ticket, answer, outputs)

    def _post_unbatched(self, ticket, verb, name, version, label, body):
        signature, inputs, answer = self._request_inputs(ticket, verb, name, version, label, body)
        outputs = self._run_model(ticket, signature, inputs, name, verb)
        return ticket.stage(answer, outputs)

    def _request_inputs(self, ticket, verb, name, version, label, body):
        """(signature, inputs, answer) of a POST body: the signature it names, its input
        arrays, and `answer(outputs)` → the response's JSON."""
        request = ticket.stage(codec.parse_json, body)
        signature_name = codec.signature_name_of(request)
        signature = self._manager.servable(name, version, label).signature(signature_name)
        if (
            self.options.enable_signature_method_name_check
            and signature.method_name not in _METHOD_NAMES[verb]
        ):
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Expected {_SIGNATURE_KINDS[verb]} signature method_name to be "
                f"{' or '.join(_METHOD_NAMES[verb])}. Was: {signature.method_name}",
            )
        if verb == "predict":
            inputs, row_format = ticket.stage(
                codec.decode_predict_request, request, signature.input_dtypes
            )
            return signature, inputs, functools.partial(
                codec.encode_predict_response, row_format=row_format
            )
        if len(signature.input_dtypes) != 1:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Expected one input Tensor in signature {signature_name}, got "
                f"{sorted(signature.input_dtypes)}",
            )
        serialized = ticket.stage(codec.decode_examples, request)
        (input_name,) = signature.input_dtypes
        encode = (
            codec.encode_classify_response if verb == "classify" else codec.encode_regress_response
        )
        return signature, {input_name: serialized}, functools.partial(
            encode, batch_size=len(serialized)
        )


def _body_too_large(limit):
    return ServingError(
        "RESOURCE_EXHAUSTED",
        f"Request body is larger than {limit} bytes (--rest_api_max_body_bytes)",
        http_status=413,
    )


def _gunzip(body, limit):
    """Inflates a gzip body, refusing more than `limit` bytes out (a small bomb inflates to GBs)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise ServingError(
            "INVALID_ARGUMENT", f"Content-Encoding is gzip but the body is not: {error}"
        ) from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise _body_too_large(limit)
    if not inflater.eof:
        raise ServingError("INVALID_ARGUMENT", "Content-Encoding is gzip but the body is truncated")
    return data


def _model_request(name, version, label):
    """Percent-decodes the model name and label and checks the version fits int64."""
    if version is not None:
        if len(version.lstrip("0")) > 19 or int(version) >= 2**63:
            raise ServingError("INVALID_ARGUMENT", f"Failed to convert version: {version[:40]}")
        version = int(version)
    return (
        urllib.parse.unquote(name),
        version,
        None if label is None else urllib.parse.unquote(label),
    )


def run(args):
    """Serves the models of parsed flags `args` until SIGINT or SIGTERM."""
    options = ServerOptions.from_args(args)
    server = ModelServer(options)
    port = server.start()
    # One line per API once both answer, as tensorflow_model_server logs them, whatever the
    # log level: scripts and people wait for them.
    print(f"Running gRPC ModelServer at {options.rest_api_host}:{server.grpc_port} ...",
          file=sys.stderr, flush=True)
    print(f"Exporting HTTP/REST API at:{options.rest_api_host}:{port} ...", file=sys.stderr,
          flush=True)
    stopping = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stopping.set())
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
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
        prog="keras-s2s serve",
        description="TensorFlow Serving's REST API for SavedModels, without TF Serving.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
