"""The RayCluster production renders: dagster-ray's KubeRayCluster built by resources/kuberay.py from the
pipeline specs, turned into the manifest dagster-ray would send to the API server.

`render(resource)` calls `RayClusterConfig.to_k8s` the way `KubeRayCluster.create` does (image from the
run's `dagster/image` tag, i.e. the code location's image), then sets `metadata.name` (dagster-ray generates
`dg-<deployment>-<run id>-...`) and `metadata.namespace` (dagster-ray passes it in the API path), so the
result can be validated as a complete object.

`spec_variant(directory, training=...)` writes a copy of pipelines/bike_demand.yaml with other compute hints
(e.g. a GPU) and returns its path, for `load_spec` or as a specs folder.
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

SPEC_FILE = schemas.REPO_ROOT / "pipelines" / "bike_demand.yaml"
IMAGE = "ml-asset-platform:abc1234"
CLUSTER_NAME = "dg-dev-01234567-0a1b2c3d"
GPU_SELECTOR = {"cloud.google.com/gke-accelerator": "nvidia-l4"}


def load_spec(path: Path = SPEC_FILE) -> PipelineSpec:
    from kernel.spec import load_spec as load

    return load(path)


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


def spec_variant(directory: Path, *, training: Mapping[str, Any] | None = None, name: str | None = None) -> Path:
    """A copy of bike_demand.yaml with `compute.training` updated (and optionally renamed), in `directory`."""
    document = yaml.safe_load(SPEC_FILE.read_text(encoding="utf-8"))
    if training:
        document["compute"]["training"] = {**document["compute"]["training"], **training}
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
