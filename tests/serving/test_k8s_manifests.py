"""The Kubernetes manifests: valid against the Kubernetes schemas, consistent with each other and
with serving/, and their probes answered by `keras-s2s serve` given the Deployment's own flags."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from keras_s2s.training.multi_worker import Cluster
from keras_s2s.serving.config import parse_model_config
from tests.serving.conftest import http, wait_until
from tests.serving.savedmodels import publish_version

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]
SERVING = REPOSITORY / "serving"
#: The Kubernetes release the manifests are checked against (kubernetes-validate's schemas).
KUBERNETES_VERSION = "1.33.0"
MANIFESTS = sorted([*SERVING.glob("k8s/*.yaml"), *REPOSITORY.glob("training/k8s/*.yaml")])
#: Custom resources whose published CRD schema is not available offline.
CUSTOM_RESOURCES = {"serving.kserve.io/v1beta1"}


def documents(path):
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def by_kind(kind):
    (found,) = [document for path in SERVING.glob("k8s/*.yaml") for document in documents(path)
                if document["kind"] == kind]
    return found


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_manifest_validates_against_the_kubernetes_schemas(path):
    for document in documents(path):
        if document["apiVersion"] in CUSTOM_RESOURCES:
            pytest.skip(f"{document['kind']} ({document['apiVersion']}) is a custom resource: "
                        f"its CRD schema is published in the KServe repository only, which "
                        f"cannot be fetched offline")
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.name}: {document['kind']}: {error.message} at "
                        f"{'.'.join(map(str, error.path))}")


def test_kustomization_lists_the_manifests_and_generates_a_valid_config_map():
    kustomization = yaml.safe_load((SERVING / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        f"k8s/{path.name}" for path in SERVING.glob("k8s/*.yaml")
        if path.name != "inferenceservice.yaml")
    (generator,) = kustomization["configMapGenerator"]
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]},
                  "data": {name: (SERVING / name).read_text() for name in generator["files"]}}
    kubernetes_validate.validate(config_map, KUBERNETES_VERSION, strict=True)
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    assert {"configMap": {"name": generator["name"]}} in [
        {key: value for key, value in volume.items() if key != "name"}
        for volume in pod["volumes"]]


def test_service_autoscaler_and_kserve_point_at_the_deployment_and_volume():
    deployment, service = by_kind("Deployment"), by_kind("Service")
    container_ports = {port["name"] for port in
                       deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= container_ports
    assert service["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items())
    autoscaler = by_kind("HorizontalPodAutoscaler")
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (pods_metric,) = [metric["pods"]["metric"]["name"] for metric in autoscaler["spec"]["metrics"]
                      if metric["type"] == "Pods"]  # prometheus-adapter's rule names it
    assert f"name: {{as: {pods_metric}}}" in (SERVING / "k8s" / "hpa.yaml").read_text()
    claim = by_kind("PersistentVolumeClaim")["metadata"]["name"]
    storage_uri = by_kind("InferenceService")["spec"]["predictor"]["model"]["storageUri"]
    assert storage_uri.startswith(f"pvc://{claim}/")
    model = storage_uri.removeprefix(f"pvc://{claim}/")
    assert f'base_path: "/models/{model}"' in (SERVING / "models.config").read_text()


def test_the_deployments_probes_answer_against_keras_s2s_serve(tmp_path, built_models):
    """`keras-s2s serve` run with the container's flags, its volumes laid out as the Deployment
    mounts them (stand-in SavedModels for each model version of models.config)."""
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    models, config = tmp_path / "models", tmp_path / "config"
    models_config = (SERVING / "models.config").read_text()
    for model in parse_model_config(models_config):
        base_path = models / os.path.relpath(model.base_path, mounts["models"])
        base_path.mkdir(parents=True)
        for version in model.version_policy.versions:
            publish_version(built_models["half_plus_two"], str(base_path), version)
    config.mkdir()
    (config / "models.config").write_text(
        models_config.replace(f'"{mounts["models"]}/', f'"{models}/'))
    shutil.copy(SERVING / "batching_parameters.txt", config)
    shutil.copy(SERVING / "monitoring.config", config)

    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    flags = [flag.replace(mounts["config"] + "/", f"{config}/") for flag in container["args"]]
    probes = [container[probe]["httpGet"] for probe in ("readinessProbe", "livenessProbe")]
    for probe in probes:
        assert f"--rest_api_port={ports[probe['port']]}" in flags  # the probe hits the REST port
    flags = [re.sub(r"^--(rest_api_port|port)=\d+$", r"--\1=0", flag) for flag in flags]
    process = subprocess.Popen([sys.executable, "-m", "keras_s2s.cli", "serve", *flags],
                               cwd=REPOSITORY, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr.readline().startswith("Running gRPC ModelServer at 127.0.0.1:")
        ready = process.stderr.readline()
        match = re.fullmatch(r"Exporting HTTP/REST API at:127\.0\.0\.1:(\d+) \.\.\.\n", ready)
        assert match, ready
        url = f"http://127.0.0.1:{match.group(1)}"
        for probe in probes:
            response = wait_until(lambda: (lambda r: r.status == 200 and r)(
                http(url, "GET", probe["path"])))
            states = {status["state"] for status in response.json["model_version_status"]}
            assert states == {"AVAILABLE"}
        assert http(url, "GET", probes[0]["path"] + "_not_served").status == 404
        annotations = by_kind("Deployment")["spec"]["template"]["metadata"]["annotations"]
        assert f"--rest_api_port={annotations['prometheus.io/port']}" in container["args"]
        scraped = http(url, "GET", annotations["prometheus.io/path"])
        model = parse_model_config(models_config)[0].name
        assert f':tensorflow:serving:request_count{{model_name="{model}",status="OK"}}' in (
            scraped.text)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_multi_worker_job_gives_each_pod_its_place_in_one_cluster():
    service, job = documents(REPOSITORY / "training" / "k8s" / "multi-worker-job.yaml")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "--distribute=multi-worker" in container["args"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == spec["completions"]
    assert pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"][
        "labels"].items()
    env = {variable["name"]: variable for variable in container["env"]}
    assert env["WORKER_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']")
    (port,) = container["ports"]
    for index in range(spec["completions"]):
        # Kubernetes expands $(WORKER_INDEX) in the value, as it does for any earlier variable.
        tf_config = env["TF_CONFIG"]["value"].replace("$(WORKER_INDEX)", str(index))
        cluster = Cluster.from_environment({"TF_CONFIG": tf_config})
        assert (cluster.rank, cluster.num_workers) == (index, spec["completions"])
        addresses = json.loads(tf_config)["cluster"]["worker"]
        assert addresses == [f"{job['metadata']['name']}-{i}.{pod['subdomain']}:"
                             f"{port['containerPort']}" for i in range(spec["completions"])]
