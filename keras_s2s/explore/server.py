"""`keras-s2s explore`: a local page where every loaded run translates the same sentence, side
by side, with its cross-attention as an interactive heat map.

The page (`static/`: plain HTML, CSS and JavaScript, no external resources) talks to a small
JSON API:

- `GET /api/runs` → `{"runs": [{"name", "arch", "has_attention"}], "hangul_font": family or
  null, "max_characters": 5000}`.
- `POST /api/translate` with `{"text", "strategy": "greedy" | "beam" | "sample", "beam_width",
  "alpha", "n_best", "temperature", "seed", "prefix", "constraints"}` (all but "text"
  optional; "prefix" a string the translation starts with, "constraints" a list of phrases it
  must contain, beam search only: `Translator.translate`'s `prefixes` and `constraints` for
  this one text, with its checks) → `{"text" (as translated), "notes": [...], "results": [one
  per run, in order]}`; each result holds
  "translation", "score", "log_probability", "length_penalty" (beam search), "seconds" (of
  decoding; a strategy's first use, which traces its decoder, is decoded once beforehand),
  "source_tokens", "target_tokens", "attention" (`(layers, heads, outputs, sources)` nested
  lists, from `Translator.attention_heads`, or null with the reason in "attention_note"),
  "alignments" (`Translation.alignments` in the Pharaoh format of `translate --alignments`,
  "0-0 1-2 ...", from the last layer's attention averaged over heads; null without
  attention), "source_words" and "target_words" (the word index of each token, null for one
  of no word, so that the page marks the heat map's cells of each aligned pair), "notes" and
  "alternatives" (the next best beam hypotheses, the same fields without attention).

Every error is `{"error": "one line"}` JSON, for every path and method: 400 (a bad request, or
one the HTTP parser refuses), 404, 405, 408 (a body that stops arriving), 413, 503 (too many
translations waiting) and 500. The page is served by aiohttp's low-level server (as `keras-s2s
serve` is): connections cost no threads, the listen backlog takes bursts of connections, and a
connection idle for `IDLE_TIMEOUT` seconds (a new one that sends no request, or sends its headers
too slowly, included) is closed. Translations run one at a time on one worker thread, as
TensorFlow would share the cores anyway, so that the event loop keeps answering other
connections meanwhile. Texts come back as JSON and the page only ever sets them as text, so
neither the input nor a vocabulary token can inject markup; the Content-Security-Policy header
refuses any script, style or font not served from here.
"""

import asyncio
import concurrent.futures
import http
import json
import logging
import math
import os
import socket
import threading
import time
from importlib import resources

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError

from keras_s2s.checks import check_choice, check_int
from keras_s2s.inference.alignment import pharaoh, word_ids

logger = logging.getLogger(__name__)

#: Longer texts are cut to this many characters (with a note on the page).
MAX_CHARACTERS = 5000
#: The widest beam the page may ask for (a wider one would stall the page for long inputs).
MAX_BEAM_WIDTH = 16
#: The largest request body accepted, in bytes.
MAX_BODY_BYTES = 1 << 20
#: Seconds a connection may stay without a request (or with a request's headers unfinished).
IDLE_TIMEOUT = 15.0
#: Seconds a request's body may take to arrive.
BODY_TIMEOUT = 10.0
#: Translate requests that may wait for the translating thread; more get 503.
MAX_WAITING = 64
#: Connections the kernel queues before the server accepts them (it caps this at somaxconn).
BACKLOG = 1024
STRATEGIES = ("greedy", "beam", "sample")
_FIELDS = ("text", "strategy", "beam_width", "alpha", "n_best", "temperature", "seed", "prefix",
           "constraints")
_STATIC = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
           "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
NO_ATTENTION = ("no attention: the decoder sees the source only through one fixed-length "
                "context vector, the encoder's final state, so no output step looks back at "
                "single source tokens")


def strategy_of(request):
    """The `keras_s2s.decoding` strategy a translate request asks for (greedy by default): the
    fields of the strategy chosen go to `strategy_from_options`, whose values check their own
    bounds; only the beam width has a tighter one here."""
    from keras_s2s.decoding import Beam, Sample, strategy_from_options

    kind = request.get("strategy", "greedy")
    check_choice("strategy", kind, STRATEGIES)
    if kind == "beam":
        width = request.get("beam_width", Beam.width)
        check_int("beam_width", width, 1, MAX_BEAM_WIDTH)
        return strategy_from_options(beam=width, alpha=request.get("alpha"),
                                     n_best=request.get("n_best"))
    if kind == "sample":
        return strategy_from_options(temperature=request.get("temperature", Sample.temperature),
                                     seed=request.get("seed"))
    return strategy_from_options()


