"""Every Kubernetes object under deploy/ validates (kubernetes-validate strict, KubeRay kinds against the
vendored CRDs), the RayCluster says what the platform needs, and each validator rejects broken copies."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from . import hardening, inventory, schemas

Doc = dict[str, Any]
MANIFESTS = inventory.manifests()


def test_manifests_are_found() -> None:
    kinds = {document["kind"] for _, document in MANIFESTS}
    assert {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "StatefulSet",
        "Service",
        "ServiceAccount",
        "Job",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
        "RayCluster",
    } <= kinds


@pytest.mark.parametrize("document", [doc for _, doc in MANIFESTS], ids=[name for name, _ in MANIFESTS])
def test_manifest_validates(document: Doc) -> None:
    schemas.validate_manifest(document)


@pytest.mark.parametrize("version", ["1.30", "1.32", "1.34"])
def test_manifests_validate_across_supported_kubernetes_versions(version: str) -> None:
    for _, document in MANIFESTS:
        if not str(document["apiVersion"]).startswith("ray.io/"):
            schemas.validate_k8s_object(document, version)


def test_every_namespaced_object_names_its_namespace() -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    missing = [
        name for name, doc in MANIFESTS if doc["kind"] not in cluster_scoped and not doc["metadata"].get("namespace")
    ]
    assert not missing


# ---------------------------------------------------------------------------------------------------
# The RayCluster
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raycluster() -> Doc:
    return inventory.by_kind(MANIFESTS, "RayCluster", "platform-ray")


def test_raycluster_autoscales_cpu_workers_and_keeps_gpu_optional(raycluster: Doc) -> None:
    spec = raycluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    groups = {group["groupName"]: group for group in spec["workerGroupSpecs"]}
    assert groups["cpu"]["maxReplicas"] > groups["cpu"]["minReplicas"]
    assert (groups["gpu"]["replicas"], groups["gpu"]["minReplicas"]) == (0, 0)
    gpu_container = groups["gpu"]["template"]["spec"]["containers"][0]
    assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_raycluster_dashboard_stays_inside_the_cluster(raycluster: Doc) -> None:
    head = raycluster["spec"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"
    assert head.get("enableIngress", False) is False
    assert "headService" not in head or head["headService"].get("spec", {}).get("type", "ClusterIP") == "ClusterIP"


def test_raycluster_uses_token_auth_from_the_shared_secret(raycluster: Doc) -> None:
    spec = raycluster["spec"]
    assert spec["authOptions"] == {"mode": "token", "secretName": "ray-auth-token"}
    assert spec["rayVersion"] == "2.60.0"


def test_ray_version_matches_the_locked_ray(raycluster: Doc) -> None:
    lock = (schemas.REPO_ROOT / "uv.lock").read_text(encoding="utf-8")
    assert f'name = "ray"\nversion = "{raycluster["spec"]["rayVersion"]}"' in lock


def test_ray_pods_run_our_image_with_the_commit_placeholder(raycluster: Doc) -> None:
    images = {container["image"] for _, pod in hardening.iter_pod_specs(raycluster) for container in pod["containers"]}
    assert images == {"ml-asset-platform:GIT_SHA"}


# ---------------------------------------------------------------------------------------------------
# Each validator proves it can fail
# ---------------------------------------------------------------------------------------------------


def _head_container(doc: Doc) -> Doc:
    return doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


RAYCLUSTER_BREAKAGES: dict[str, tuple[Callable[[Doc], None], str]] = {
    "wrong type: maxReplicas as string": (
        lambda d: d["spec"]["workerGroupSpecs"][0].__setitem__("maxReplicas", "4"),
        "is not of type 'integer'",
    ),
    "misspelled: workerGroupSpecs[].minReplica": (
        lambda d: d["spec"]["workerGroupSpecs"][0].__setitem__(
            "minReplica", d["spec"]["workerGroupSpecs"][0].pop("minReplicas")
        ),
        "'minReplica' was unexpected",
    ),
    "misspelled: headGroupSpec.rayStartParam": (
        lambda d: d["spec"]["headGroupSpec"].__setitem__("rayStartParam", {}),
        "'rayStartParam' was unexpected",
    ),
    "misspelled inside the pod template: imagePullPolicyy": (
        lambda d: _head_container(d).__setitem__("imagePullPolicyy", "Always"),
        "'imagePullPolicyy' was unexpected",
    ),
    "misspelled in metadata: labelz": (
        lambda d: d["metadata"].__setitem__("labelz", {}),
        "'labelz' was unexpected",
    ),
    "missing required: groupName": (
        lambda d: d["spec"]["workerGroupSpecs"][0].pop("groupName"),
        "'groupName' is a required property",
    ),
    "missing required: headGroupSpec": (
        lambda d: d["spec"].pop("headGroupSpec"),
        "'headGroupSpec' is a required property",
    ),
    "bad enum: authOptions.mode": (
        lambda d: d["spec"]["authOptions"].__setitem__("mode", "tokens"),
        "is not one of",
    ),
    "controller check: minReplicas > maxReplicas": (
        lambda d: d["spec"]["workerGroupSpecs"][0].update(minReplicas=5, replicas=5),
        "minReplicas (5) > maxReplicas",
    ),
    "controller check: token auth needs rayVersion >= 2.52": (
        lambda d: d["spec"].__setitem__("rayVersion", "2.40.0"),
        "needs rayVersion >= 2.52.0",
    ),
    "wrong apiVersion": (lambda d: d.__setitem__("apiVersion", "ray.io/v2"), "is not served"),
}


@pytest.mark.parametrize("breakage", list(RAYCLUSTER_BREAKAGES), ids=list(RAYCLUSTER_BREAKAGES))
def test_broken_raycluster_is_rejected(raycluster: Doc, breakage: str) -> None:
    broken = copy.deepcopy(raycluster)
    corrupt, expected = RAYCLUSTER_BREAKAGES[breakage]
    corrupt(broken)
    with pytest.raises(schemas.SchemaValidationError) as raised:
        schemas.validate_raycluster(broken)
    assert expected in str(raised.value)


def test_non_strict_raycluster_validation_tolerates_pruned_fields_only(raycluster: Doc) -> None:
    pruned = copy.deepcopy(raycluster)
    pruned["spec"]["headGroupSpec"]["metadata"] = {"labels": {}}  # what dagster-ray's default spec carries
    with pytest.raises(schemas.SchemaValidationError):
        schemas.validate_raycluster(pruned)
    schemas.validate_raycluster(pruned, strict=False)
    wrong_type = copy.deepcopy(raycluster)
    wrong_type["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "4"
    with pytest.raises(schemas.SchemaValidationError):
        schemas.validate_raycluster(wrong_type, strict=False)


def _rayjob(raycluster: Doc) -> Doc:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "step-cluster", "namespace": "dagster"},
        "spec": {
            "submissionMode": "InteractiveMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 300,
            "activeDeadlineSeconds": 86400,
            "rayClusterSpec": copy.deepcopy(raycluster["spec"]),
        },
    }


def test_rayjob_built_from_our_cluster_spec_validates(raycluster: Doc) -> None:
    schemas.validate_rayjob(_rayjob(raycluster))


RAYJOB_BREAKAGES: dict[str, tuple[Callable[[Doc], None], str]] = {
    "bad enum: submissionMode": (
        lambda d: d["spec"].__setitem__("submissionMode", "Interactive"),
        "is not one of",
    ),
    "misspelled: rayClusterSpecs": (
        lambda d: d["spec"].__setitem__("rayClusterSpecs", d["spec"].pop("rayClusterSpec")),
        "'rayClusterSpecs' was unexpected",
    ),
    "wrong type: ttlSecondsAfterFinished": (
        lambda d: d["spec"].__setitem__("ttlSecondsAfterFinished", "300"),
        "is not of type 'integer'",
    ),
    "missing required in the embedded cluster: containers": (
        lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"].pop("containers"),
        "'containers' is a required property",
    ),
    "wrong kind": (lambda d: d.__setitem__("kind", "RayCluster"), "expected 'RayJob'"),
}


@pytest.mark.parametrize("breakage", list(RAYJOB_BREAKAGES), ids=list(RAYJOB_BREAKAGES))
def test_broken_rayjob_is_rejected(raycluster: Doc, breakage: str) -> None:
    broken = _rayjob(raycluster)
    corrupt, expected = RAYJOB_BREAKAGES[breakage]
    corrupt(broken)
    with pytest.raises(schemas.SchemaValidationError) as raised:
        schemas.validate_rayjob(broken)
    assert expected in str(raised.value)


@pytest.fixture(scope="module")
def mlflow_deployment() -> Doc:
    return inventory.by_kind(MANIFESTS, "Deployment", "mlflow")


def _mlflow_container(doc: Doc) -> Doc:
    return doc["spec"]["template"]["spec"]["containers"][0]


K8S_BREAKAGES: dict[str, tuple[Callable[[Doc], None], str]] = {
    "wrong type: replicas as string": (lambda d: d["spec"].__setitem__("replicas", "1"), "replicas"),
    "misspelled: containers[].imagePullPolicyy": (
        lambda d: _mlflow_container(d).__setitem__("imagePullPolicyy", "Always"),
        "imagePullPolicyy",
    ),
    "misspelled: resources.limit": (
        lambda d: _mlflow_container(d)["resources"].__setitem__(
            "limit", _mlflow_container(d)["resources"].pop("limits")
        ),
        "limit",
    ),
    "missing required: selector": (lambda d: d["spec"].pop("selector"), "selector"),
    "bad quantity: memory '2 Gi'": (
        lambda d: _mlflow_container(d)["resources"]["limits"].__setitem__("memory", "2 Gi"),
        "not a Kubernetes quantity",
    ),
    "missing required: container name": (lambda d: _mlflow_container(d).pop("name"), "name"),
    "unknown kind": (lambda d: d.__setitem__("kind", "Deploymnt"), "Couldn't find schema"),
}


@pytest.mark.parametrize("breakage", list(K8S_BREAKAGES), ids=list(K8S_BREAKAGES))
def test_broken_k8s_object_is_rejected(mlflow_deployment: Doc, breakage: str) -> None:
    broken = copy.deepcopy(mlflow_deployment)
    corrupt, expected = K8S_BREAKAGES[breakage]
    corrupt(broken)
    with pytest.raises(schemas.SchemaValidationError) as raised:
        schemas.validate_k8s_object(broken)
    assert expected in str(raised.value)
