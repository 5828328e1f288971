"""What each environment runs: resources, the executor and environment-only sensors (local vs production)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from kernel.pipeline import RAY_STEP_SERVICE_ACCOUNT
from kernel.settings import Settings
from kernel.spec import PipelineSpec
from resources.compute import RayCluster
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking

# The ServiceAccount of every step pod that does not drive Ray: no Kubernetes rights, no token mounted
# (deploy/k8s/rbac-kuberay.yaml). Ray steps (kernel.pipeline.RAY_STEP_SERVICE_ACCOUNT, from their op tags) and
# dagster-ray's cluster-deleting op (below) use the one bound to the KubeRay Role.
STEP_SERVICE_ACCOUNT = "dagster-step"
# k8s_job_executor's config: step pods' accounts (an op tag's wins over step_k8s_config, per_step_k8s_config over both).
STEP_K8S_CONFIG: dict[str, Any] = {
    "step_k8s_config": {"pod_spec_config": {"service_account_name": STEP_SERVICE_ACCOUNT}},
    "per_step_k8s_config": {
        "delete_kuberay_clusters_op": {"pod_spec_config": {"service_account_name": RAY_STEP_SERVICE_ACCOUNT}}
    },
}


@dataclass
class Wiring:
    """What the environment decides: resources, the executor and environment-only sensors."""

    resources: dict[str, Any]
    executor: dg.ExecutorDefinition | None = None
    sensors: list[dg.SensorDefinition] = field(default_factory=list)

    @property
    def store(self) -> PartitionedParquetIOManager:
        """The asset store resource (the sensors read each pipeline's ingest log in it)."""
        store = self.resources["io_manager"]
        assert isinstance(store, PartitionedParquetIOManager)
        return store


def build_wiring(settings: Settings, specs: list[PipelineSpec]) -> Wiring:
    """Local: the dev command's Ray head, a project-local store and MLflow. Production: KubeRay per run,
    one Kubernetes pod per step (so the specs' per-step requests apply), endpoints from EnvVars."""
    if settings.env == "prod":
        from dagster_k8s import k8s_job_executor
        from dagster_ray.kuberay import KubeRayClusterClientResource

        from resources.kuberay import kuberay_cluster
        from sensors.kuberay import kuberay_cleanup_sensor

        return Wiring(
            resources={
                "ray_cluster": kuberay_cluster(specs),
                "raycluster_client": KubeRayClusterClientResource(),
                "io_manager": PartitionedParquetIOManager(base_uri=dg.EnvVar("PLATFORM_STORAGE_URI")),
                "mlflow": MlflowTracking(
                    tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"), ui_url=dg.EnvVar("PLATFORM_MLFLOW_UI_URL")
                ),
            },
            executor=k8s_job_executor.configured(STEP_K8S_CONFIG, name=k8s_job_executor.name),
            sensors=[kuberay_cleanup_sensor],
        )
    state = settings.state
    return Wiring(
        # One machine: a run's steps in its own process, one after another. A process per step (Dagster's default)
        # cost each step 1.1-1.8 s of spawn and imports and its own Ray connection, for parallelism two cores do not
        # have; pools (one writer per stage) are claimed per step all the same.
        executor=dg.in_process_executor,
        resources={
            "ray_cluster": RayCluster(address="auto"),
            "io_manager": PartitionedParquetIOManager(base_uri=str(state.assets)),
            "mlflow": MlflowTracking(
                tracking_uri=state.tracking_uri,
                artifact_root=state.mlflow_artifacts.as_uri(),
                ui_url=settings.mlflow_ui_url,
            ),
        },
    )
