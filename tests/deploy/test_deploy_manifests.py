"""Every Kubernetes object under deploy/ validates (kubernetes-validate strict, KubeRay kinds against the
vendored CRDs) and the Kubernetes validator rejects broken copies. The RayCluster is not shipped any more:
tests/deploy/test_deploy_kuberay_cluster.py checks the one production renders per run."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from . import inventory, schemas

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
# Each validator proves it can fail (KubeRay kinds: tests/deploy/test_deploy_kuberay_cluster.py, against the
# RayCluster production renders)
# ---------------------------------------------------------------------------------------------------


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
    "request above its limit": (
        lambda d: _mlflow_container(d)["resources"].update(requests={"cpu": "4", "memory": "8Gi"}),
        "exceeds limits.",
    ),
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
