"""The Job dagster-k8s builds for a run from our Helm values (tests/deploy/run_pods.py) is a valid, hardened
Kubernetes object with the platform's environment, and job-level `dagster-k8s/config` tags layer on top."""

from __future__ import annotations

import json
from typing import Any

import pytest

from . import hardening, run_pods, schemas

Values = dict[str, Any]
IMAGE = "ml-asset-platform:0123abc"


def _container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def test_default_run_job_is_valid_and_hardened(helm_effective: Values) -> None:
    job = run_pods.run_job_manifest(helm_effective, image=IMAGE)
    schemas.validate_k8s_object(job)
    assert hardening.workload_findings(job) == []
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "dagster"
    assert job["spec"]["backoffLimit"] == 0 and job["metadata"]["namespace"] == "dagster"
    assert _container(job)["image"] == IMAGE


def test_run_pod_gets_the_code_locations_environment(helm_effective: Values) -> None:
    container = _container(run_pods.run_job_manifest(helm_effective, image=IMAGE))
    env = {item["name"]: item for item in container["env"]}
    assert env["PLATFORM_ENV"]["value"] == "prod"
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "dagster-postgresql-secret"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "ray-auth-token",
        "key": "auth_token",
    }
    sources = {next(iter(source.values()))["name"] for source in container["envFrom"]}
    assert {"platform-env", "mlflow-client-credentials", "platform-object-store-sensors"} <= sources
    assert {mount["mountPath"] for mount in container["volumeMounts"]} >= {
        "/tmp",
        "/opt/dagster/dagster_home/storage",
    }


def test_job_tags_override_resources_and_add_gpu_scheduling(helm_effective: Values) -> None:
    tags = {
        "dagster-k8s/config": json.dumps(
            {
                "container_config": {
                    "resources": {
                        "requests": {"cpu": "4", "memory": "16Gi"},
                        "limits": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "1"},
                    }
                },
                "pod_spec_config": {
                    "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                },
            }
        )
    }
    job = run_pods.run_job_manifest(helm_effective, image=IMAGE, job_tags=tags)
    schemas.validate_k8s_object(job)
    assert hardening.workload_findings(job) == []
    resources = _container(job)["resources"]
    assert resources["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert resources["limits"] == {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "1"}
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    # Deep merge keeps the launcher's pod security context.
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_a_bad_tag_produces_an_invalid_job(helm_effective: Values) -> None:
    # dagster-k8s accepts any string as a quantity; the API server (and validate_k8s_object) would not.
    tags = {"dagster-k8s/config": json.dumps({"container_config": {"resources": {"limits": {"memory": "8 GB"}}}})}
    job = run_pods.run_job_manifest(helm_effective, image=IMAGE, job_tags=tags)
    with pytest.raises(schemas.SchemaValidationError, match="not a Kubernetes quantity"):
        schemas.validate_k8s_object(job)


def test_a_tag_raising_requests_past_the_floors_limit_produces_an_invalid_job(helm_effective: Values) -> None:
    # Deep merge keeps the launcher's limits.cpu ("2") when a tag sets only requests: the API server then
    # refuses the Job (request above limit). A tag asking for more CPU must raise the limit too.
    limit = helm_effective["runLauncher"]["config"]["k8sRunLauncher"]["resources"]["limits"]["cpu"]
    tags = {"dagster-k8s/config": json.dumps({"container_config": {"resources": {"requests": {"cpu": "4"}}}})}
    job = run_pods.run_job_manifest(helm_effective, image=IMAGE, job_tags=tags)
    assert _container(job)["resources"]["limits"]["cpu"] == limit
    with pytest.raises(schemas.SchemaValidationError, match=r"requests.cpu: '4' exceeds limits.cpu"):
        schemas.validate_k8s_object(job)


def test_launcher_config_is_what_k8s_run_launcher_accepts(helm_effective: Values) -> None:
    launcher = run_pods.k8s_run_launcher(helm_effective)
    assert launcher.job_namespace == "dagster" and launcher.service_account_name == "dagster"
    assert launcher.security_context["readOnlyRootFilesystem"] is True
