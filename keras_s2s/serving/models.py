"""Loaded SavedModels and the version manager that keeps the right versions loaded.

The manager polls each model's base path for numbered version directories, picks the aspired ones
with the model's version policy, and loads/unloads them with TF Serving's
AvailabilityPreservingPolicy: a new version is loaded before the old one is unloaded, and an old
one stays while no aspired version is available. Requests hold a reference to the `Servable` they
were given, so unloading never fails a request in flight. A version that fails to load is kept in
the model status (state END with its error) as soon as it fails, and is never served; its
retries (`max_num_load_retries`, `load_retry_interval_seconds` apart) are scheduled, not waited
for, so one corrupt version delays no other model. A version's warm-up requests
(`keras_s2s.serving.warmup`) run before it becomes AVAILABLE; one that fails fails its load.
TF1 SavedModels (no object graph; reference variables such as `float_ref`) run in a
`tf.compat.v1.Session`, as TF Serving runs every model. A SavedModel whose graph must compile
with XLA (`tf.function(jit_compile=True)`, `keras-s2s export --xla on`) runs only with
`--xla_cpu_compilation_enabled`; without it, as in tensorflow_model_server, its calls fail with
INTERNAL "XLA compilation disabled", so its warm-up fails its load. (TF Serving fails only the
signatures that reach a compiled function; here every signature of such a version fails.)
"""

import dataclasses
import functools
import json
import logging
import re
import threading
import time

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tensorflow-text ops that TF Serving links)
from google.protobuf import json_format, message, text_format
from tensorflow.core.protobuf import config_pb2, saved_model_pb2

from keras_s2s.serving.errors import ServingError, error_from_exception, public_message
from keras_s2s.serving.warmup import replay_warmup_requests

logger = logging.getLogger(__name__)

SERVE_TAG = "serve"
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
_VERSION_DIR = re.compile(r"\d+")


@dataclasses.dataclass(eq=False)
class Signature:
    """One SignatureDef of a loaded version, with the function that runs it."""

    name: str
    method_name: str
    input_dtypes: dict  # alias -> tf.DType
    output_dtypes: dict
    function: object  # {alias: numpy array} -> {alias: numpy array}

    def run(self, inputs):
        """Runs the signature on {alias: numpy array}; returns {alias: numpy array}."""
        try:
            return self.function(inputs)
        except Exception as error:  # TF op errors, binding errors: report with TF's code
            logger.warning("Signature %s failed: %s", self.name, error)
            raise error_from_exception(error) from None


def _eager_runner(function, input_dtypes):
    """Calls a TF2 signature function on numpy inputs."""

    def run(inputs):
        tensors = {
            name: tf.constant(inputs[name], dtype=dtype) for name, dtype in input_dtypes.items()
        }
        return {name: tensor.numpy() for name, tensor in function(**tensors).items()}

    return run


def _session_runner(session, signature_def):
    """Runs a TF1 SignatureDef in a `tf.compat.v1.Session` as TF Serving's C++ Session::Run
    does: tensors are fed as given, with no check against the graph's static shapes (Python's
    Session.run refuses a [3] value for an x:0 of shape [None, 1] that the graph would
    broadcast; TF Serving's REST guide feeds exactly that). A C++ callable per signature;
    running it is thread-safe."""
    aliases = sorted(signature_def.inputs)
    fetches = sorted(signature_def.outputs)
    options = config_pb2.CallableOptions(
        feed=[signature_def.inputs[alias].name for alias in aliases],
        fetch=[signature_def.outputs[alias].name for alias in fetches],
    )
    dtypes = [tf.as_dtype(signature_def.inputs[alias].dtype).as_numpy_dtype for alias in aliases]
    callable_ = session._make_callable_from_options(options)  # noqa: SLF001  (no public API)

    def run(inputs):
        values = callable_(*(np.asarray(inputs[alias], dtype)
                             for alias, dtype in zip(aliases, dtypes, strict=True)))
        # np.asarray: scalars too come back as arrays
        return {alias: np.asarray(value) for alias, value in zip(fetches, values, strict=True)}

    return run


