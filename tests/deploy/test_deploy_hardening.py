"""Hardening policy (tests/deploy/hardening.py) over every shipped manifest, the Helm values, and the run pod
dagster-k8s builds from them; plus proof that each rule catches a violation."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from . import hardening, inventory, run_pods

Doc = dict[str, Any]
MANIFESTS = inventory.manifests()
WORKLOADS = [(name, doc) for name, doc in MANIFESTS if list(hardening.iter_pod_specs(doc))]


def test_workloads_are_found() -> None:
    # Ray pods are not shipped as a manifest: test_deploy_kuberay_cluster.py checks the per-run RayCluster,
    # test_deploy_step_pods.py the step Jobs.
    kinds = {doc["kind"] for _, doc in WORKLOADS}
    assert {"Deployment", "StatefulSet", "Job"} <= kinds


@pytest.mark.parametrize("document", [doc for _, doc in WORKLOADS], ids=[name for name, _ in WORKLOADS])
def test_workload_is_hardened(document: Doc) -> None:
    assert hardening.workload_findings(document) == []


@pytest.mark.parametrize("document", [doc for _, doc in MANIFESTS], ids=[name for name, _ in MANIFESTS])
def test_no_secret_material_in_manifests(document: Doc) -> None:
    assert hardening.manifest_findings(document) == []


def test_no_secret_manifest_is_shipped() -> None:
    assert [name for name, doc in MANIFESTS if doc["kind"] == "Secret"] == []


def test_helm_values_are_hardened(helm_effective: Doc) -> None:
    assert hardening.helm_findings(helm_effective) == []


def test_every_helm_container_is_covered(helm_effective: Doc) -> None:
    where = {name for name, _, _ in hardening.helm_container_views(helm_effective)}
    assert {
        "helm:dagsterWebserver",
        "helm:dagsterDaemon",
        "helm:dagsterWebserver/init:check-db-ready",
        "helm:dagster-user-deployments/ml-asset-platform",
    } <= where


def test_run_pod_built_by_dagster_k8s_is_hardened(helm_effective: Doc) -> None:
    job = run_pods.run_job_manifest(helm_effective, image="ml-asset-platform:0123abc")
    assert hardening.workload_findings(job) == []


def test_read_only_exceptions_are_few_and_explained() -> None:
    assert len(hardening.READ_ONLY_ROOT_FS_EXCEPTIONS) <= 5
    assert all(len(reason) > 30 for reason in hardening.READ_ONLY_ROOT_FS_EXCEPTIONS.values())
    readme = (inventory.schemas.DEPLOY_DIR / "README.md").read_text(encoding="utf-8")
    assert "documented exceptions" in readme and "Ray head and workers" in readme


# ---------------------------------------------------------------------------------------------------
# Each rule catches a violation
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow() -> Doc:
    return inventory.by_kind(MANIFESTS, "Deployment", "mlflow")


def _container(doc: Doc) -> Doc:
    return doc["spec"]["template"]["spec"]["containers"][0]


VIOLATIONS = {
    "root user": (lambda d: _container(d)["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
    "uid 0": (lambda d: _container(d)["securityContext"].update(runAsUser=0), "runAsUser is 0"),
    "privilege escalation": (
        lambda d: _container(d)["securityContext"].pop("allowPrivilegeEscalation"),
        "allowPrivilegeEscalation",
    ),
    "writable root filesystem": (
        lambda d: _container(d)["securityContext"].update(readOnlyRootFilesystem=False),
        "readOnlyRootFilesystem",
    ),
    "no seccomp profile": (
        lambda d: d["spec"]["template"]["spec"]["securityContext"].pop("seccompProfile"),
        "seccompProfile",
    ),
    "unconfined seccomp": (
        lambda d: _container(d)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        "seccompProfile",
    ),
    "capabilities kept": (
        lambda d: _container(d)["securityContext"].pop("capabilities"),
        "capabilities.drop",
    ),
    "no memory limit": (lambda d: _container(d)["resources"]["limits"].pop("memory"), "limits.memory"),
    "no requests": (lambda d: _container(d)["resources"].pop("requests"), "requests.cpu"),
    "latest tag": (lambda d: _container(d).update(image="ghcr.io/mlflow/mlflow:latest"), "latest"),
    "no tag": (lambda d: _container(d).update(image="ghcr.io/mlflow/mlflow"), "no tag or digest"),
    "literal password": (
        lambda d: _container(d)["env"].append({"name": "MLFLOW_AUTH_ADMIN_PASSWORD", "value": "hunter22"}),
        "literal value",
    ),
    "credentials in a URI": (
        lambda d: _container(d)["env"].append({"name": "DB", "value": "postgresql://u:p@db:5432/x"}),
        "URI with credentials",
    ),
}


@pytest.mark.parametrize("violation", list(VIOLATIONS), ids=list(VIOLATIONS))
def test_policy_catches_violation(mlflow: Doc, violation: str) -> None:
    broken = copy.deepcopy(mlflow)
    corrupt, expected = VIOLATIONS[violation]
    corrupt(broken)
    findings = hardening.workload_findings(broken)
    assert any(expected in finding for finding in findings), findings


def test_policy_flags_committed_secret_data() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "x"},
        "stringData": {"password": "p"},
    }
    assert hardening.manifest_findings(secret)
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x"},
        "data": {"DB_PASSWORD": "p"},
    }
    assert hardening.manifest_findings(config)


def test_policy_flags_helm_literal_password_and_root(helm_effective: Doc) -> None:
    broken = copy.deepcopy(helm_effective)
    broken["postgresql"]["postgresqlPassword"] = "hunter22"
    broken["generatePostgresqlPasswordSecret"] = True
    broken["dagsterDaemon"]["podSecurityContext"] = {}
    broken["dagsterDaemon"]["securityContext"] = {
        **broken["dagsterDaemon"]["securityContext"],
        "runAsNonRoot": None,
    }
    findings = hardening.helm_findings(broken)
    assert any("postgresqlPassword" in f for f in findings)
    assert any("generatePostgresqlPasswordSecret" in f for f in findings)
    assert any(f.startswith("helm:dagsterDaemon:") and "runAsNonRoot" in f for f in findings)


@pytest.mark.parametrize(
    ("image", "ok"),
    [
        ("ml-asset-platform:abc1234", True),
        ("localhost:5000/ml-asset-platform:abc1234", True),
        ("repo@sha256:" + "0" * 64, True),
        ("localhost:5000/ml-asset-platform", False),
        ("busybox", False),
        ("busybox:latest", False),
    ],
)
def test_image_reference_parsing(image: str, ok: bool) -> None:
    assert (hardening.image_findings(image, "x") == []) is ok
