"""Loaded SavedModels and the version manager that keeps the right versions loaded.

The manager polls each model's base path for numbered version directories, picks the aspired ones
with the model's version policy, and loads/unloads them with TF Serving's
AvailabilityPreservingPolicy: a new version is loaded before the old one is unloaded, and an old
one stays while no aspired version is available. Requests hold a reference to the `Servable` they
were given, so unloading never fails a request in flight. A version that fails to load is kept in
the model status (state END with its error) and is never served.
"""

import dataclasses
import logging
import re
import threading

import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tensorflow-text ops that TF Serving links)
from google.protobuf import message, text_format
from tensorflow.core.protobuf import saved_model_pb2

from keras_s2s.serving.errors import ServingError, error_from_exception

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
    function: object

    def run(self, inputs):
        """Runs the signature on {alias: numpy array}; returns {alias: numpy array}."""
        try:
            tensors = {name: tf.constant(inputs[name], dtype=dtype) for name, dtype in self.input_dtypes.items()}
            outputs = self.function(**tensors)
        except Exception as error:  # TF op errors, binding errors: report with TF's code
            raise error_from_exception(error) from None
        return {name: tensor.numpy() for name, tensor in outputs.items()}


@dataclasses.dataclass(eq=False)
class Servable:
    """A loaded model version: its signatures and the MetaGraphDef's SignatureDefs (for metadata)."""

    name: str
    version: int
    path: str
    signature_defs: object  # the MetaGraphDef's map<string, SignatureDef>
    signatures: dict
    loaded: object  # keeps the restored object (and its variables) alive

    def signature(self, name):
        if name not in self.signatures:
            raise ServingError("INVALID_ARGUMENT", f'Serving signature name: "{name}" not found in signature def')
        return self.signatures[name]


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
            raise ServingError("DATA_LOSS", f"Can't parse {file_path} as {parse} proto: {error}") from None
        for meta_graph in saved_model.meta_graphs:
            if SERVE_TAG in meta_graph.meta_info_def.tags:
                return meta_graph
        raise ServingError(
            "NOT_FOUND",
            f"Could not find meta graph def matching supplied tags: {{ {SERVE_TAG} }} in {file_path}. "
            "To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`",
        )
    raise ServingError(
        "NOT_FOUND", f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}"
    )


def load_servable(name, version, path):
    """Loads the "serve" MetaGraph of the SavedModel at `path`."""
    meta_graph = _read_meta_graph(path)
    loaded = tf.saved_model.load(path, tags=[SERVE_TAG])
    signatures = {}
    for key, function in loaded.signatures.items():
        signature_def = meta_graph.signature_def[key]
        signatures[key] = Signature(
            name=key,
            method_name=signature_def.method_name,
            input_dtypes={alias: tf.as_dtype(info.dtype) for alias, info in signature_def.inputs.items()},
            output_dtypes={alias: tf.as_dtype(info.dtype) for alias, info in signature_def.outputs.items()},
            function=function,
        )
    return Servable(name, version, path, meta_graph.signature_def, signatures, loaded)


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
    ):
        self._poll_wait_seconds = poll_wait_seconds
        self._max_num_load_retries = max_num_load_retries
        self._load_retry_interval_seconds = load_retry_interval_seconds
        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._config_reader = config_reader
        self._config_poll_wait_seconds = config_poll_wait_seconds
        self._models = {config.name: _Model(config.name, config) for config in models}
        self._lock = threading.Lock()  # guards _models and their VersionStatus entries
        self._reconcile_lock = threading.Lock()  # one load/unload pass at a time (version and config pollers)
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
                    "INVALID_ARGUMENT", f"Could not find base path {model.config.base_path} for servable {model.name}"
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
                    if latest.state == END and latest.error_code != "OK":
                        failures.append(
                            f"{{name: {name} version: {latest.version}}} due to error: "
                            f"{latest.error_code}: {latest.error_message}"
                        )
            if failures:
                raise ServingError("UNKNOWN", f"{len(failures)} model(s) did not become available: {failures}")
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
        """The servable for Latest(name), Specific(name, version) or the version labelled `label`."""
        with self._lock:
            model = self._models.get(name)
            if label is not None:
                labels = model.config.labels if model is not None and model.config is not None else {}
                if label not in labels:
                    raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
                version = labels[label]
            versions = model.versions if model is not None else {}
            if version is None:
                available = [number for number, status in versions.items() if status.state == AVAILABLE]
                if not available:
                    raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
                return versions[max(available)].servable
            status = versions.get(version)
            if status is None or status.state != AVAILABLE:
                raise ServingError("NOT_FOUND", f"Servable not found for request: Specific({name}, {version})")
            return status.servable

    def status(self, name, version=None):
        """Copies of the model's VersionStatus entries, highest version first."""
        with self._lock:
            model = self._models.get(name)
            if model is None or not model.versions:
                raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
            if version is not None:
                if version not in model.versions:
                    raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
                entries = [model.versions[version]]
            else:
                entries = [model.versions[number] for number in sorted(model.versions, reverse=True)]
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
                logger.error("Could not list base path %s for servable %s: %s", config.base_path, config.name, error)
                return
            if not found and not model.warned_empty:
                logger.warning(
                    "No versions of servable %s found under base path %s. Did you forget to name your leaf "
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
            serving = {number for number, status in model.versions.items() if status.state == AVAILABLE}
            unaspired_serving = sorted(serving - aspired)
            if unaspired_serving and (not aspired or serving & aspired or len(unaspired_serving) > 1):
                return "unload", unaspired_serving[0]
            new = [number for number in aspired if number not in model.versions or not model.versions[number].managed]
            return ("load", max(new)) if new else (None, None)

    def _set_status(self, model, number, **fields):
        with self._lock:
            status = model.versions.setdefault(number, VersionStatus(number, START))
            for key, value in fields.items():
                setattr(status, key, value)

    def _load(self, model, number, path):
        name = model.name
        self._set_status(model, number, state=START, error_code="OK", error_message="", managed=True)
        self._set_status(model, number, state=LOADING)
        logger.info("Loading servable version {name: %s version: %d} from %s", name, number, path)
        for attempt in range(self._max_num_load_retries + 1):
            try:
                servable = load_servable(name, number, path)
            except Exception as exception:  # any load failure is reported in the model status
                error = error_from_exception(exception)
                logger.error("Loading servable version {name: %s version: %d} failed: %s", name, number, error)
                if attempt == self._max_num_load_retries or self._stopping.wait(self._load_retry_interval_seconds):
                    self._set_status(model, number, state=END, error_code=error.code, error_message=error.message)
                    return
                logger.info("Retrying load of {name: %s version: %d}", name, number)
            else:
                self._set_status(model, number, state=AVAILABLE, servable=servable)
                logger.info("Successfully loaded servable version {name: %s version: %d}", name, number)
                return

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
            current = {name: model.config for name, model in self._models.items() if model.config is not None}
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
                            model.config, version_labels=old.version_labels if old is not None else ()
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
