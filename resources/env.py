"""The one place that reads the environment: which resources, where state lives, which specs load."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dagster as dg

from platform_assets.spec import PipelineSpec
from resources.compute import RayCluster
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking

Environment = Literal["local", "prod"]
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    """Where the platform runs: `PLATFORM_ENV` (local|prod), its project root and its state folder."""

    env: Environment
    root: Path
    home: Path
    specs_dir: Path
    mlflow_ui_url: str

    @classmethod
    def from_environment(cls) -> Settings:
        env = os.environ.get("PLATFORM_ENV", "local")
        if env not in ("local", "prod"):
            raise ValueError(f"PLATFORM_ENV must be 'local' or 'prod', got {env!r}")
        root = Path(os.environ.get("PLATFORM_ROOT", PROJECT_ROOT)).resolve()
        home = Path(os.environ.get("PLATFORM_HOME", root / ".platform")).resolve()
        specs = Path(os.environ.get("PLATFORM_SPECS_DIR", root / "pipelines")).resolve()
        ui = os.environ.get("PLATFORM_MLFLOW_UI_URL", "http://127.0.0.1:5000")
        return cls(env=env, root=root, home=home, specs_dir=specs, mlflow_ui_url=ui)  # type: ignore[arg-type]

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def local_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"


@dataclass
class Wiring:
    """What the environment decides: resources, the executor and environment-only sensors."""

    resources: dict[str, Any]
    executor: dg.ExecutorDefinition | None = None
    sensors: list[dg.SensorDefinition] = field(default_factory=list)


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
            executor=k8s_job_executor,
            sensors=[kuberay_cleanup_sensor],
        )
    return Wiring(
        resources={
            "ray_cluster": RayCluster(address="auto"),
            "io_manager": PartitionedParquetIOManager(base_uri=str(settings.home / "assets")),
            "mlflow": MlflowTracking(
                tracking_uri=settings.local_tracking_uri,
                artifact_root=(settings.mlflow_dir / "artifacts").as_uri(),
                ui_url=settings.mlflow_ui_url,
            ),
        }
    )
