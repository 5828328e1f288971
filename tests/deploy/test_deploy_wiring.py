"""Cross-references hold: every Secret, ConfigMap, ServiceAccount and Service that a manifest or the Helm
values points at is one deploy/ creates (or the Dagster chart renders), with the keys that are read."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from . import hardening, inventory, ray_clusters, schemas

Doc = dict[str, Any]
MANIFESTS = inventory.manifests()
SCRIPT = inventory.CREATE_SECRETS
RELEASE_NAMESPACE = "dagster"
# Rendered by the Dagster chart for release "dagster" (fullname "dagster").
CHART_CONFIGMAPS = {("dagster", "dagster-instance"), ("dagster", "dagster-daemon-env")}


def _pod_secret_refs(namespace: str, pod: Mapping[str, Any], where: str) -> Iterator[tuple[str, str, str | None, str]]:
    for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
        for env in container.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                yield namespace, ref["name"], ref["key"], where
        for source in container.get("envFrom") or []:
            if "secretRef" in source:
                yield namespace, source["secretRef"]["name"], None, where
    for volume in pod.get("volumes") or []:
        if "secret" in volume:
            yield namespace, volume["secret"]["secretName"], None, where


def secret_references() -> list[tuple[str, str, str | None, str]]:
    """(namespace, secret, key or None, where) for every Secret anything we ship reads."""
    refs = []
    for name, doc in MANIFESTS:
        namespace = doc["metadata"].get("namespace", "")
        for _, pod in hardening.iter_pod_specs(doc):
            refs += list(_pod_secret_refs(namespace, pod, name))
    # The RayCluster production creates per run (resources/kuberay.py): token auth from our Secret.
    cluster = ray_clusters.render(ray_clusters.production_cluster())
    auth = cluster["spec"]["authOptions"]
    refs.append((cluster["metadata"]["namespace"], auth["secretName"], "auth_token", "resources/kuberay.py"))
    for _, pod in hardening.iter_pod_specs(cluster):
        refs += list(_pod_secret_refs(cluster["metadata"]["namespace"], pod, "resources/kuberay.py"))
    values = inventory.helm_effective()
    refs.append((RELEASE_NAMESPACE, values["global"]["postgresqlSecretName"], "postgresql-password", "helm:global"))
    for deployment in values["dagster-user-deployments"]["deployments"]:
        pod = {"containers": [{"env": deployment.get("env"), "envFrom": []}]}
        refs += list(_pod_secret_refs(RELEASE_NAMESPACE, pod, f"helm:{deployment['name']}"))
        refs += [(RELEASE_NAMESPACE, s["name"], None, f"helm:{deployment['name']}") for s in deployment["envSecrets"]]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    refs += [(RELEASE_NAMESPACE, s["name"], None, "helm:runLauncher") for s in launcher.get("envSecrets") or []]
    instance = schemas.load_yaml_file(schemas.DEPLOY_DIR / "dagster.yaml")
    secret = instance["run_launcher"]["config"]["postgres_password_secret"]
    refs.append((RELEASE_NAMESPACE, secret, "postgresql-password", "deploy/dagster.yaml"))
    return refs


def test_create_secrets_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert "--dry-run=client" in text  # values go to the API server, never to a file in the repo


@pytest.mark.parametrize("reference", secret_references(), ids=lambda r: f"{r[0]}/{r[1]}:{r[2]}<-{r[3]}")
def test_referenced_secret_and_key_are_created(reference: tuple[str, str, str | None, str]) -> None:
    namespace, name, key, _ = reference
    secrets = inventory.created_secrets()
    assert (namespace, name) in secrets, f"create-secrets.sh does not create {namespace}/{name}"
    if key is not None:
        assert key in secrets[(namespace, name)], f"{namespace}/{name} lacks key {key}"


def test_env_secrets_carry_the_variables_the_code_reads() -> None:
    secrets = inventory.created_secrets()
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= secrets[("dagster", "mlflow-client-credentials")]
    for identity in ("platform-object-store-sensors", "platform-object-store-runs"):
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= secrets[("dagster", identity)]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= secrets[("mlflow", "mlflow-object-store")]


def test_mlflow_auth_config_file_is_mounted_where_mlflow_looks() -> None:
    deployment = inventory.by_kind(MANIFESTS, "Deployment", "mlflow")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    path = env["MLFLOW_AUTH_CONFIG_PATH"]["value"]
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    secret = volume["secret"]["secretName"]
    assert path.rsplit("/", 1)[1] in inventory.created_secrets()[("mlflow", secret)]
    template = (schemas.DEPLOY_DIR / "mlflow" / "basic_auth.ini.example").read_text(encoding="utf-8")
    assert "database_uri = postgresql://" in template and "__MLFLOW_DB_PASSWORD__" in template
    assert "__MLFLOW_DB_PASSWORD__" in SCRIPT.read_text(encoding="utf-8")


def _configmap_references() -> list[tuple[str, str, str]]:
    refs = []
    for name, doc in MANIFESTS:
        namespace = doc["metadata"].get("namespace", "")
        for _, pod in hardening.iter_pod_specs(doc):
            for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
                for source in container.get("envFrom") or []:
                    if "configMapRef" in source:
                        refs.append((namespace, source["configMapRef"]["name"], name))
            for volume in pod.get("volumes") or []:
                if "configMap" in volume:
                    refs.append((namespace, volume["configMap"]["name"], name))
    for deployment in inventory.helm_effective()["dagster-user-deployments"]["deployments"]:
        refs += [
            (RELEASE_NAMESPACE, c["name"], f"helm:{deployment['name']}") for c in deployment.get("envConfigMaps") or []
        ]
    return refs


@pytest.mark.parametrize("reference", _configmap_references(), ids=lambda r: f"{r[0]}/{r[1]}<-{r[2]}")
def test_referenced_configmap_exists(reference: tuple[str, str, str]) -> None:
    namespace, name, _ = reference
    shipped = {(d["metadata"]["namespace"], d["metadata"]["name"]) for _, d in MANIFESTS if d["kind"] == "ConfigMap"}
    assert (namespace, name) in shipped | CHART_CONFIGMAPS


def test_service_accounts_exist() -> None:
    shipped = {
        (d["metadata"]["namespace"], d["metadata"]["name"]) for _, d in MANIFESTS if d["kind"] == "ServiceAccount"
    }
    values = inventory.helm_effective()
    chart = {(RELEASE_NAMESPACE, values["serviceAccount"]["name"])} if values["serviceAccount"]["create"] else set()
    for name, doc in MANIFESTS:
        for _, pod in hardening.iter_pod_specs(doc):
            account = pod.get("serviceAccountName")
            if account:
                assert (doc["metadata"]["namespace"], account) in shipped | chart, name
    binding = inventory.by_kind(MANIFESTS, "RoleBinding", "dagster-kuberay")
    assert {(s["namespace"], s["name"]) for s in binding["subjects"]} <= shipped | chart


def _service(name: str, namespace: str) -> Doc:
    matches = [
        d
        for _, d in MANIFESTS
        if d["kind"] == "Service" and d["metadata"]["name"] == name and d["metadata"]["namespace"] == namespace
    ]
    assert len(matches) == 1, f"no Service {namespace}/{name}"
    return matches[0]


def _host_parts(host: str) -> tuple[str, str]:
    parts = host.split(".")
    return parts[0], parts[1]


def test_endpoints_point_at_shipped_services() -> None:
    env = inventory.by_kind(MANIFESTS, "ConfigMap", "platform-env")["data"]
    tracking = urlparse(env["MLFLOW_TRACKING_URI"])
    service = _service(*_host_parts(tracking.hostname or ""))
    assert tracking.port in {port["port"] for port in service["spec"]["ports"]}
    assert service["spec"]["type"] == "ClusterIP"

    storage = urlparse(env["PLATFORM_STORAGE_URI"])
    endpoint = parse_qs(storage.query)["endpoint_override"][0]
    minio_host, minio_port = endpoint.split(":")
    minio = _service(*_host_parts(minio_host))
    assert int(minio_port) in {port["port"] for port in minio["spec"]["ports"]}
    assert "region" in parse_qs(storage.query)

    postgres_host = inventory.helm_effective()["postgresql"]["postgresqlHost"]
    _service(*_host_parts(postgres_host))


def test_mlflow_accepts_the_host_header_clients_send() -> None:
    env = inventory.by_kind(MANIFESTS, "ConfigMap", "platform-env")["data"]
    netloc = urlparse(env["MLFLOW_TRACKING_URI"]).netloc
    container = inventory.by_kind(MANIFESTS, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    allowed = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--allowed-hosts="))
    assert netloc in allowed.split(",")
    assert "--app-name=basic-auth" in container["args"] and "--serve-artifacts" in container["args"]
    destination = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--artifacts-destination="))
    assert destination.startswith("s3://")
    probes = [container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert probes == ["/health"] * 3
    assert container["image"] == "ghcr.io/mlflow/mlflow:v3.17.2-full"
    lock = (schemas.REPO_ROOT / "uv.lock").read_text(encoding="utf-8")
    assert 'name = "mlflow"\nversion = "3.17.2"' in lock, "server and client MLflow versions drifted"


def test_our_image_is_always_referenced_with_the_commit_placeholder() -> None:
    images = set()
    for _, doc in MANIFESTS:
        for _, pod in hardening.iter_pod_specs(doc):
            for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
                if container["image"].split(":")[0].endswith("ml-asset-platform"):
                    images.add(container["image"])
    assert images == {"ml-asset-platform:GIT_SHA"}
    readme = (schemas.DEPLOY_DIR / "README.md").read_text(encoding="utf-8")
    for path in ("k8s/pool-limits-job.yaml",):
        assert f'sed "s/:GIT_SHA/:${{IMAGE_TAG}}/" deploy/{path} | kubectl apply -f -' in readme, path
    assert "--set dagster-user-deployments.deployments[0].image.tag=${IMAGE_TAG}" in readme
    assert "--set dagsterWebserver.image.tag=${IMAGE_TAG}" in readme


def test_no_static_ray_address_anywhere() -> None:
    # One mechanism: dagster-ray creates each run's cluster and connects to it. A RAY_ADDRESS in the pods'
    # environment would point plain ray.init() calls at some other cluster.
    env = inventory.by_kind(MANIFESTS, "ConfigMap", "platform-env")["data"]
    assert "RAY_ADDRESS" not in env
    values = inventory.helm_effective()
    for deployment in values["dagster-user-deployments"]["deployments"]:
        assert "RAY_ADDRESS" not in {item["name"] for item in deployment.get("env") or []}
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert not [v for v in launcher.get("envVars") or [] if str(v).startswith("RAY_ADDRESS")]
    for path in inventory.manifest_files():
        assert "platform-ray-head-svc" not in path.read_text(encoding="utf-8"), path
