"""`keras-s2s explore`: a local page where every loaded run translates the same sentence, side
by side, with its cross-attention as an interactive heat map.

The page (`static/`: plain HTML, CSS and JavaScript, no external resources) talks to a small
JSON API:

- `GET /api/runs` → `{"runs": [{"name", "arch", "has_attention"}], "hangul_font": family or
  null, "max_characters": 5000}`.
- `POST /api/translate` with `{"text", "strategy": "greedy" | "beam" | "sample", "beam_width",
  "alpha", "n_best", "temperature", "seed"}` (all but "text" optional) → `{"text" (as
  translated), "notes": [...], "results": [one per run, in order]}`; each result holds
  "translation", "score", "log_probability", "length_penalty" (beam search), "seconds" (of
  decoding; a strategy's first use, which traces its decoder, is decoded once beforehand),
  "source_tokens", "target_tokens", "attention" (`(layers, heads, outputs, sources)` nested
  lists, from `Translator.attention_heads`, or null with the reason in "attention_note"),
  "notes" and "alternatives" (the next best beam hypotheses, the same fields without
  attention).

Bad requests get status 400 and `{"error": "one line"}`. The stdlib's threading HTTP server is
enough for one learner's browser; translations run one at a time (a lock), as TensorFlow would
share the cores anyway. Texts come back as JSON and the page only ever sets them as text, so
neither the input nor a vocabulary token can inject markup; the Content-Security-Policy header
refuses any script, style or font not served from here.
"""

import json
import logging
import math
import os
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from keras_s2s.checks import check_choice, check_int, check_number

logger = logging.getLogger(__name__)

#: Longer texts are cut to this many characters (with a note on the page).
MAX_CHARACTERS = 5000
#: The widest beam the page may ask for (a wider one would stall the page for long inputs).
MAX_BEAM_WIDTH = 16
#: The largest request body accepted, in bytes.
MAX_BODY_BYTES = 1 << 20
STRATEGIES = ("greedy", "beam", "sample")
_FIELDS = ("text", "strategy", "beam_width", "alpha", "n_best", "temperature", "seed")
_STATIC = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
           "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
NO_ATTENTION = ("no attention: the decoder sees the source only through one fixed-length "
                "context vector, the encoder's final state, so no output step looks back at "
                "single source tokens")


