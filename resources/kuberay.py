"""Production Ray on Kubernetes: dagster-ray's KubeRayCluster, sized from the pipeline specs' compute hints."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dagster_ray.kuberay import KubeRayCluster

from kernel.spec import K8sRequests, PipelineSpec
from resources.compute import connect_without_ray_data

if TYPE_CHECKING:
    from dagster_ray.kuberay import RayClusterConfig
    from dagster_ray.types import AnyDagsterContext
    from ray._private.worker import BaseContext

NAMESPACE = "dagster"
RAY_VERSION = "2.60.0"
AUTH_SECRET = "ray-auth-token"
# The most workers one group of one run's cluster scales to: a run's backfill takes at most this many of the heaviest
# worker from the node pool. Below it, a spec with ray_days_per_task is bounded by the tasks its longest range makes.
MAX_WORKERS_PER_GROUP = 8
# Ray pods read and write the asset store themselves with the run identity (platform-runs), the Secret run and step
# pods use (deploy/helm/values.yaml runK8sConfig), and the same region and endpoint as the steps (ConfigMap
# platform-env; optional: a managed S3 has no endpoint override).
RUN_OBJECT_STORE_SECRET = "platform-object-store-runs"
PLATFORM_ENV_CONFIGMAP = "platform-env"
# Custom resource names that survive KubeRay's `ray start --resources` quoting and its autoscaler's parsing.
_RESOURCE_PUNCTUATION = "_-.:/"
_RESOURCE_NAME = re.compile(r"[A-Za-z0-9_.:/-]+")
# The image's user (deploy/docker/Dockerfile: USER 10001:10001, HOME=/home/app owned by it).
_NON_ROOT_POD = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
_NON_ROOT_CONTAINER = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
# KubeRay's autoscaler sidecar in the head pod: dagster-ray's default options carry no securityContext and
# 0.1Gi of memory, too little for the Python autoscaler process.
_AUTOSCALER_OPTIONS = {
    "upscalingMode": "Default",
    "idleTimeoutSeconds": 60,
    "imagePullPolicy": "IfNotPresent",
    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
    "securityContext": _NON_ROOT_CONTAINER,
}


def _cpu_millis(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else int(float(quantity) * 1000)


def _memory_mib(quantity: str) -> int:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(int(quantity) / (1024 * 1024))


def largest_request(specs: list[PipelineSpec]) -> K8sRequests:
    """One worker shape that fits the heaviest step of every pipeline (training and the rest)."""
    hints = [request for spec in specs for request in (spec.compute.training, spec.compute.default)]
    if not hints:
        return K8sRequests()
    cpu = max(hints, key=lambda r: _cpu_millis(r.cpu)).cpu
    memory = max(hints, key=lambda r: _memory_mib(r.memory)).memory
    gpu = max(r.gpu for r in hints)
    selector = next((r.gpu_node_selector for r in hints if r.gpu), {})
    return K8sRequests(cpu=cpu, memory=memory, gpu=gpu, gpu_node_selector=selector)


def _object_store_env() -> list[dict[str, Any]]:
    """Keys by reference to the Secret and ConfigMap, never inline; the endpoint keys are optional (managed S3)."""
    secret = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": RUN_OBJECT_STORE_SECRET, "key": key}}}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    ]
    config = [
        {"name": key, "valueFrom": {"configMapKeyRef": {"name": PLATFORM_ENV_CONFIGMAP, "key": key, "optional": True}}}
        for key in ("AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
    ]
    return [*secret, *config]


def _pod(name: str, resources: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    container = {
        "name": name,
        "imagePullPolicy": "IfNotPresent",
        "resources": resources,
        "securityContext": _NON_ROOT_CONTAINER,
        "env": _object_store_env(),
        "volumeMounts": [{"mountPath": "/tmp/ray", "name": "ray-logs"}],
    }
    return {
        "spec": {
            "securityContext": _NON_ROOT_POD,
            "containers": [container],
            "volumes": [{"name": "ray-logs", "emptyDir": {}}],
            **(extra or {}),
        }
    }


def _days(spec: PipelineSpec) -> int:
    """The longest range a run of `spec` can cover: its whole partition set (up to today when open-ended)."""
    end = spec.partitioning.end_date or datetime.now(UTC).date()
    return max((end - spec.partitioning.start_date).days, 1)


def _group_name(resources: frozenset[str]) -> str:
    if not resources:
        return "cpu"
    name = "cpu-" + "-".join(re.sub(r"[^a-z0-9]+", "-", resource.lower()).strip("-") for resource in sorted(resources))
    return name[:40].rstrip("-")


def _cpu_group(name: str, specs: list[PipelineSpec]) -> dict[str, Any]:
    """A worker group every task of `specs` fits on: whole CPUs of the heaviest step's pod, the custom resources the
    specs ask for (enough for as many tasks as the CPUs run), replicas up to what the largest range can use."""
    shape = largest_request(specs)
    num_cpus = _cpu_millis(shape.cpu) // 1000
    for spec in specs:
        if spec.compute.ray_cpus_per_task > num_cpus:
            raise ValueError(
                f"pipeline {spec.name!r} ({spec.file}): compute.ray_cpus_per_task {spec.compute.ray_cpus_per_task:g} "
                f"does not fit a worker of group {name!r} ({num_cpus} whole CPUs, from the largest compute.*.cpu of "
                f"its specs, {shape.cpu!r}); its tasks would wait forever: raise compute.training.cpu or "
                "compute.default.cpu, or lower ray_cpus_per_task"
            )
    # Rounded first: 0.6 CPUs / 0.2 per task is 3 tasks, not float division's 2.9999999999999996.
    tasks_per_worker = {spec.name: math.floor(round(num_cpus / spec.compute.ray_cpus_per_task, 6)) for spec in specs}
    offered: dict[str, int] = {}
    for spec in specs:
        for resource, amount in spec.compute.ray_resources.items():
            needed = math.ceil(round(amount * tasks_per_worker[spec.name], 6))
            offered[resource] = max(offered.get(resource, 0), needed)
    workers = [
        math.ceil(math.ceil(_days(spec) / spec.compute.ray_days_per_task) / tasks_per_worker[spec.name])
        if spec.compute.ray_days_per_task
        else MAX_WORKERS_PER_GROUP
        for spec in specs
    ]
    params = {"num-cpus": str(num_cpus)}
    if offered:
        # The quoting KubeRay passes through to `ray start --resources` and its autoscaler parses back.
        params["resources"] = json.dumps(json.dumps(offered, sort_keys=True))
    requests = {"cpu": shape.cpu, "memory": shape.memory}
    return {
        "groupName": name,
        "replicas": 0,
        "minReplicas": 0,
        "maxReplicas": max(1, min(MAX_WORKERS_PER_GROUP, max(workers, default=MAX_WORKERS_PER_GROUP))),
        "rayStartParams": params,
        "template": _pod("ray-worker", {"requests": requests, "limits": dict(requests)}),
    }


def cpu_worker_groups(specs: list[PipelineSpec]) -> list[dict[str, Any]]:
    """One autoscaled worker group per set of custom Ray resources the specs ask for (`cpu` for none), so every
    spec's tasks have a node type that offers what they ask; refuses a spec whose tasks no worker could run."""
    by_resources: dict[frozenset[str], list[PipelineSpec]] = {}
    for spec in specs:
        for resource in spec.compute.ray_resources:
            if not _RESOURCE_NAME.fullmatch(resource):
                raise ValueError(
                    f"pipeline {spec.name!r} ({spec.file}): compute.ray_resources name {resource!r} cannot be "
                    f"offered by a KubeRay worker group (letters, digits and {_RESOURCE_PUNCTUATION!r} only)"
                )
        by_resources.setdefault(frozenset(spec.compute.ray_resources), []).append(spec)
    if not by_resources:
        by_resources[frozenset()] = []
    names = {resources: _group_name(resources) for resources in by_resources}
    if len(set(names.values())) != len(names):
        raise ValueError(f"compute.ray_resources sets {sorted(map(sorted, names))} map to the same worker group name")
    return [
        _cpu_group(names[resources], by_resources[resources])
        for resources in sorted(by_resources, key=lambda resources: names[resources])
    ]


