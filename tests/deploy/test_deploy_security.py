"""The security posture of deploy/ (tests/deploy/security.py), checked on the rendered objects: the sign-in proxy is the
only way to the writable UI and the UI takes the requester from it, TLS on every ingress and to PostgreSQL, each pod's
object-store identity and its bucket policy (exactly the grants below), the MinIO root keys only in platform-data.
Bad values and manifests (sslmode=disable, an Ingress past the proxy, a run pod with the root keys, a widened policy,
...) fail with the reason."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from . import hardening, inventory, ray_clusters, run_pods, schemas, security
from .test_deploy_network_policies import IMAGE, chart_pods, chart_services

Doc = dict[str, Any]
INSTANCE_CONFIG = schemas.DEPLOY_DIR / "dagster.yaml"
BUCKET_ARN = f"arn:aws:s3:::{security.BUCKET}"
LIST = {("s3:ListBucket", BUCKET_ARN), ("s3:GetBucketLocation", BUCKET_ARN)}


def _grants(actions: tuple[str, ...], prefix: str) -> set[security.Grant]:
    return {(f"s3:{action}", f"{BUCKET_ARN}/{prefix}/*") for action in actions}


# What each identity may do, prefix by prefix of bucket ml-platform (deploy/k8s/dev/minio-identities.yaml).
EXPECTED_GRANTS: dict[str, set[security.Grant]] = {
    "platform-runs": LIST | _grants(("GetObject", "PutObject", "DeleteObject"), "platform")
    | _grants(("GetObject",), "landing"),
    "platform-sensors": LIST | _grants(("GetObject",), "landing") | _grants(("GetObject",), "platform")
    | _grants(("GetObject", "PutObject"), "quarantine"),
    "mlflow-artifacts": LIST | _grants(("GetObject", "PutObject", "DeleteObject"), "mlflow-artifacts"),
}  # fmt: skip
# Which identity each component's object-store keys must be.
EXPECTED_IDENTITY = {
    "code-server": "platform-sensors",
    "run-pod": "platform-runs",
    "step-pod": "platform-runs",
    "ray-head": "platform-runs",
    "ray-worker": "platform-runs",
    "mlflow": "mlflow-artifacts",
}


@dataclass
class Deploy:
    """Everything the check reads, as copies a bad-input case may change."""

    values: Doc
    manifests: list[inventory.Manifest]
    instance_config: Doc
    create_secrets: str
    ray_cluster: Doc

    def configmap(self, namespace: str, name: str) -> Doc:
        (found,) = [
            doc
            for _, doc in self.manifests
            if doc["kind"] == "ConfigMap"
            and doc["metadata"] == {**doc["metadata"], "namespace": namespace, "name": name}
        ]
        return found["data"]


def shipped() -> Deploy:
    return Deploy(
        copy.deepcopy(inventory.helm_effective()),
        copy.deepcopy(inventory.manifests()),
        schemas.load_yaml_file(INSTANCE_CONFIG),
        inventory.CREATE_SECRETS.read_text(encoding="utf-8"),
        ray_clusters.render(ray_clusters.production_cluster()),
    )


def containers(deploy: Deploy) -> dict[str, tuple[str, Doc]]:
    """Component -> (namespace, main container), as the cluster gets them: the code server from the chart's
    user-deployment template, run and step pods built by dagster-k8s, MLflow from its manifest."""
    (location, *_) = deploy.values["dagster-user-deployments"]["deployments"]
    code_server = {
        "env": location.get("env") or [],
        "envFrom": [{"configMapRef": {"name": ref["name"]}} for ref in location.get("envConfigMaps") or []]
        + [{"secretRef": {"name": ref["name"]}} for ref in location.get("envSecrets") or []],
    }
    run = run_pods.run_job_manifest(deploy.values, image=IMAGE)
    step = run_pods.step_job_manifest(deploy.values, image=IMAGE, step_key="bike_demand__model")
    mlflow = inventory.by_kind(deploy.manifests, "Deployment", "mlflow")
    ray = deploy.ray_cluster
    namespace = ray["metadata"]["namespace"]
    return {
        "code-server": ("dagster", code_server),
        "run-pod": ("dagster", run["spec"]["template"]["spec"]["containers"][0]),
        "step-pod": ("dagster", step["spec"]["template"]["spec"]["containers"][0]),
        "ray-head": (namespace, ray["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]),
        "ray-worker": (namespace, ray["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]),
        "mlflow": ("mlflow", mlflow["spec"]["template"]["spec"]["containers"][0]),
    }


def policy_findings(deploy: Deploy) -> list[str]:
    """Each identity's bucket policy is a plain IAM document granting exactly EXPECTED_GRANTS."""
    found = []
    policies = deploy.configmap("platform-data", "minio-identities")
    if set(policies) != {f"{identity}.json" for identity in EXPECTED_GRANTS}:
        found.append(f"ConfigMap minio-identities holds {sorted(policies)}, expected one policy per identity")
    for key, text in sorted(policies.items()):
        identity = key.removesuffix(".json")
        grants, problems = security.policy_grants(identity, text)
        found += problems
        expected = EXPECTED_GRANTS.get(identity, set())
        for action, resource in sorted(grants - expected):
            found.append(f"policy {identity} grants {action} on {resource} beyond what it needs")
        for action, resource in sorted(expected - grants):
            found.append(f"policy {identity} lacks {action} on {resource}")
    return found


