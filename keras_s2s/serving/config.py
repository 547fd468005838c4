"""Server options: tensorflow_model_server's flags, its models.config and batching parameters files.

Both files are protobuf text format, parsed by protobuf's own text-format parser, so that the
grammar (comments, optional `:` before messages, map entries, repeated fields) is exactly TF
Serving's and unknown fields are rejected with their line and column, as TF Serving rejects them.
models.config is parsed with `tensorflow_serving.config.model_server_config_pb2` (from
tensorflow-serving-api, in the `serve` extra). BatchingParameters' proto
(session_bundle_config.proto) is not in that wheel: its message is built here at import time
from a copy of its fields (same names and numbers).
"""

import argparse
import dataclasses
import logging
import os

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

logger = logging.getLogger(__name__)

_Field = descriptor_pb2.FieldDescriptorProto


class ConfigError(ValueError):
    """A flag, models.config or batching parameters file that TF Serving would refuse."""


def _field(name, number, kind, type_name="", repeated=False):
    field = _Field(
        name=name,
        number=number,
        type=kind,
        label=_Field.LABEL_REPEATED if repeated else _Field.LABEL_OPTIONAL,
    )
    if type_name:
        field.type_name = type_name
    return field


def _batching_schema_file():
    """session_bundle_config.proto's BatchingParameters (same names and numbers)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="keras_s2s/serving/batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    batching = file.message_type.add(name="BatchingParameters")
    int64_value = ".google.protobuf.Int64Value"
    batching.field.extend(
        [
            _field("max_batch_size", 1, _Field.TYPE_MESSAGE, int64_value),
            _field("batch_timeout_micros", 2, _Field.TYPE_MESSAGE, int64_value),
            _field("max_enqueued_batches", 3, _Field.TYPE_MESSAGE, int64_value),
            _field("num_batch_threads", 4, _Field.TYPE_MESSAGE, int64_value),
            _field("thread_pool_name", 5, _Field.TYPE_MESSAGE, ".google.protobuf.StringValue"),
            _field("allowed_batch_sizes", 6, _Field.TYPE_INT64, repeated=True),
            _field("pad_variable_length_inputs", 7, _Field.TYPE_BOOL),
            _field(
                "enable_large_batch_splitting", 9, _Field.TYPE_MESSAGE, ".google.protobuf.BoolValue"
            ),
            _field("max_execution_batch_size", 10, _Field.TYPE_MESSAGE, int64_value),
        ]
    )
    return file


def _batching_parameters_class():
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    pool.Add(_batching_schema_file())
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


_BatchingParametersProto = _batching_parameters_class()


def _monitoring_config_class():
    """TF Serving's MonitoringConfig, which the tensorflow-serving-api wheel does not ship: the
    two messages of tensorflow_serving/config/monitoring_config.proto, same names and numbers."""
    file = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    file.message_type.add(name="PrometheusConfig").field.extend(
        [_field("enable", 1, _Field.TYPE_BOOL), _field("path", 2, _Field.TYPE_STRING)]
    )
    file.message_type.add(name="MonitoringConfig").field.append(
        _field("prometheus_config", 1, _Field.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
    )


_MonitoringConfigProto = _monitoring_config_class()
#: Where Prometheus metrics are served when the config names no path
#: (PrometheusExporter::kPrometheusPath).
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which of the version directories found on disk to serve (ServableVersionPolicy)."""

    kind: str = "latest"  # "latest", "all" or "specific"
    num_versions: int = 1
    versions: tuple = ()

    def select(self, found_versions):
        found = sorted(set(found_versions))
        if self.kind == "all":
            return set(found)
        if self.kind == "specific":
            return {version for version in self.versions if version in found}
        return set(found[-max(self.num_versions, 1) :]) if found else set()


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One served model: a name, a base path holding numbered version directories, a policy."""

    name: str
    base_path: str
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: tuple = ()  # ((label, version), ...), hashable so configs compare by value

    @property
    def labels(self):
        return dict(self.version_labels)


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """Server-side batching; unset fields take TF's BasicBatchScheduler defaults."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: tuple = ()
    pad_variable_length_inputs: bool = False


def _read_text(path, what):
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as error:
        raise ConfigError(f"Cannot read {what} {path!r}: {error}") from error


