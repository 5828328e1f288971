"""Production Ray on Kubernetes: dagster-ray's KubeRayCluster, sized from the pipeline specs' compute hints."""

from __future__ import annotations

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
MAX_CPU_WORKERS = 4
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


def _pod(name: str, resources: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    container = {
        "name": name,
        "imagePullPolicy": "IfNotPresent",
        "resources": resources,
        "securityContext": _NON_ROOT_CONTAINER,
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


def ray_cluster_spec(specs: list[PipelineSpec]) -> dict[str, Any]:
    """The RayCluster `spec` in KubeRay's camelCase: head, autoscaled CPU workers, a GPU group if asked."""
    shape = largest_request(specs)
    requests = {"cpu": shape.cpu, "memory": shape.memory}
    worker_groups: list[dict[str, Any]] = [
        {
            "groupName": "cpu",
            "replicas": 0,
            "minReplicas": 0,
            "maxReplicas": MAX_CPU_WORKERS,
            "rayStartParams": {},
            "template": _pod("ray-worker", {"requests": requests, "limits": dict(requests)}),
        }
    ]
    if shape.gpu:
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