def all_findings(deploy: Deploy) -> list[str]:
    writable = next(pod for pod in chart_pods(deploy.values) if pod.name == "webserver")
    manifests = deploy.manifests
    services = [*(doc for _, doc in manifests if doc["kind"] == "Service"), *chart_services(deploy.values)]
    ingresses = [doc for _, doc in manifests if doc["kind"] == "Ingress"]
    built = [
        ("run pod", "dagster", run_pods.run_job_manifest(deploy.values, image=IMAGE)["spec"]["template"]["spec"]),
        ("step pod", "dagster", run_pods.step_job_manifest(
            deploy.values, image=IMAGE, step_key="bike_demand__model")["spec"]["template"]["spec"]),
        *((where, deploy.ray_cluster["metadata"]["namespace"], spec)
          for where, spec in hardening.iter_pod_specs(deploy.ray_cluster)),
    ]  # fmt: skip
    return [
        *security.sslmode_findings(deploy.values, deploy.instance_config, deploy.create_secrets),
        *security.identity_header_findings(deploy.values, deploy.configmap("dagster", "oauth2-proxy")),
        *security.ingress_findings(ingresses, services, writable),
        *security.identity_findings(
            containers(deploy), EXPECTED_IDENTITY, inventory.created_secrets(deploy.create_secrets)
        ),
        *security.root_key_findings([*security.manifest_pod_specs(manifests), *built], deploy.create_secrets),
        *policy_findings(deploy),
    ]


# ---------------------------------------------------------------------------------------------------
# The shipped deploy/ folder
# ---------------------------------------------------------------------------------------------------


def test_the_shipped_deploy_folder_passes_the_security_check() -> None:
    assert all_findings(shipped()) == []


def test_each_pod_says_which_object_store_identity_it_uses() -> None:
    deploy = shipped()
    keys = inventory.created_secrets(deploy.create_secrets)
    sources = {
        component: security.key_source(container, namespace, keys)
        for component, (namespace, container) in containers(deploy).items()
    }
    assert sources == {
        "code-server": ("dagster", "platform-object-store-sensors"),
        "run-pod": ("dagster", "platform-object-store-runs"),
        "step-pod": ("dagster", "platform-object-store-runs"),
        "ray-head": ("dagster", "platform-object-store-runs"),
        "ray-worker": ("dagster", "platform-object-store-runs"),
        "mlflow": ("mlflow", "mlflow-object-store"),
    }
    # The run pod inherits the code server's envFrom too; the explicit env entry is what Kubernetes uses.
    run_container = containers(deploy)["run-pod"][1]
    assert {"secretRef": {"name": "platform-object-store-sensors"}} in run_container["envFrom"]