def _parse_text_proto(text, message, source):
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ConfigError(f"{source}: {error}") from error
    return message


def parse_model_config(text, source="<models.config>"):
    """Parses a ModelServerConfig text proto into ModelConfigs, with TF Serving's validation."""
    from tensorflow_serving.config import model_server_config_pb2

    proto = _parse_text_proto(text, model_server_config_pb2.ModelServerConfig(), source)
    if proto.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{source}: expected a model_config_list {{ config {{ ... }} }} block")
    models, names = [], set()
    for index, config in enumerate(proto.model_config_list.config):
        where = f"{source}: config #{index + 1}"
        if not config.name:
            raise ConfigError(f"{where} has no name")
        if config.name in names:
            raise ConfigError(
                f"{source}: Illegal to list model {config.name} multiple times in config list"
            )
        names.add(config.name)
        if not config.base_path:
            raise ConfigError(f"{where} ({config.name}) has no base_path")
        if config.HasField("logging_config"):
            raise ConfigError(
                f"{where} ({config.name}): logging_config is not supported by keras-s2s serve"
            )
        platform = config.model_platform or ("tensorflow" if config.model_type == 1 else "")
        if platform != "tensorflow":
            raise ConfigError(
                f"{where} ({config.name}): model_platform is {config.model_platform!r}; "
                'keras-s2s serve serves SavedModels only: set model_platform: "tensorflow"'
            )
        models.append(
            ModelConfig(
                name=config.name,
                base_path=config.base_path,
                version_policy=_version_policy(config, where),
                version_labels=tuple(sorted(config.version_labels.items())),
            )
        )
    return models


def _version_policy(config, where):
    if not config.HasField("model_version_policy"):
        return VersionPolicy()
    policy = config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return VersionPolicy("all")
    if kind == "specific":
        if not policy.specific.versions:
            raise ConfigError(
                f"{where} ({config.name}): model_version_policy specific {{}} lists no versions"
            )
        return VersionPolicy("specific", versions=tuple(policy.specific.versions))
    return VersionPolicy("latest", num_versions=max(policy.latest.num_versions, 1))


def read_model_config_file(path):
    return parse_model_config(_read_text(path, "model config file"), source=path)


def read_monitoring_config_file(path):
    """The URL path of the Prometheus metrics that a MonitoringConfig text file enables, or None
    when it does not enable them."""
    proto = _parse_text_proto(
        _read_text(path, "monitoring config file"), _MonitoringConfigProto(), path
    )
    prometheus = proto.prometheus_config
    if not prometheus.enable:
        return None
    metrics_path = prometheus.path or DEFAULT_PROMETHEUS_PATH
    if not metrics_path.startswith("/"):
        raise ConfigError(f"{path}: prometheus_config path must start with /, got {metrics_path!r}")
    return metrics_path


def parse_batching_parameters(text, source="<batching parameters>"):
    """Parses a BatchingParameters text proto, refusing what TF Serving refuses or we do not do."""
    proto = _parse_text_proto(text, _BatchingParametersProto(), source)
    if proto.HasField("enable_large_batch_splitting") and proto.enable_large_batch_splitting.value:
        raise ConfigError(
            f"{source}: enable_large_batch_splitting is not supported by keras-s2s serve"
        )
    defaults = BatchingParameters()
    values = {
        name: getattr(proto, name).value if proto.HasField(name) else getattr(defaults, name)
        for name in (
            "max_batch_size",
            "batch_timeout_micros",
            "max_enqueued_batches",
            "num_batch_threads",
        )
    }
    for name, value in values.items():
        if value < (0 if name == "batch_timeout_micros" else 1):
            raise ConfigError(f"{source}: {name} must be positive, got {value}")
    allowed = tuple(proto.allowed_batch_sizes)
    if allowed:
        if any(later <= earlier for earlier, later in zip(allowed, allowed[1:])) or allowed[0] < 1:
            raise ConfigError(
                f"{source}: allowed_batch_sizes must be positive and increasing, got "
                f"{list(allowed)}"
            )
        if allowed[-1] != values["max_batch_size"]:
            raise ConfigError(
                f"{source}: Last entry in allowed_batch_sizes ({allowed[-1]}) must equal "
                f"max_batch_size ({values['max_batch_size']})"
            )
    return BatchingParameters(
        **values,
        allowed_batch_sizes=allowed,
        pad_variable_length_inputs=proto.pad_variable_length_inputs,
    )


