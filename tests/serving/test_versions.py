"""Version polling: new versions replace old ones without failing requests; broken ones are never
served."""

import os
import shutil
import threading
import time

import pytest

from keras_s2s.serving.config import ModelConfig, VersionPolicy, read_model_config_file
from keras_s2s.serving.errors import ServingError
from keras_s2s.serving.server import ModelServer
from tests.serving.conftest import http, make_options, wait_until
from tests.serving.savedmodels import publish_broken_version, publish_version

OLD, NEW = [1.5, 2.0], [2.5, 3.0]  # half_plus_one and half_plus_two on [1, 2]


def _status(server, name="model"):
    return {
        entry["version"]: (entry["state"], entry["status"]["error_code"])
        for entry in http(server.url, "GET", f"/v1/models/{name}").json["model_version_status"]
    }


def _predict(server, suffix=""):
    return http(server.url, "POST", f"/v1/models/model{suffix}:predict", {"instances": [1.0, 2.0]})


@pytest.fixture
def base_path(tmp_path, built_models):
    path = tmp_path / "model"
    path.mkdir()
    publish_version(built_models["half_plus_one"], str(path), 1)
    return str(path)


def test_new_version_replaces_old_without_failing_requests(base_path, built_models):
    with ModelServer(make_options([ModelConfig("model", base_path)])) as server:
        answers, failures, stop = [], [], threading.Event()

        def client_loop():
            deadline = time.monotonic() + 30
            for _ in range(2000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                response = _predict(server)
                if response.status == 200:
                    answers.append(response.json["predictions"])
                else:
                    failures.append(response.text)

        clients = [threading.Thread(target=client_loop) for _ in range(3)]
        for client in clients:
            client.start()
        wait_until(lambda: len(answers) >= 10)
        publish_version(built_models["half_plus_two"], base_path, 2)
        wait_until(lambda: answers and answers[-1] == NEW)
        seen_new = len(answers)
        wait_until(lambda: len(answers) >= seen_new + 10)
        stop.set()
        for client in clients:
            client.join()

        assert failures == []
        assert answers[0] == OLD
        assert all(answer in (OLD, NEW) for answer in answers)
        assert answers[-10:] == [NEW] * 10
        assert wait_until(lambda: _status(server) == {"2": ("AVAILABLE", "OK"), "1": ("END", "OK")})
        assert _predict(server, "/versions/1").status == 404


def test_broken_version_is_reported_and_never_served(base_path):
    with ModelServer(make_options([ModelConfig("model", base_path)])) as server:
        publish_broken_version(base_path, 2)
        wait_until(lambda: _status(server).get("2", ("",))[0] == "END")
        entries = http(server.url, "GET", "/v1/models/model").json["model_version_status"]
        assert entries[0]["version"] == "2" and entries[0]["state"] == "END"
        assert entries[0]["status"]["error_code"] == "DATA_LOSS"
        assert "saved_model.pb" in entries[0]["status"]["error_message"]
        assert entries[1] == {
            "version": "1",
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }
        assert _predict(server).json == {"predictions": OLD}
        missing = _predict(server, "/versions/2")
        assert missing.status == 404
        assert missing.json["error"] == "Servable not found for request: Specific(model, 2)"


def test_version_dir_without_saved_model_fails_with_not_found(base_path):
    with ModelServer(make_options([ModelConfig("model", base_path)])) as server:
        os.makedirs(os.path.join(base_path, "3"))
        wait_until(lambda: _status(server).get("3") == ("END", "NOT_FOUND"))
        assert _predict(server).json == {"predictions": OLD}


def test_startup_fails_when_the_latest_version_is_broken(tmp_path):
    publish_broken_version(str(tmp_path), 1)
    server = ModelServer(make_options([ModelConfig("model", str(tmp_path))]))
    with pytest.raises(ServingError, match="did not become available"):
        server.start()
    server.stop()


def test_startup_fails_without_base_path(tmp_path):
    server = ModelServer(make_options([ModelConfig("model", str(tmp_path / "missing"))]))
    with pytest.raises(ServingError, match="Could not find base path"):
        server.start()


def test_labels_must_name_available_versions(base_path):
    config = ModelConfig("model", base_path, version_labels=(("stable", 5),))
    with pytest.raises(ServingError, match="assign label stable to version 5"):
        ModelServer(make_options([config])).start()


def test_all_versions_policy_and_version_directories_with_leading_zeros(base_path, built_models):
    publish_version(built_models["half_plus_two"], base_path, "0002")
    os.makedirs(os.path.join(base_path, "not_a_version"))
    config = ModelConfig("model", base_path, version_policy=VersionPolicy("all"))
    with ModelServer(make_options([config])) as server:
        assert _status(server) == {"2": ("AVAILABLE", "OK"), "1": ("AVAILABLE", "OK")}
        assert _predict(server, "/versions/1").json == {"predictions": OLD}
        assert _predict(server).json == {"predictions": NEW}


def test_config_file_reload_adds_and_removes_models(tmp_path, base_path):
    config_path = tmp_path / "models.config"

    def write_config(*names):
        entries = "".join(
            f'config {{ name: "{name}" base_path: "{base_path}" model_platform: "tensorflow" }}\n'
            for name in names
        )
        config_path.write_text(f"model_config_list {{\n{entries}}}\n")

    write_config("first")
    options = make_options(
        read_model_config_file(str(config_path)),
        model_config_file=str(config_path),
        model_config_file_poll_wait_seconds=0.1,
    )
    with ModelServer(options) as server:
        write_config("second")
        wait_until(
            lambda: (
                http(server.url, "GET", "/v1/models/second").status == 200
                and _status(server, "second") == {"1": ("AVAILABLE", "OK")}
            )
        )
        wait_until(lambda: _status(server, "first") == {"1": ("END", "OK")})
        assert (
            http(server.url, "POST", "/v1/models/first:predict", {"instances": [1.0]}).status == 404
        )
        assert http(server.url, "POST", "/v1/models/second:predict", {"instances": [1.0]}).json == {
            "predictions": [1.5]
        }


@pytest.mark.parametrize("policy", [VersionPolicy("all"), VersionPolicy("latest")])
def test_a_deleted_version_is_unloaded_at_the_next_poll(base_path, built_models, policy):
    publish_version(built_models["half_plus_two"], base_path, 2)
    with ModelServer(make_options([ModelConfig("model", base_path, policy)])) as server:
        assert _status(server)["2"] == ("AVAILABLE", "OK")
        shutil.rmtree(os.path.join(base_path, "2"))
        wait_until(lambda: _status(server)["2"] == ("END", "OK"), timeout=5)
        missing = _predict(server, "/versions/2")
        assert (missing.status, missing.json) == (
            404, {"error": "Servable not found for request: Specific(model, 2)"}
        )
        assert _predict(server).json == {"predictions": OLD}
        shutil.rmtree(os.path.join(base_path, "1"))  # no version left: none is served
        wait_until(lambda: _status(server)["1"] == ("END", "OK"), timeout=5)
        assert _predict(server).json == {"error": "Servable not found for request: Latest(model)"}