@dataclasses.dataclass(eq=False)
class Servable:
    """A loaded model version: its signatures and the MetaGraphDef's SignatureDefs (for
    metadata)."""

    name: str
    version: int
    path: str
    signature_defs: object  # the MetaGraphDef's map<string, SignatureDef>
    signatures: dict
    loaded: object  # keeps the restored object (and its variables) alive

    def signature(self, name):
        if name not in self.signatures:
            raise ServingError(
                "INVALID_ARGUMENT",
                f'Serving signature name: "{name[:200]}" not found in signature def',
            )
        return self.signatures[name]

    @functools.cached_property
    def metadata_json(self):
        """GetModelMetadataResponse as TF Serving's JSON (proto field names, defaults printed);
        computed once, when the version loads, so metadata requests cost nothing."""
        signature_defs = {
            key: json_format.MessageToDict(
                signature_def,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )
            for key, signature_def in self.signature_defs.items()
        }
        return json.dumps(
            {
                "model_spec": {
                    "name": self.name,
                    "signature_name": "",
                    "version": str(self.version),
                },
                "metadata": {"signature_def": {"signature_def": signature_defs}},
            },
            indent=1,
        )


def _read_meta_graph(path):
    for filename, parse in (("saved_model.pb", "binary"), ("saved_model.pbtxt", "text")):
        file_path = tf.io.gfile.join(path, filename)
        if not tf.io.gfile.exists(file_path):
            continue
        saved_model = saved_model_pb2.SavedModel()
        with tf.io.gfile.GFile(file_path, "rb") as file:
            data = file.read()
        try:
            if parse == "binary":
                saved_model.ParseFromString(data)
            else:
                text_format.Parse(data.decode("utf-8"), saved_model)
        except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as error:
            raise ServingError(
                "DATA_LOSS", f"Can't parse {file_path} as {parse} proto: {error}"
            ) from None
        for meta_graph in saved_model.meta_graphs:
            if SERVE_TAG in meta_graph.meta_info_def.tags:
                return meta_graph
        raise ServingError(
            "NOT_FOUND",
            f"Could not find meta graph def matching supplied tags: {{ {SERVE_TAG} }} in "
            f"{file_path}. "
            "To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
            "`saved_model_cli`",
        )
    raise ServingError(
        "NOT_FOUND",
        f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}",
    )


def load_servable(name, version, path, xla_cpu_compilation_enabled=True):
    """Loads the "serve" MetaGraph of the SavedModel at `path`: TF2 ones with tf.saved_model.load,
    TF1 ones (no object graph) into a `tf.compat.v1.Session`, as TF Serving does. Unless
    `xla_cpu_compilation_enabled`, the signatures of one that must compile with XLA fail."""
    meta_graph = _read_meta_graph(path)
    if not xla_cpu_compilation_enabled and must_compile_with_xla(meta_graph):
        return _servable(name, version, path, meta_graph, dict.fromkeys(
            (key for key in meta_graph.signature_def if not key.startswith("__")),
            _xla_compilation_disabled), loaded=None)
    if meta_graph.object_graph_def.nodes:
        loaded = tf.saved_model.load(path, tags=[SERVE_TAG])
        functions = {
            key: _eager_runner(function, _dtypes(meta_graph.signature_def[key].inputs))
            for key, function in loaded.signatures.items()
        }
    else:
        loaded = _load_session(path)
        functions = {
            key: _session_runner(loaded, signature_def)
            for key, signature_def in meta_graph.signature_def.items()
            if not key.startswith("__")
        }  # "__saved_model_init_op" is no signature
    return _servable(name, version, path, meta_graph, functions, loaded)


def _servable(name, version, path, meta_graph, functions, loaded):
    signatures = {
        key: Signature(
            name=key,
            method_name=meta_graph.signature_def[key].method_name,
            input_dtypes=_dtypes(meta_graph.signature_def[key].inputs),
            output_dtypes=_dtypes(meta_graph.signature_def[key].outputs),
            function=function,
        )
        for key, function in functions.items()
    }
    return Servable(name, version, path, meta_graph.signature_def, signatures, loaded)


