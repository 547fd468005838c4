"""Flags, models.config and batching parameters, including the deployment files in serving/."""

import argparse
import dataclasses
import pathlib

import pytest

from keras_s2s.serving.config import (
    BatchingParameters,
    ConfigError,
    ServerOptions,
    VersionPolicy,
    add_arguments,
    parse_batching_parameters,
    parse_model_config,
    read_model_config_file,
)

SERVING_DIR = pathlib.Path(__file__).resolve().parents[2] / "serving"


def _args(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_repository_models_config_is_valid():
    models = {
        model.name: model for model in read_model_config_file(str(SERVING_DIR / "models.config"))
    }
    assert set(models) == {"dates", "kor_eng"}
    for name, model in models.items():
        assert model.base_path == f"/models/{name}"
        assert model.version_policy == VersionPolicy("specific", versions=(1, 2))
        assert model.labels == {"stable": 1, "canary": 2}


def test_repository_batching_parameters_are_valid():
    parameters = parse_batching_parameters((SERVING_DIR / "batching_parameters.txt").read_text())
    assert parameters.max_batch_size == 32
    assert parameters.num_batch_threads == 4


def test_docker_compose_mounts_export_and_passes_the_config():
    compose = (SERVING_DIR / "docker-compose.yml").read_text()
    for line in (
        "../export:/models",
        "8501:8501",
        "--model_config_file=/config/models.config",
        "--batching_parameters_file=/config/batching_parameters.txt",
    ):
        assert line in compose


def test_version_policies():
    assert VersionPolicy().select([3, 1, 2]) == {3}
    assert VersionPolicy("latest", num_versions=2).select([3, 1, 2]) == {2, 3}
    assert VersionPolicy("all").select([3, 1]) == {1, 3}
    assert VersionPolicy("specific", versions=(1, 5)).select([1, 2]) == {1}
    assert VersionPolicy().select([]) == set()


def test_model_config_policy_parsing():
    (model,) = parse_model_config(
        'model_config_list: { config: { name: "m" base_path: "/b" model_platform: "tensorflow"\n'
        "  model_version_policy: { latest: { num_versions: 3 } } } }"
    )
    assert model.version_policy == VersionPolicy("latest", num_versions=3)
    (model,) = parse_model_config(
        'model_config_list { config { name: "m" base_path: "/b" model_platform: "tensorflow"\n'
        "  model_version_policy { all {} } } }"
    )
    assert model.version_policy.kind == "all"


@pytest.mark.parametrize(
    "text, message",
    [
        ('model_config_list { config { name: "m" bogus: 1 } }', 'has no field named "bogus"'),
        (
            'model_config_list { config { name: "m" base_path: "/b" model_platform: "tensorflow" '
            "logging_config { } } }",
            "logging_config is not supported by keras-s2s serve",
        ),
        (
            'model_config_list { config { name: "m" base_path: "/b" } }',
            'set model_platform: "tensorflow"',
        ),
        (
            'model_config_list { config { base_path: "/b" model_platform: "tensorflow" } }',
            "has no name",
        ),
        (
            'model_config_list { config { name: "m" model_platform: "tensorflow" } }',
            "has no base_path",
        ),
        (
            'model_config_list { config { name: "m" base_path: "/a" model_platform: "tensorflow" } '
            'config { name: "m" base_path: "/b" model_platform: "tensorflow" } }',
            "Illegal to list model m multiple times",
        ),
        (
            'model_config_list { config { name: "m" base_path: "/b" model_platform: "tensorflow" '
            "model_version_policy { specific {} } } }",
            "lists no versions",
        ),
        (
            'model_config_list { config { name: "m" base_path: "/b" model_platform: "tensorflow" '
            'version_labels { key: "a" value: "x" } } }',
            "1:",
        ),
        ("", "expected a model_config_list"),
    ],
)
def test_bad_model_configs(text, message):
    with pytest.raises(ConfigError, match=".*") as error:
        parse_model_config(text)
    assert message in str(error.value)


def test_batching_parameters_defaults_and_validation():
    assert parse_batching_parameters("") == BatchingParameters()
    parsed = parse_batching_parameters(
        "max_batch_size { value: 8 } allowed_batch_sizes: 2 allowed_batch_sizes: 8 "
        "pad_variable_length_inputs: true"
    )
    assert parsed.allowed_batch_sizes == (2, 8) and parsed.pad_variable_length_inputs
    with pytest.raises(ConfigError, match="Last entry in allowed_batch_sizes"):
        parse_batching_parameters("max_batch_size { value: 8 } allowed_batch_sizes: 4")
    with pytest.raises(ConfigError, match="not supported"):
        parse_batching_parameters("enable_large_batch_splitting { value: true }")
    with pytest.raises(ConfigError, match='Expected "{"'):
        parse_batching_parameters("max_batch_size: 8")  # a wrapper: needs { value: 8 }


def test_tf_serving_style_flags(tmp_path):
    batching = tmp_path / "batching.txt"
    batching.write_text("max_batch_size { value: 4 }")
    args = _args(
        "--model_name=dates",
        f"--model_base_path={tmp_path}",
        "--rest_api_port=0",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
        "--rest_api_enable_cors_support=true",
        "--file_system_poll_wait_seconds",
        "5",
    )
    options = ServerOptions.from_args(args)
    assert [(model.name, model.base_path) for model in options.models] == [("dates", str(tmp_path))]
    assert options.batching.max_batch_size == 4
    assert options.rest_api_enable_cors_support is True
    assert options.file_system_poll_wait_seconds == 5
    assert options.rest_api_host == "127.0.0.1"
    assert (
        ServerOptions.from_args(
            _args(f"--model_base_path={tmp_path}", "--enable_batching=false")
        ).batching
        is None
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "Both --model_base_path and --model_config_file are empty"),
        (["--model_base_path=/m", "--batching_parameters_file=/b.txt"], "batching not enabled"),
        (["--model_base_path=/m", "--rest_api_port=8500"], "must differ from --port"),
        (["--model_config_file=/does/not/exist"], "Cannot read model config file"),
    ],
)
def test_bad_flags(argv, message):
    with pytest.raises(ConfigError, match=".*") as error:
        ServerOptions.from_args(_args(*argv))
    assert message in str(error.value)


def test_each_option_is_defined_once_for_flag_and_field():
    """Every ServerOptions field but models and batching is a flag with the field's default (or
    the flag's own: --port is 8500, a ModelServer built in Python serves no gRPC unless given a
    port), and its lower bound holds for options built directly as for flags."""
    fields = {
        field.name: field.metadata.get("flag_default", field.default)
        for field in dataclasses.fields(ServerOptions)
        if field.name not in ("models", "batching")
    }
    defaults = vars(_args())
    assert {name: defaults[name] for name in fields} == fields
    assert set(defaults) - set(fields) == {
        "model_name", "model_base_path", "enable_batching", "batching_parameters_file"
    }
    with pytest.raises(ConfigError, match="--rest_api_num_small_request_threads must be positive"):
        ServerOptions(models=[], rest_api_num_small_request_threads=0)
    with pytest.raises(ConfigError, match="--rest_api_timeout_in_ms must be positive, got 0"):
        ServerOptions.from_args(_args("--model_base_path=/m", "--rest_api_timeout_in_ms=0"))
