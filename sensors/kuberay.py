"""Production only: dagster-ray's cleanup of expired KubeRay clusters, RUNNING by default."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster_ray.kuberay import cleanup_expired_kuberay_clusters, delete_kuberay_clusters
from dagster_ray.kuberay.client.raycluster.client import RayClusterClient


@dg.sensor(
    name="kuberay_cleanup_sensor",
    job=delete_kuberay_clusters,
    minimum_interval_seconds=5 * 60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Deletes RayClusters this code location created once they expire (namespaces: DAGSTER_RAY_NAMESPACES).",
)
def kuberay_cleanup_sensor(
    context: dg.SensorEvaluationContext, raycluster_client: dg.ResourceParam[RayClusterClient]
) -> Iterator[Any]:
    """dagster-ray's own sensor (stopped by default upstream), switched on: clusters never outlive their runs."""
    yield from cleanup_expired_kuberay_clusters(context, raycluster_client=raycluster_client) or []