def must_compile_with_xla(meta_graph):
    """Whether a function of `meta_graph` must be compiled with XLA (`_XlaMustCompile`, which
    `tf.function(jit_compile=True)` sets)."""
    return any(function.attr["_XlaMustCompile"].b
               for function in meta_graph.graph_def.library.function)


def _xla_compilation_disabled(inputs):
    """The signature function of a version that needs XLA, served without it."""
    raise ServingError("INTERNAL", "XLA compilation disabled: this SavedModel compiles with "
                                   "XLA; serve it with --xla_cpu_compilation_enabled")


def _dtypes(tensor_infos):
    return {alias: tf.as_dtype(info.dtype) for alias, info in tensor_infos.items()}


def _load_session(path):
    """A `tf.compat.v1.Session` holding the TF1 SavedModel at `path`, variables restored, init
    ops run."""
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        tf.compat.v1.saved_model.loader.load(session, [SERVE_TAG], path)
    graph.finalize()
    return session


def list_versions(base_path):
    """{version: directory} for the numbered children of `base_path` ("00012" is version 12)."""
    versions = {}
    for child in sorted(tf.io.gfile.listdir(base_path)):
        child = child.rstrip("/")
        path = tf.io.gfile.join(base_path, child)
        if _VERSION_DIR.fullmatch(child) and int(child) < 2**63 and tf.io.gfile.isdir(path):
            versions.setdefault(int(child), path)
    return versions


