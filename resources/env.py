"""The one place that reads the environment: which resources, where state lives, which specs load."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dagster as dg

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


def build_resources(settings: Settings) -> dict[str, Any]:
    """Resources for the selected environment; production endpoints and secrets come from EnvVars."""
    if settings.env == "prod":
        return {
            "ray_cluster": RayCluster(address=dg.EnvVar("RAY_ADDRESS")),
            "io_manager": PartitionedParquetIOManager(base_uri=dg.EnvVar("PLATFORM_STORAGE_URI")),
            "mlflow": MlflowTracking(
                tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"), ui_url=dg.EnvVar("PLATFORM_MLFLOW_UI_URL")
            ),
        }
    return {
        "ray_cluster": RayCluster(address="auto"),
        "io_manager": PartitionedParquetIOManager(base_uri=str(settings.home / "assets")),
        "mlflow": MlflowTracking(
            tracking_uri=settings.local_tracking_uri,
            artifact_root=(settings.mlflow_dir / "artifacts").as_uri(),
            ui_url=settings.mlflow_ui_url,
        ),
    }