def test_the_policies_cover_the_prefixes_the_platform_really_uses() -> None:
    deploy = shipped()
    env = deploy.configmap("dagster", "platform-env")
    assert env["PLATFORM_STORAGE_URI"].startswith(f"s3://{security.BUCKET}/platform?")
    assert env["PLATFORM_QUARANTINE_URI"].startswith(f"s3://{security.BUCKET}/quarantine?")
    mlflow = inventory.by_kind(deploy.manifests, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert f"--artifacts-destination=s3://{security.BUCKET}/mlflow-artifacts" in mlflow["args"]


def test_the_setup_job_creates_every_identity_from_its_secret() -> None:
    deploy = shipped()
    job = inventory.by_kind(deploy.manifests, "Job", "minio-create-bucket")
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    loop = re.search(r"for identity in ([^;]+); do", script)
    assert loop and set(loop.group(1).split()) == set(EXPECTED_GRANTS)
    assert inventory.created_secrets(deploy.create_secrets)[("platform-data", "minio-identities")] == set(
        EXPECTED_GRANTS
    )
    text = deploy.create_secrets.replace("\\\n", " ")
    for (namespace, name), identity in security.IDENTITY_SECRETS.items():
        block = re.search(rf"create {namespace} {name} (.*)", text)
        (variable,) = re.findall(r'AWS_ACCESS_KEY_ID="\$(\w+)"', block.group(1) if block else "") or re.findall(
            r'AWS_ACCESS_KEY_ID="\$(\w+)"', "".join(re.findall(r"object_store_args\+?=\((.*?)\)", text, flags=re.S))
        )
        assert re.search(rf"^\s*{variable}={identity}$", text, flags=re.M), (name, variable, identity)


# ---------------------------------------------------------------------------------------------------
# Bad input: each fails the check with its reason
# ---------------------------------------------------------------------------------------------------


def _ingress(deploy: Deploy, namespace: str, name: str) -> Doc:
    (found,) = [
        doc
        for _, doc in deploy.manifests
        if doc["kind"] == "Ingress" and doc["metadata"]["name"] == name and doc["metadata"]["namespace"] == namespace
    ]
    return found


def _route_ui_to_webserver(deploy: Deploy) -> None:
    path = _ingress(deploy, "dagster", "dagster-ui")["spec"]["rules"][0]["http"]["paths"][0]
    path["backend"] = {"service": {"name": "dagster-dagster-webserver", "port": {"number": 8080}}}


def _pod_with_root_keys(deploy: Deploy) -> None:
    job = copy.deepcopy(inventory.by_kind(deploy.manifests, "Job", "minio-create-bucket"))
    job["metadata"].update(name="debug", namespace="dagster")
    deploy.manifests.append(("added", job))


def _widen(deploy: Deploy, identity: str, statement: Doc) -> None:
    data = deploy.configmap("platform-data", "minio-identities")
    data[f"{identity}.json"] = data[f"{identity}.json"].replace(
        '"Statement": [', f'"Statement": [{json.dumps(statement)},'
    )


def _run_env(deploy: Deploy) -> list[Doc]:
    return deploy.values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]["env"]