def _parse_bool(text):
    lowered = str(text).lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


_CPUS = os.cpu_count() or 1


def _option(default, help_text, minimum=None, flag_default=None):
    """A field that is also a flag: `--<field name>` of the field's type, with this default (or
    `flag_default`, when the flag's differs) and help; `minimum`: smaller values are refused by
    `validate`."""
    metadata = {"help": help_text, "minimum": minimum}
    if flag_default is not None:
        metadata["flag_default"] = flag_default
    return dataclasses.field(default=default, metadata=metadata)


def _flag_fields(cls):
    return [field for field in dataclasses.fields(cls) if "help" in field.metadata]


@dataclasses.dataclass
class _ModelSourceFlags:
    """Flags that say where `ServerOptions.models` and `.batching` come from."""

    model_name: str = _option("default", "Name of the model when no --model_config_file is given.")
    model_base_path: str = _option(
        "", "Directory holding the model's numbered version directories."
    )
    enable_batching: bool = _option(
        False, "Merge concurrent requests to the same signature into one batch."
    )
    batching_parameters_file: str = _option(
        "", "Text BatchingParameters; needs --enable_batching."
    )


@dataclasses.dataclass
class ServerOptions:
    """Everything ModelServer needs; build it directly or with `from_args` from parsed flags.

    Every field but `models` and `batching` is also a tensorflow_model_server flag (or a
    keras-s2s addition) of the same name: its type, default, help and lower bound are written
    here once, and `add_arguments` builds the flags from them.
    """

    models: list
    batching: BatchingParameters = None  # None = batching off
    model_config_file: str = _option(
        "", "models.config (text ModelServerConfig); overrides --model_name/--model_base_path."
    )
    model_config_file_poll_wait_seconds: float = _option(
        0.0, "Re-read --model_config_file this often; 0 = read once."
    )
    file_system_poll_wait_seconds: float = _option(
        1.0, "Poll base paths for versions this often; 0 = once, <0 = never."
    )
    rest_api_port: int = _option(8501, "REST port (0 = pick a free port).")
    rest_api_host: str = _option(
        "127.0.0.1", "Address the REST server binds to (keras-s2s addition)."
    )
    rest_api_num_threads: int = _option(
        4 * _CPUS,
        "Threads running regular requests (bodies between the small and the large size): JSON "
        "decoding, model execution.",
        minimum=1,
    )
    rest_api_timeout_in_ms: int = _option(
        30000, "Per-request deadline; exceeded requests get 504.", minimum=1
    )
    rest_api_header_timeout_in_ms: int = _option(
        10000,
        "A request's line and headers must arrive within this, counted from the connection's "
        "opening or the first byte after the previous response; else the connection is closed "
        "(keras-s2s addition).",
        minimum=1,
    )
    rest_api_body_timeout_in_ms: int = _option(
        10000,
        "Longest pause while reading a request body; past it, 408 and the connection is closed "
        "(keras-s2s addition).",
        minimum=1,
    )
    rest_api_keepalive_timeout_in_ms: int = _option(
        30000, "Idle keep-alive connections are closed after this (keras-s2s addition).", minimum=1
    )
    rest_api_max_connections: int = _option(
        1024,
        "Most open connections; past it idle ones are closed, else new ones get 503 (keras-s2s "
        "addition).",
        minimum=1,
    )
    rest_api_small_request_bytes: int = _option(
        16 << 10,
        "Bodies up to this size run on the small-request threads, so that one-instance predicts "
        "stay fast while larger ones saturate the server (keras-s2s addition).",
        minimum=1,
    )
    rest_api_num_small_request_threads: int = _option(
        max(2, _CPUS), "Threads for small requests (keras-s2s addition).", minimum=1
    )
    rest_api_large_request_bytes: int = _option(
        256 << 10,
        "Bodies larger than this run on the large-request threads (keras-s2s addition).",
        minimum=1,
    )
    rest_api_num_large_request_threads: int = _option(
        max(1, _CPUS // 2),
        "Threads for large requests, so that they cannot hold every thread (keras-s2s addition).",
        minimum=1,
    )
    rest_api_num_bulk_model_runs: int = _option(
        max(1, _CPUS // 2),
        "Most model runs of regular and large requests at once; those of small requests are not "
        "counted, so that their ops do not wait behind many large batches in TensorFlow's shared "
        "thread pools (keras-s2s addition).",
        minimum=1,
    )
    rest_api_enable_cors_support: bool = _option(
        False, "Answer CORS preflights and add CORS headers."
    )
    rest_api_max_body_bytes: int = _option(
        64 << 20,
        "Largest request body accepted; larger gets 413 (keras-s2s addition).",
        minimum=1,
    )
    max_num_load_retries: int = _option(5, "Retries of a version that fails to load.")
    load_retry_interval_micros: int = _option(60_000_000, "Wait between load retries.")
    allow_version_labels_for_unavailable_models: bool = _option(
        False, "Allow labels on versions not yet loaded."
    )
    enable_signature_method_name_check: bool = _option(
        False, "Require predict/classify/regress method names."
    )
    enable_model_warmup: bool = _option(
        True,
        "Replay a version's assets.extra/tf_serving_warmup_requests before it becomes "
        "AVAILABLE, to reduce first request latency.",
    )
    num_request_iterations_for_warmup: int = _option(
        1, "Number of times each warm-up request is replayed.", minimum=1
    )
    xla_cpu_compilation_enabled: bool = _option(
        False,
        "Run SavedModels that compile with XLA (keras-s2s export --xla on); without it their calls "
        "fail with INTERNAL \"XLA compilation disabled\", so their warm-up fails their load.",
    )
    monitoring_config_file: str = _option(
        "",
        "Text MonitoringConfig; prometheus_config { enable: true } serves Prometheus metrics on "
        "the REST port.",
    )
    port: int = _option(
        None,
        "gRPC port: TF Serving's PredictionService (Predict, GetModelMetadata) and ModelService "
        "(GetModelStatus), on --rest_api_host (0 = pick a free port; in Python, None = no gRPC).",
        flag_default=8500,
    )

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Raises ConfigError for values TF Serving (or keras-s2s serve) would refuse."""
        if self.rest_api_port != 0 and self.rest_api_port == self.port:
            raise ConfigError(
                f"--rest_api_port ({self.rest_api_port}) must differ from --port ({self.port})"
            )
        for field in _flag_fields(ServerOptions):
            minimum, value = field.metadata["minimum"], getattr(self, field.name)
            if minimum is not None and value < minimum:
                raise ConfigError(f"--{field.name} must be positive, got {value}")

    @classmethod
    def from_args(cls, args):
        """The options of flags parsed by a parser given `add_arguments`."""
        if args.model_config_file:
            if args.model_base_path:
                logger.warning(
                    "--model_config_file is given: ignoring --model_name and --model_base_path"
                )
            models = read_model_config_file(args.model_config_file)
        elif args.model_base_path:
            models = [ModelConfig(args.model_name, args.model_base_path)]
        else:
            raise ConfigError(
                "Both --model_base_path and --model_config_file are empty: give one of them"
            )
        if args.batching_parameters_file and not args.enable_batching:
            raise ConfigError(
                "Batching parameters file provided but batching not enabled (--enable_batching)."
            )
        batching = None
        if args.enable_batching:
            batching = (
                parse_batching_parameters(
                    _read_text(args.batching_parameters_file, "batching parameters file"),
                    source=args.batching_parameters_file,
                )
                if args.batching_parameters_file
                else BatchingParameters()
            )
        return cls(
            models=models,
            batching=batching,
            **{field.name: getattr(args, field.name) for field in _flag_fields(cls)},
        )


def add_arguments(parser):
    """Adds tensorflow_model_server's flags (those keras-s2s serve honours) to `parser`:
    one per field of `ServerOptions` and of the flags that give its models and batching."""
    for field in _flag_fields(_ModelSourceFlags) + _flag_fields(ServerOptions):
        name, help_text = f"--{field.name}", field.metadata["help"]
        if field.type is bool:
            parser.add_argument(name, type=_parse_bool, nargs="?", const=True,
                                default=field.default, metavar="BOOL", help=help_text)
        else:
            default = field.metadata.get("flag_default", field.default)
            parser.add_argument(name, type=field.type, default=default, help=help_text)