@dataclasses.dataclass
class VersionStatus:
    """One entry of the model status: a version's state and, after a failed load, its error."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""
    servable: Servable = None
    managed: bool = True  # False once unloaded, or once a failed version stops being aspired
    attempts: int = 0  # failed loads in a row
    retry_at: float = None  # time.monotonic() of the next load attempt after a failure, if any


@dataclasses.dataclass
class _Model:
    name: str
    config: object  # ModelConfig, or None once removed from the config
    versions: dict = dataclasses.field(default_factory=dict)  # version -> VersionStatus
    warned_empty: bool = False


class ModelManager:
    """Loads, serves and unloads the versions of every configured model."""

    def __init__(
        self,
        models,
        poll_wait_seconds=1.0,
        max_num_load_retries=5,
        load_retry_interval_seconds=60.0,
        allow_version_labels_for_unavailable_models=False,
        config_reader=None,
        config_poll_wait_seconds=0.0,
        warmup_iterations=1,
        xla_cpu_compilation_enabled=False,
    ):
        self._poll_wait_seconds = poll_wait_seconds
        self._max_num_load_retries = max_num_load_retries
        self._load_retry_interval_seconds = load_retry_interval_seconds
        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._config_reader = config_reader
        self._config_poll_wait_seconds = config_poll_wait_seconds
        self._warmup_iterations = warmup_iterations  # 0: no warm-up
        self._xla_cpu_compilation_enabled = xla_cpu_compilation_enabled
        self._models = {config.name: _Model(config.name, config) for config in models}
        self._lock = threading.Lock()  # guards _models and their VersionStatus entries
        self._reconcile_lock = (
            threading.Lock()
        )  # one load/unload pass at a time (version and config pollers)
        self._stopping = threading.Event()
        self._threads = []

    def start(self):
        """Loads every model's aspired versions, waiting until each model's latest one settled.

        Like tensorflow_model_server, fails if a model's latest version failed to load or a label
        names a version that is not available, and keeps waiting while a base path has no versions.
        """
        for model in self._models.values():
            if not tf.io.gfile.isdir(model.config.base_path):
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Could not find base path {model.config.base_path} for servable {model.name}",
                )
        while True:
            self._reconcile_all()
            waiting, failures = [], []
            with self._lock:
                for name, model in self._models.items():
                    if not model.versions:
                        waiting.append(name)
                        continue
                    latest = model.versions[max(model.versions)]
                    if (
                        latest.state == END
                        and latest.error_code != "OK"
                        and latest.retry_at is None
                    ):
                        failures.append(
                            f"{{name: {name} version: {latest.version}}} due to error: "
                            f"{latest.error_code}: {latest.error_message}"
                        )
                    elif latest.state != AVAILABLE:
                        waiting.append(name)  # a failed load with retries left
            if failures:
                raise ServingError(
                    "UNKNOWN", f"{len(failures)} model(s) did not become available: {failures}"
                )
            if not waiting:
                break
            if self._stopping.wait(self._poll_wait_seconds if self._poll_wait_seconds > 0 else 1.0):
                return
        with self._lock:
            for model in self._models.values():
                self._check_labels(model.config, model)
        if self._poll_wait_seconds > 0:
            self._start_thread(self._poll_wait_seconds, self._reconcile_all, "version-poller")
        if self._config_reader is not None and self._config_poll_wait_seconds > 0:
            self._start_thread(self._config_poll_wait_seconds, self._reload_config, "config-poller")

    def _start_thread(self, interval, work, name):
        def loop():
            while not self._stopping.wait(interval):
                try:
                    work()
                except Exception:  # keep polling: one bad round must not stop serving
                    logger.exception("%s failed", name)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self):
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    # Requests.

    def servable(self, name, version=None, label=None):
        """The servable for Latest(name), Specific(name, version) or the version labelled
        `label`."""
        with self._lock:
            model = self._models.get(name)
            if label is not None:
                labels = (
                    model.config.labels if model is not None and model.config is not None else {}
                )
                if label not in labels:
                    raise ServingError(
                        "INVALID_ARGUMENT", f"Unrecognized servable version label: {label}"
                    )
                version = labels[label]
            versions = model.versions if model is not None else {}
            if version is None:
                available = [
                    number for number, status in versions.items() if status.state == AVAILABLE
                ]
                if not available:
                    raise ServingError(
                        "NOT_FOUND", f"Servable not found for request: Latest({name})"
                    )
                return versions[max(available)].servable
            status = versions.get(version)
            if status is None or status.state != AVAILABLE:
                raise ServingError(
                    "NOT_FOUND", f"Servable not found for request: Specific({name}, {version})"
                )
            return status.servable

    def status(self, name, version=None):
        """Copies of the model's VersionStatus entries, highest version first."""
        with self._lock:
            model = self._models.get(name)
            if model is None or not model.versions:
                raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
            if version is not None:
                if version not in model.versions:
                    raise ServingError(
                        "NOT_FOUND", f"Could not find version {version} of model {name}"
                    )
                entries = [model.versions[version]]
            else:
                entries = [
                    model.versions[number] for number in sorted(model.versions, reverse=True)
                ]
            return [dataclasses.replace(entry, servable=None) for entry in entries]

    # Loading and unloading.

    def _reconcile_all(self):
        with self._lock:
            models = list(self._models.values())
        for model in models:
            if self._stopping.is_set():
                return
            self._reconcile(model)

    def _reconcile(self, model):
        with self._reconcile_lock:
            self._reconcile_locked(model)

    def _reconcile_locked(self, model):
        config = model.config
        if config is None:
            aspired, found = set(), {}
        else:
            try:
                found = list_versions(config.base_path)
            except (tf.errors.OpError, OSError) as error:
                logger.error(
                    "Could not list base path %s for servable %s: %s",
                    config.base_path,
                    config.name,
                    error,
                )
                return
            if not found and not model.warned_empty:
                logger.warning(
                    "No versions of servable %s found under base path %s. Did you forget to name "
                    "your leaf "
                    "directory as a number (eg. '/1/')?",
                    config.name,
                    config.base_path,
                )
            model.warned_empty = not found
            aspired = config.version_policy.select(found)
        with self._lock:
            for number, status in model.versions.items():
                if status.managed and status.state == END and number not in aspired:
                    status.managed = False  # a failed version that reappears is tried again
                    status.retry_at = None
        while not self._stopping.is_set():
            action, number = self._next_action(model, aspired)
            if action is None:
                return
            if action == "load":
                self._load(model, number, found[number])
            else:
                self._unload(model, number)

    def _next_action(self, model, aspired):
        """TF Serving's AvailabilityPreservingPolicy::GetNextAction."""
        with self._lock:
            serving = {
                number for number, status in model.versions.items() if status.state == AVAILABLE
            }
            unaspired_serving = sorted(serving - aspired)
            if unaspired_serving and (
                not aspired or serving & aspired or len(unaspired_serving) > 1
            ):
                return "unload", unaspired_serving[0]
            now = time.monotonic()
            new = [
                number
                for number in aspired
                if number not in model.versions
                or not model.versions[number].managed
                or (
                    model.versions[number].retry_at is not None
                    and model.versions[number].retry_at <= now
                )
            ]
            return ("load", max(new)) if new else (None, None)

    def _set_status(self, model, number, **fields):
        with self._lock:
            status = model.versions.setdefault(number, VersionStatus(number, START))
            for key, value in fields.items():
                setattr(status, key, value)

    def _load(self, model, number, path):
        """One load attempt; a failure is in the status at once, with the next retry scheduled."""
        name = model.name
        with self._lock:
            previous = model.versions.get(number)
            retrying = previous is not None and previous.managed and previous.retry_at is not None
            attempts = previous.attempts if retrying else 0
        self._set_status(
            model,
            number,
            state=START,
            error_code="OK",
            error_message="",
            managed=True,
            retry_at=None,
        )
        self._set_status(model, number, state=LOADING)
        logger.info("Loading servable version {name: %s version: %d} from %s", name, number, path)
        try:
            servable = load_servable(name, number, path, self._xla_cpu_compilation_enabled)
            servable.metadata_json  # noqa: B018  (computed here, not by the first request)
            if self._warmup_iterations:
                replay_warmup_requests(servable, self._warmup_iterations)
        except Exception as exception:  # any load failure is reported in the model status
            error = error_from_exception(exception)
            attempts += 1
            retry = attempts <= self._max_num_load_retries
            logger.error(
                "Loading servable version {name: %s version: %d} failed (attempt %d%s): %s",
                name,
                number,
                attempts,
                ", will retry" if retry else "",
                exception,
            )
            self._set_status(
                model,
                number,
                state=END,
                error_code=error.code,
                error_message=public_message(error.message),
                attempts=attempts,
                retry_at=time.monotonic() + self._load_retry_interval_seconds if retry else None,
            )
            return
        self._set_status(model, number, state=AVAILABLE, servable=servable, attempts=0)
        logger.info("Successfully loaded servable version {name: %s version: %d}", name, number)

    def _unload(self, model, number):
        self._set_status(model, number, state=UNLOADING)
        self._set_status(model, number, state=END, servable=None, managed=False)
        logger.info("Unloaded servable version {name: %s version: %d}", model.name, number)

    # Labels and config reloads.

    def _check_labels(self, config, model):
        """Refuses labels on versions that are not available, as ServerCore does."""
        if config is None or self._allow_unavailable_labels:
            return
        for label, number in config.version_labels:
            status = model.versions.get(number)
            if status is None or status.state != AVAILABLE:
                raise ServingError(
                    "FAILED_PRECONDITION",
                    f"Request to assign label {label} to version {number} of model {config.name}, "
                    "which is not currently available for inference",
                )

    def _reload_config(self):
        """Re-reads the config file and realizes exactly its model list (others are unloaded)."""
        configs = {config.name: config for config in self._config_reader()}
        with self._lock:
            current = {
                name: model.config
                for name, model in self._models.items()
                if model.config is not None
            }
            if configs == current:
                return
            logger.info("Applying new model config: %s", sorted(configs))
            previous = {}
            for name, model in self._models.items():
                previous[name] = model.config
                model.config = configs.get(name)
            for name, config in configs.items():
                self._models.setdefault(name, _Model(name, config))
            models = list(self._models.items())
        for name, model in models:
            self._reconcile(model)
            with self._lock:
                try:
                    self._check_labels(model.config, model)
                except ServingError as error:
                    logger.error("%s; keeping the previous labels of %s", error.message, name)
                    old = previous.get(name)
                    if model.config is not None:
                        model.config = dataclasses.replace(
                            model.config,
                            version_labels=old.version_labels if old is not None else (),
                        )


def status_json_entries(entries):
    """GetModelStatusResponse.model_version_status as TF Serving's JSON."""
    return [
        {
            "version": str(entry.version),
            "state": entry.state,
            "status": {"error_code": entry.error_code, "error_message": entry.error_message},
        }
        for entry in entries
    ]
