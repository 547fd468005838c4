"""Fixtures: SavedModels built once per test run, and servers on free loopback ports."""

import dataclasses
import json
import os
import time
import urllib.error
import urllib.request

import pytest

from keras_s2s.serving.config import ServerOptions, parse_model_config
from keras_s2s.serving.server import ModelServer
from tests.serving.savedmodels import publish_version, save_half_plus, save_string_model

MODELS_CONFIG = """
model_config_list {
  config {
    name: "half_plus_two"
    base_path: "%(root)s/half_plus_two"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config {
    name: "strings"
    base_path: "%(root)s/strings"
    model_platform: "tensorflow"
  }
}
"""


@pytest.fixture(scope="session")
def built_models(tmp_path_factory):
    """{name: SavedModel dir}: half_plus_one (y = x/2 + 1), half_plus_two (y = x/2 + 2), strings."""
    root = tmp_path_factory.mktemp("built")
    return {
        "half_plus_one": save_half_plus(str(root / "half_plus_one"), 1.0),
        "half_plus_two": save_half_plus(str(root / "half_plus_two"), 2.0),
        "strings": save_string_model(str(root / "strings")),
    }


@pytest.fixture(scope="session")
def models_config_path(tmp_path_factory, built_models):
    """A models.config serving half_plus_two versions 1 (stable) and 2 (canary), and strings
    "007"."""
    root = tmp_path_factory.mktemp("models")
    for name in ("half_plus_two", "strings"):
        os.makedirs(root / name)
    publish_version(built_models["half_plus_one"], str(root / "half_plus_two"), 1)
    publish_version(built_models["half_plus_two"], str(root / "half_plus_two"), 2)
    publish_version(built_models["strings"], str(root / "strings"), "007")
    path = root / "models.config"
    path.write_text(MODELS_CONFIG % {"root": root})
    return str(path)


def make_options(models, **overrides):
    defaults = dict(
        models=models,
        rest_api_port=0,
        rest_api_num_threads=8,
        file_system_poll_wait_seconds=0.1,
        max_num_load_retries=0,
    )
    defaults.update(overrides)
    return ServerOptions(**defaults)


@pytest.fixture(scope="session")
def server(models_config_path):
    with open(models_config_path) as file:
        models = parse_model_config(file.read())
    with ModelServer(make_options(models, model_config_file=models_config_path,
                                  port=0)) as running:
        yield running


@dataclasses.dataclass
class Response:
    status: int
    headers: dict
    text: str

    @property
    def json(self):
        return json.loads(self.text)


def http(base_url, method, path, body=None, headers=None, timeout=30):
    """One request; `body` may be bytes, str, or a JSON-able object."""
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8")
    request = urllib.request.Request(
        base_url + path, data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Response(
                response.status, dict(response.headers), response.read().decode("utf-8")
            )
    except urllib.error.HTTPError as error:
        return Response(error.code, dict(error.headers), error.read().decode("utf-8"))


def wait_until(condition, timeout=20.0, interval=0.05):
    """Polls `condition` until it returns a truthy value (returned) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