def strategy_of(request):
    """The `keras_s2s.decoding` strategy a translate request asks for (greedy by default)."""
    from keras_s2s.decoding import Beam, Greedy, Sample

    kind = request.get("strategy", "greedy")
    check_choice("strategy", kind, STRATEGIES)
    if kind == "beam":
        width = request.get("beam_width", 4)
        check_int("beam_width", width, 1, MAX_BEAM_WIDTH)
        return Beam(width=width, alpha=request.get("alpha", 0.6),
                    n_best=request.get("n_best", 1))
    if kind == "sample":
        temperature, seed = request.get("temperature", 1.0), request.get("seed")
        check_number("temperature", temperature, 0.0, 10.0)
        check_int("seed", seed, 0, 2 ** 31 - 1, optional=True)
        return Sample(temperature=temperature, seed=seed)
    return Greedy()


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
        from keras_s2s import run as run_files
        from keras_s2s.training.config import TrainConfig
        from keras_s2s.plotting import find_hangul_font
        from keras_s2s.inference.translator import Translator

        if not run_dirs:
            raise ValueError("give at least one trained run directory")
        for run_dir in run_dirs:
            run_files.check_trained(run_dir)
        names = [os.path.basename(os.path.abspath(run_dir)) for run_dir in run_dirs]
        names = [name if names.count(name) == 1 else run_dir  # runs named alike: their paths
                 for name, run_dir in zip(names, run_dirs)]
        self.runs = []
        for name, run_dir in zip(names, run_dirs):
            self.runs.append({
                "name": name, "translator": Translator.load(run_dir),
                "arch": TrainConfig.load(run_files.config_path(run_dir)).arch})
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
        notes = []
        if len(text) > MAX_CHARACTERS:
            notes.append(f"The text was cut to its first {MAX_CHARACTERS:,} characters "
                         f"(it had {len(text):,}).")
            text = text[:MAX_CHARACTERS]
        if not text.strip():
            notes.append("The text is empty: there is nothing to translate.")
        with self._lock:
            results = [self._translate(run, text, strategy) for run in self.runs]
        return {"text": text, "notes": notes, "results": results}

    def _translate(self, run, text, strategy):
        translator = run["translator"]
        if (run["name"], strategy) not in self._traced:
            translator.translate(["1"], strategy=strategy)  # traces this strategy's decoder
            self._traced.add((run["name"], strategy))
        start = time.perf_counter()
        (translation,) = translator.translate([text], strategy=strategy)
        seconds = time.perf_counter() - start
        heads = translator.attention_heads(translation)  # (layers, heads, T, S) or None
        result = {"run": run["name"], "arch": run["arch"], "seconds": round(seconds, 4),
                  **self._hypothesis(translation, strategy),
                  "source_tokens": translation.source_tokens,
                  "attention": None if heads is None else heads.astype(float).round(4).tolist(),
                  "attention_note": None if translator.model.has_attention else NO_ATTENTION,
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


class _Handler(BaseHTTPRequestHandler):
    """Routes: the page and its files, and the two API calls; every error is JSON."""

    explorer = None  # set on the subclass `make_server` makes
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        logger.info("%s %s", self.address_string(), format % args)

    def _send(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", _POLICY)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status, value):
        self._send(status, json.dumps(value, ensure_ascii=False, allow_nan=False).encode(),
                   "application/json")

    def _error(self, status, message):
        self._send_json(status, {"error": message})

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/":
            self._send(200, _static_file("index.html"), _STATIC["index.html"])
        elif path.startswith("/static/") and path[len("/static/"):] in _STATIC:
            name = path[len("/static/"):]
            self._send(200, _static_file(name), _STATIC[name])
        elif path == "/api/runs":
            self._send_json(200, self.explorer.runs_json())
        elif path == "/api/translate":
            self._error(405, "POST a JSON object to /api/translate")
        else:
            self._error(404, f"no page at {path}")

    do_HEAD = do_GET

    def do_POST(self):
        if urllib.parse.urlsplit(self.path).path != "/api/translate":
            self._error(404, f"nothing to POST to at {self.path}")
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self.close_connection = True
            self._error(411, "the request needs a Content-Length")
            return
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(413, f"the request body must be at most {MAX_BODY_BYTES:,} bytes, got "
                             f"{int(length):,}")
            return
        body = self.rfile.read(int(length))
        try:
            request = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError) as error:  # JSON, UTF-8 or nesting errors
            self._error(400, f"the request body is not JSON in UTF-8: {error}")
            return
        try:
            answer = self.explorer.translate_json(request)
        except ValueError as error:
            self._error(400, str(error).splitlines()[0])
            return
        except Exception as error:  # the page shows it and stays usable
            logger.exception("translating %r failed", request)
            self._error(500, f"the translation failed: {type(error).__name__}")
            return
        self._send_json(200, answer)


def make_server(explorer, host="127.0.0.1", port=8080):
    """A `ThreadingHTTPServer` answering for `explorer` (port 0: any free one)."""
    handler = type("Handler", (_Handler,), {"explorer": explorer})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def url_of(server):
    host, port = server.server_address[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def run(run_dirs, host="127.0.0.1", port=8080):
    """Load the runs, print the page's URL on one line, and serve until interrupted."""
    server = make_server(Explorer(run_dirs), host, port)
    print(f"Attention explorer of {len(run_dirs)} run(s) at {url_of(server)}", flush=True)
    with server:
        server.serve_forever()
