"""deploy/k8s/rbac-kuberay.yaml grants what dagster-ray's KubeRayCluster calls, and little else.

The calls are read from the installed dagster-ray itself (every Kubernetes API method its kuberay package
invokes), so an upgrade that starts calling something new fails here instead of in a run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from . import inventory, run_pods

Permission = tuple[str, str, str]  # (apiGroup, resource, verb)
MANIFESTS = inventory.manifests()

# Kubernetes client method -> permission it needs. Custom-object calls go to `rayclusters`: production uses
# KubeRayCluster and its RayClusterClient only (platform_assets/wiring.py), never the RayJob client.
API_CALLS: dict[str, Permission] = {
    "list_namespaced_custom_object": ("ray.io", "rayclusters", "list"),
    "get_namespaced_custom_object": ("ray.io", "rayclusters", "get"),
    "create_namespaced_custom_object": ("ray.io", "rayclusters", "create"),
    "delete_namespaced_custom_object": ("ray.io", "rayclusters", "delete"),
    "patch_namespaced_custom_object": ("ray.io", "rayclusters", "patch"),
    "call_api:PATCH": ("ray.io", "rayclusters", "patch"),  # the sharing-lock JSON patch
    "get_namespaced_custom_object_status": ("ray.io", "rayclusters/status", "get"),
    "read_namespaced_endpoints": ("", "endpoints", "get"),
    "read_namespaced_pod": ("", "pods", "get"),
    "read_namespaced_pod_log": ("", "pods/log", "get"),
    "create_namespaced_lease": ("coordination.k8s.io", "leases", "create"),
    "read_namespaced_lease": ("coordination.k8s.io", "leases", "get"),
    "delete_namespaced_lease": ("coordination.k8s.io", "leases", "delete"),
}
_CALL = re.compile(r"_(?:api|core_v1_api|coordination_api)\.([a-z_]+)\(")
_RAW_CALL = re.compile(r"call_api\(\s*[^,]+,\s*\"([A-Z]+)\"")


def _dagster_ray_kuberay() -> Path:
    import dagster_ray.kuberay

    return Path(dagster_ray.kuberay.__file__).parent


def dagster_ray_api_calls() -> dict[str, list[str]]:
    """Kubernetes client method (or `call_api:VERB`) -> files of dagster_ray/kuberay that call it."""
    calls: dict[str, list[str]] = {}
    root = _dagster_ray_kuberay()
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        found = set(_CALL.findall(text)) - {"call_api"}
        found |= {f"call_api:{verb}" for verb in _RAW_CALL.findall(text)}
        for method in found:
            calls.setdefault(method, []).append(str(path.relative_to(root)))
    return calls


def granted(role: dict[str, Any]) -> set[Permission]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.fixture(scope="module")
def role() -> dict[str, Any]:
    return inventory.by_kind(MANIFESTS, "Role", "dagster-kuberay")


def test_scan_finds_dagster_rays_calls() -> None:
    calls = dagster_ray_api_calls()
    assert {"create_namespaced_custom_object", "call_api:PATCH", "create_namespaced_lease"} <= set(calls)


def test_every_call_dagster_ray_makes_is_known() -> None:
    unknown = {method: files for method, files in dagster_ray_api_calls().items() if method not in API_CALLS}
    assert unknown == {}, "dagster-ray calls Kubernetes APIs this test does not map to RBAC; add them"


def test_role_grants_every_call(role: dict[str, Any]) -> None:
    needed = {API_CALLS[method] for method in dagster_ray_api_calls()}
    assert needed - granted(role) == set()


def test_role_grants_the_raycluster_lifecycle(role: dict[str, Any]) -> None:
    verbs = {verb for group, resource, verb in granted(role) if (group, resource) == ("ray.io", "rayclusters")}
    assert {"create", "get", "list", "watch", "delete", "patch"} <= verbs


def test_role_is_least_privilege(role: dict[str, Any]) -> None:
    permissions = granted(role)
    assert not [p for p in permissions if "*" in p]
    resources = {resource for _, resource, _ in permissions}
    assert resources <= {"rayclusters", "rayclusters/status", "pods", "pods/log", "services", "endpoints", "leases"}
    assert not [
        p
        for p in permissions
        if p[1] in {"pods", "pods/log", "services", "endpoints"}
        and p[2]
        not in {
            "get",
            "list",
            "watch",
        }
    ], "core objects are read-only for dagster-ray"
    assert role["kind"] == "Role", "namespace-scoped, never a ClusterRole"


def _subjects(name: str) -> set[tuple[str, str, str]]:
    binding = inventory.by_kind(MANIFESTS, "RoleBinding", name)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
    return {(s["kind"], s["namespace"], s["name"]) for s in binding["subjects"]}


def test_only_the_ray_steps_account_may_create_clusters(helm_effective: dict[str, Any]) -> None:
    from kernel.pipeline import RAY_STEP_SERVICE_ACCOUNT
    from resources.kuberay import NAMESPACE

    assert _subjects("dagster-kuberay") == {("ServiceAccount", NAMESPACE, RAY_STEP_SERVICE_ACCOUNT)}
    code_server = helm_effective["global"]["serviceAccountName"]
    run = run_pods.run_job_manifest(helm_effective, image="ml-asset-platform:abc1234")
    assert run["spec"]["template"]["spec"]["serviceAccountName"] == code_server
    # The code server's cleanup sensor lists clusters; the run pods sharing its account get that read and no more.
    assert _subjects("dagster-kuberay-read") == {("ServiceAccount", NAMESPACE, code_server)}
    read = inventory.by_kind(MANIFESTS, "Role", "dagster-kuberay-read")
    assert granted(read) == {("ray.io", "rayclusters", verb) for verb in ("get", "list", "watch")}


def test_other_step_pods_have_no_kubernetes_rights() -> None:
    from platform_assets.wiring import STEP_SERVICE_ACCOUNT

    account = inventory.by_kind(MANIFESTS, "ServiceAccount", STEP_SERVICE_ACCOUNT)
    assert account["automountServiceAccountToken"] is False
    bound = {
        subject["name"]
        for _, doc in MANIFESTS
        if doc["kind"] in {"RoleBinding", "ClusterRoleBinding"}
        for subject in doc.get("subjects") or []
    }
    assert STEP_SERVICE_ACCOUNT not in bound