BAD: dict[str, tuple[Callable[[Deploy], None], str]] = {
    "sslmode=disable in the chart values": (
        lambda d: d.values["postgresql"]["postgresqlParams"].update(sslmode="disable"),
        "postgresql.postgresqlParams.sslmode: 'disable'",
    ),
    "sslmode=disable in deploy/dagster.yaml": (
        lambda d: d.instance_config["storage"]["postgres"]["postgres_db"]["params"].update(sslmode="disable"),
        "deploy/dagster.yaml storage.postgres.postgres_db.params.sslmode: 'disable'",
    ),
    "the install script defaulting to sslmode=disable": (
        lambda d: setattr(d, "create_secrets", d.create_secrets.replace(":-require}", ":-disable}")),
        "PG_SSLMODE default: 'disable'",
    ),
    "the writable UI's Ingress routed straight to the webserver": (
        _route_ui_to_webserver,
        "Ingress dagster/dagster-ui routes to the writable webserver (Service dagster-dagster-webserver) past the",
    ),
    "MLflow's Ingress without TLS": (
        lambda d: _ingress(d, "mlflow", "mlflow")["spec"].pop("tls"),
        "Ingress mlflow/mlflow: host 'mlflow.example.com' is served without TLS",
    ),
    "the webserver without the proxy's identity header (a --set that replaced the env list)": (
        lambda d: d.values["dagsterWebserver"].update(env=[{"name": "PLATFORM_UI_HOSTS", "value": "x"}]),
        "PLATFORM_UI_IDENTITY_HEADER: None is not a header oauth2-proxy sets",
    ),
    "oauth2-proxy not passing the user": (
        lambda d: d.configmap("dagster", "oauth2-proxy").update(OAUTH2_PROXY_PASS_USER_HEADERS="false"),
        "OAUTH2_PROXY_PASS_USER_HEADERS is not true",
    ),
    "run pods without their own keys (inheriting the sensors')": (
        lambda d: _run_env(d).clear(),
        "run-pod: object-store keys from Secret dagster/platform-object-store-sensors (identity platform-sensors)",
    ),
    "a run pod given the root keys' Secret name": (
        lambda d: _run_env(d)[0]["valueFrom"]["secretKeyRef"].update(name="minio-root"),
        "run pod (dagster) holds the MinIO root keys",
    ),
    "the install script giving run pods the root keys": (
        lambda d: setattr(
            d,
            "create_secrets",
            d.create_secrets.replace('SECRET_ACCESS_KEY="$RUNS_SECRET"', 'SECRET_ACCESS_KEY="$MINIO_ROOT_PASSWORD"'),
        ),
        "puts the MinIO root keys in Secret dagster/platform-object-store-runs",
    ),
    "Ray workers without their own keys": (
        lambda d: d.ray_cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0].update(env=[]),
        "ray-worker: object-store keys from Secret dagster/<none> (identity unknown), expected identity platform-runs",
    ),
    "a Ray worker given the root keys' Secret name": (
        lambda d: d.ray_cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"][0][
            "valueFrom"
        ]["secretKeyRef"].update(name="minio-root"),
        "holds the MinIO root keys",
    ),
    "a pod in dagster reading Secret minio-root": (
        _pod_with_root_keys,
        "Job/debug (dagster) holds the MinIO root keys",
    ),
    "the sensors' policy widened to every action on the bucket": (
        lambda d: _widen(
            d, "platform-sensors", {"Effect": "Allow", "Action": ["s3:*"], "Resource": [f"{BUCKET_ARN}/*"]}
        ),
        "policy platform-sensors Statement[0]: action 's3:*' is not one named S3 action",
    ),
    "the runs' policy allowed to delete the landing zone": (
        lambda d: _widen(
            d,
            "platform-runs",
            {"Effect": "Allow", "Action": ["s3:DeleteObject"], "Resource": [f"{BUCKET_ARN}/landing/*"]},
        ),
        f"policy platform-runs grants s3:DeleteObject on {BUCKET_ARN}/landing/* beyond what it needs",
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_fails_with_its_reason(case: str) -> None:
    deploy = shipped()
    mutate, reason = BAD[case]
    mutate(deploy)
    findings = all_findings(deploy)
    assert any(reason in finding for finding in findings), findings
