"""The RayCluster production renders: dagster-ray's KubeRayCluster built by resources/kuberay.py from the
pipeline specs, turned into the manifest dagster-ray would send to the API server.

`render(resource)` calls `RayClusterConfig.to_k8s` the way `KubeRayCluster.create` does (image from the
run's `dagster/image` tag, i.e. the code location's image), then sets `metadata.name` (dagster-ray generates
`dg-<deployment>-<run id>-...`) and `metadata.namespace` (dagster-ray passes it in the API path), so the
result can be validated as a complete object.

`spec_variant(directory, training=..., compute=...)` writes a copy of pipelines/bike_demand.yaml with other compute
hints (e.g. a GPU, custom Ray resources) and returns its path, for `load_spec` or as a specs folder.

`node_types(manifest)` is what KubeRay's autoscaler (Ray's own code, the version the image runs) reads from the
rendered RayCluster: per group, the Ray resources one node offers and its replica bounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import schemas

if TYPE_CHECKING:
    from dagster_ray.kuberay import KubeRayCluster

    from kernel.spec import PipelineSpec

SPECS_DIR = schemas.REPO_ROOT / "pipelines"
SPEC_FILE = SPECS_DIR / "bike_demand.yaml"
IMAGE = "ml-asset-platform:abc1234"
CLUSTER_NAME = "dg-dev-01234567-0a1b2c3d"
GPU_SELECTOR = {"cloud.google.com/gke-accelerator": "nvidia-l4"}


def load_spec(path: Path = SPEC_FILE) -> PipelineSpec:
    from kernel.spec import load_spec as load

    return load(path)


def shipped_specs() -> list[PipelineSpec]:
    from kernel.spec import load_specs

    return load_specs(SPECS_DIR)


def production_cluster(specs: list[PipelineSpec] | None = None) -> KubeRayCluster:
    from resources.kuberay import kuberay_cluster

    return kuberay_cluster(specs if specs is not None else [load_spec()])


def render(resource: KubeRayCluster, *, image: str | None = IMAGE, name: str = CLUSTER_NAME) -> dict[str, Any]:
    """The RayCluster manifest dagster-ray creates for a run (without its run-specific labels)."""
    import dagster as dg

    manifest = resource.ray_cluster.to_k8s(dg.build_init_resource_context(), image=resource.image or image)
    manifest["metadata"]["name"] = name
    manifest["metadata"]["namespace"] = resource.namespace
    return manifest


def spec_variant(
    directory: Path,
    *,
    training: Mapping[str, Any] | None = None,
    compute: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> Path:
    """A copy of bike_demand.yaml with `compute.training` and other `compute` keys updated (and optionally renamed),
    in `directory`."""
    document = yaml.safe_load(SPEC_FILE.read_text(encoding="utf-8"))
    if training:
        document["compute"]["training"] = {**document["compute"]["training"], **training}
    document["compute"].update(compute or {})
    if name:
        document["name"] = name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{document['name']}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def worker_groups(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {group["groupName"]: group for group in manifest["spec"]["workerGroupSpecs"]}


def first_container(group: Mapping[str, Any]) -> dict[str, Any]:
    return group["template"]["spec"]["containers"][0]


def node_types(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Node type -> {resources, min_workers, max_workers}, as KubeRay's autoscaler derives them from the RayCluster."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    return _derive_autoscaling_config_from_ray_cr(dict(manifest))["available_node_types"]


def node_types_for(spec: PipelineSpec, types: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The node types a task of `spec` can be placed on (its CPUs and custom resources on one node), that scale
    to at least one replica."""
    demand = {"CPU": spec.compute.ray_cpus_per_task, **spec.compute.ray_resources}
    return sorted(
        name
        for name, node in types.items()
        if node["max_workers"] >= 1 and all(node["resources"].get(key, 0) >= amount for key, amount in demand.items())
    )