def guides_of(request):
    """The `Translator.translate` keyword arguments of a translate request's "prefix" (a string;
    "" is none) and "constraints" (a list of phrases; [] is none), for its one text; the
    Translator checks the phrases themselves, and that the strategy is a beam search."""
    guides = {}
    prefix = request.get("prefix", "")
    if not isinstance(prefix, str):
        raise ValueError(f"prefix must be a string, got {prefix!r:.40}")
    if prefix:
        guides["prefixes"] = [prefix]
    constraints = request.get("constraints", [])
    if not (isinstance(constraints, list) and all(isinstance(phrase, str)
                                                  for phrase in constraints)):
        raise ValueError(f"constraints must be a list of strings (phrases), got "
                         f"{constraints!r:.60}")
    if constraints:
        guides["constraints"] = [constraints]
    return guides


def _number(value):
    """A float for JSON (which has no NaN or infinity: those become null)."""
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


class Explorer:
    """The loaded runs and the JSON answers of the API (no HTTP here).

    Args:
        run_dirs: trained run directories, shown in this order.
    """

    def __init__(self, run_dirs):
        from keras_s2s.plotting import find_hangul_font
        from keras_s2s.inference.translator import Translator
        from keras_s2s.run import Run

        if not run_dirs:
            raise ValueError("give at least one trained run directory")
        opened = [Run.open(run_dir) for run_dir in run_dirs]
        names = [os.path.basename(os.path.abspath(run_dir)) for run_dir in run_dirs]
        names = [name if names.count(name) == 1 else run_dir  # runs named alike: their paths
                 for name, run_dir in zip(names, run_dirs)]
        self.runs = []
        for name, run in zip(names, opened):
            self.runs.append({"name": name, "translator": Translator.from_run(run),
                              "arch": run.config.arch})
        self.hangul_font = find_hangul_font()
        self._lock = threading.Lock()
        self._traced = set()  # (run name, strategy): decoded once, so timings leave out tracing

    def runs_json(self):
        return {"runs": [{"name": run["name"], "arch": run["arch"],
                          "has_attention": bool(run["translator"].model.has_attention)}
                         for run in self.runs],
                "hangul_font": self.hangul_font, "max_characters": MAX_CHARACTERS}

    def translate_json(self, request):
        """The answer to a translate request (a decoded JSON value); ValueError if it is bad."""
        if not isinstance(request, dict):
            raise ValueError(f"the request must be a JSON object, got {type(request).__name__}")
        unknown = sorted(set(request) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}: expected some of {', '.join(_FIELDS)}")
        text = request.get("text")
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {text!r:.40}")
        strategy = strategy_of(request)
        guides = guides_of(request)
        notes = []
        if len(text) > MAX_CHARACTERS:
            notes.append(f"The text was cut to its first {MAX_CHARACTERS:,} characters "
                         f"(it had {len(text):,}).")
            text = text[:MAX_CHARACTERS]
        if not text.strip():
            notes.append("The text is empty: there is nothing to translate.")
        with self._lock:
            results = [self._translate(run, text, strategy, guides) for run in self.runs]
        return {"text": text, "notes": notes, "results": results}

    def _translate(self, run, text, strategy, guides):
        translator = run["translator"]
        traced = (run["name"], strategy, tuple(guides))  # a decoder per strategy and guides
        if traced not in self._traced:
            translator.translate(["1"], strategy=strategy, **guides)  # traces that decoder
            self._traced.add(traced)
        start = time.perf_counter()
        (translation,) = translator.translate([text], strategy=strategy, **guides)
        seconds = time.perf_counter() - start
        heads = translator.attention_heads(translation)  # (layers, heads, T, S) or None
        alignments = translation.alignments
        result = {"run": run["name"], "arch": run["arch"], "seconds": round(seconds, 4),
                  **self._hypothesis(translation, strategy),
                  "source_tokens": translation.source_tokens,
                  "attention": None if heads is None else heads.astype(float).round(4).tolist(),
                  "attention_note": None if translator.model.has_attention else NO_ATTENTION,
                  "alignments": None if alignments is None else pharaoh(alignments),
                  "source_words": word_ids(translation.source_tokens,
                                           translator.source_tokenizer),
                  "target_words": word_ids(translation.output_tokens,
                                           translator.target_tokenizer),
                  "notes": [],
                  "alternatives": [self._hypothesis(alternative, strategy)
                                   for alternative in translation.alternatives]}
        source_length = len(translator.source_tokenizer.tokenize(text))
        if source_length >= translator.max_source_length:
            result["notes"].append(
                f"This model reads at most {translator.max_source_length - 1} source tokens; "
                f"the text has {source_length}, so the rest was dropped.")
        return result

    @staticmethod
    def _hypothesis(translation, strategy):
        """The fields of one hypothesis; beam search's score is the log-probability over the
        GNMT length penalty, which is given with it."""
        from keras_s2s.decoding import Beam, length_penalty

        penalty = (float(length_penalty(len(translation.output_tokens), strategy.alpha))
                   if isinstance(strategy, Beam) and translation.output_tokens else None)
        return {"translation": translation.text, "score": _number(translation.score),
                "log_probability": _number(translation.score * (penalty or 1.0)),
                "length_penalty": None if penalty is None else _number(penalty),
                "target_tokens": translation.output_tokens}