def ray_cluster_spec(specs: list[PipelineSpec]) -> dict[str, Any]:
    """The RayCluster `spec` in KubeRay's camelCase: head, autoscaled CPU worker groups, a GPU group if asked."""
    worker_groups = cpu_worker_groups(specs)
    shape = largest_request(specs)
    if shape.gpu:
        requests = {"cpu": shape.cpu, "memory": shape.memory}
        gpu_limits = {**requests, "nvidia.com/gpu": str(shape.gpu)}
        scheduling = {
            "nodeSelector": dict(shape.gpu_node_selector),
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        }
        worker_groups.append(
            {
                "groupName": "gpu",
                "replicas": 0,
                "minReplicas": 0,
                "maxReplicas": 1,
                "rayStartParams": {},
                "template": _pod("ray-worker", {"requests": requests, "limits": gpu_limits}, scheduling),
            }
        )
    head_resources = {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": _AUTOSCALER_OPTIONS,
        # The dashboard stays inside the cluster: no ingress, a ClusterIP service only.
        "headGroupSpec": {
            "serviceType": "ClusterIP",
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
            "template": _pod("ray-head", head_resources),
        },
        "workerGroupSpecs": worker_groups,
    }


def ray_cluster_config(specs: list[PipelineSpec]) -> RayClusterConfig:
    from dagster_ray.kuberay import RayClusterConfig, RayClusterSpec
    from dagster_ray.kuberay.configs import AuthOptions

    spec = ray_cluster_spec(specs)
    return RayClusterConfig(
        metadata={"namespace": NAMESPACE},
        spec=RayClusterSpec(
            ray_version=spec["rayVersion"],
            enable_in_tree_autoscaling=spec["enableInTreeAutoscaling"],
            autoscaler_options=spec["autoscalerOptions"],
            head_group_spec=spec["headGroupSpec"],
            worker_group_specs=spec["workerGroupSpecs"],
            auth_options=AuthOptions(mode="token", secret_name=AUTH_SECRET),
        ),
    )


class KubeRayRunCluster(KubeRayCluster):
    """A per-run KubeRay cluster for the run's Ray tasks, connected without dagster-ray's Ray Data probe."""

    def connect(self, context: AnyDagsterContext) -> BaseContext:  # pyright: ignore[reportIncompatibleVariableOverride] (the base method is wrapped by tenacity)
        return connect_without_ray_data(self)


def kuberay_cluster(specs: list[PipelineSpec]) -> KubeRayRunCluster:
    """A RayCluster per run (steps of a run share it), deleted after the run; the cleanup sensor reaps leftovers."""
    from dagster_ray.kuberay import ClusterSharing
    from dagster_ray.kuberay.configs import MatchDagsterLabels

    # run_id=True: steps of one run share its cluster; another run (maybe another image) never joins it.
    sharing = ClusterSharing(enabled=True, match_dagster_labels=MatchDagsterLabels(run_id=True))
    return KubeRayRunCluster(ray_cluster=ray_cluster_config(specs), cluster_sharing=sharing)