def _static_file(name):
    return (resources.files("keras_s2s.explore") / "static" / name).read_bytes()


class HTTPError(Exception):
    """An answer with an error `status` and a one-line `message`; `close` ends the connection
    (the rest of the request was not read)."""

    def __init__(self, status, message, close=False, allow=None):
        super().__init__(message)
        self.status, self.close, self.allow = status, close, allow


def _response(status, body, content_type, headers=None):
    return web.Response(status=status, body=body, headers={
        "Content-Type": f"{content_type}; charset=utf-8", "Content-Security-Policy": _POLICY,
        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", **(headers or {})})


def _json_response(status, value, headers=None):
    body = json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
    return _response(status, body, "application/json", headers)


def _error_response(error):
    response = _json_response(error.status, {"error": str(error)},
                              {"Allow": error.allow} if error.allow else None)
    if error.close:
        response.force_close()
    return response


class _Connection(web_protocol.RequestHandler):
    """aiohttp's HTTP/1.1 connection, answering what its parser refuses (a bad request line,
    headers too long, a bad method...) in JSON too."""

    def handle_error(self, request, status=500, exc=None, message=None):
        logger.info("refused a malformed request (%d): %s", status, message or exc)
        phrase = http.HTTPStatus(status).phrase
        text = f"{phrase}: {message}" if status < 500 and message else phrase
        return _error_response(HTTPError(status, text.splitlines()[0], close=True))


class _Server(web.Server):
    def __call__(self):
        return _Connection(self, loop=self._loop, **self._kwargs)


class ExplorerServer:
    """`explorer`'s page and API over HTTP, on an event loop in a background thread.

    Args:
        explorer: the `Explorer` answering.
        host, port: where to listen (port 0: any free one, then in `port`).
        idle_timeout, body_timeout, max_waiting: `IDLE_TIMEOUT`, `BODY_TIMEOUT` and
            `MAX_WAITING` by default.

    Example:
        with ExplorerServer(Explorer(["runs/dates"]), port=0) as server:
            print(server.url)
    """

    def __init__(self, explorer, host="127.0.0.1", port=8080, idle_timeout=IDLE_TIMEOUT,
                 body_timeout=BODY_TIMEOUT, max_waiting=MAX_WAITING):
        self.explorer, self.host, self.port = explorer, host, port
        self.idle_timeout, self.body_timeout = idle_timeout, body_timeout
        self.max_waiting = max_waiting
        self._waiting = 0  # translate requests handed to the worker and not yet answered
        self._worker = None
        self._loop = None
        self._thread = None

    @property
    def waiting(self):
        """Translate requests handed to the translating thread and not answered yet."""
        return self._waiting

    @property
    def url(self):
        return f"http://{'[' + self.host + ']' if ':' in self.host else self.host}:{self.port}/"

    def start(self):
        """Listen (OSError if the address is taken) and answer in the background."""
        if self._thread is not None:
            raise RuntimeError("the explorer's server is already started")
        sock = socket.create_server((self.host, self.port), backlog=BACKLOG,
                                    family=socket.AF_INET6 if ":" in self.host
                                    else socket.AF_INET)
        self.port = sock.getsockname()[1]
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="translate")
        self._loop = asyncio.new_event_loop()
        ready = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve, args=(sock, ready),
                                        name="explore-http", daemon=True)
        self._thread.start()
        try:
            ready.result()
        except BaseException:
            self.stop()
            raise
        return self

    def serve_forever(self):
        """Block until interrupted (KeyboardInterrupt)."""
        self._thread.join()

    def stop(self):
        """Stop listening and answering (requests in flight get a moment to finish)."""
        if self._thread is not None:
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._thread = None
        if self._worker is not None:
            self._worker.shutdown(cancel_futures=True)
            self._worker = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def _serve(self, sock, ready):
        asyncio.set_event_loop(self._loop)
        # An unread body (a refused or stalled one) is drained for at most `body_timeout`
        # before the connection closes, so that the client reads the answer, not a reset.
        server = _Server(self._handle, loop=self._loop, keepalive_timeout=self.idle_timeout,
                         lingering_time=self.body_timeout, max_line_size=8190,
                         max_field_size=8190)
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=2.0)
        try:
            self._loop.run_until_complete(runner.setup())
            self._loop.run_until_complete(web.SockSite(runner, sock, backlog=BACKLOG).start())
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

    async def _handle(self, request):
        try:
            return await self._answer(request)
        except HTTPError as error:
            return _error_response(error)
        except Exception as error:  # the page shows it and stays usable
            logger.exception("%s %s failed", request.method, request.path[:200])
            return _error_response(HTTPError(500, f"the request failed: {type(error).__name__}"))

    async def _answer(self, request):
        path, method = request.path, request.method
        if path == "/api/translate":
            if method != "POST":
                raise HTTPError(405, "POST a JSON object to /api/translate", allow="POST")
            return await self._translate(request)
        name = path[len("/static/"):] if path.startswith("/static/") else None
        if path not in ("/", "/api/runs") and name not in _STATIC:
            raise HTTPError(404, f"no page at {path[:200]}")
        if method not in ("GET", "HEAD"):
            raise HTTPError(405, f"{path[:200]} answers GET and HEAD, not {method[:20]}",
                            allow="GET, HEAD")
        if path == "/api/runs":
            return _json_response(200, self.explorer.runs_json())
        name = name or "index.html"
        return _response(200, _static_file(name), _STATIC[name])

    async def _translate(self, request):
        try:
            value = json.loads((await self._read_body(request)).decode("utf-8"))
        except (ValueError, RecursionError) as error:  # JSON, UTF-8 or nesting errors
            raise HTTPError(400, f"the request body is not JSON in UTF-8: {error}") from None
        if self._waiting >= self.max_waiting:
            raise HTTPError(503, f"the explorer is busy: {self._waiting} translations are "
                                 f"waiting; try again shortly")
        self._waiting += 1
        try:
            answer = await asyncio.get_running_loop().run_in_executor(
                self._worker, self.explorer.translate_json, value)
        except ValueError as error:
            raise HTTPError(400, str(error).splitlines()[0]) from None
        finally:
            self._waiting -= 1
        return _json_response(200, answer)

    async def _read_body(self, request):
        """The body: at most MAX_BODY_BYTES (else 413), within `body_timeout` (else 408)."""
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise _too_large()
        try:
            return await asyncio.wait_for(_read_at_most(request, MAX_BODY_BYTES),
                                          self.body_timeout)
        except asyncio.TimeoutError:
            raise HTTPError(408, f"the request body did not arrive within "
                                 f"{self.body_timeout:g} seconds", close=True) from None
        except HttpProcessingError as error:  # a truncated chunked body, ...
            raise HTTPError(400, f"the request body is malformed: {error.message}",
                            close=True) from None


def _too_large():
    return HTTPError(413, f"the request body must be at most {MAX_BODY_BYTES:,} bytes",
                     close=True)


async def _read_at_most(request, limit):
    """The body of `request` (chunked ones too), 413 past `limit` bytes."""
    chunks, size = [], 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def make_server(explorer, host="127.0.0.1", port=8080, **options):
    """An `ExplorerServer` answering for `explorer`, not started yet (port 0: any free one)."""
    return ExplorerServer(explorer, host, port, **options)


def run(run_dirs, host="127.0.0.1", port=8080):
    """Load the runs, print the page's URL on one line, and serve until interrupted."""
    with make_server(Explorer(run_dirs), host, port) as server:
        print(f"Attention explorer of {len(run_dirs)} run(s) at {server.url}", flush=True)
        server.serve_forever()
