"""The one place that reads the environment: where the platform runs, its root, its state and its specs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from kernel.paths import PROJECT_ROOT, STATE_DIR_NAME, StatePaths

Environment = Literal["local", "prod"]


@dataclass(frozen=True)
class Settings:
    """Where the platform runs: `PLATFORM_ENV` (local|prod), its project root and its state folder.

    `quarantine_uri` (`PLATFORM_QUARANTINE_URI`, a path or pyarrow-filesystem URI) is where the landing sensor
    moves malformed files, under `<uri>/<pipeline>/`; unset, they go to `_quarantine/<pipeline>/` beside the
    landing zone's files, on its own filesystem. Never the state folder: in production that is a pod's emptyDir.
    """

    env: Environment
    root: Path
    home: Path
    specs_dir: Path
    mlflow_ui_url: str
    quarantine_uri: str | None = None

    @classmethod
    def from_environment(cls) -> Settings:
        env = os.environ.get("PLATFORM_ENV", "local")
        if env not in ("local", "prod"):
            raise ValueError(f"PLATFORM_ENV must be 'local' or 'prod', got {env!r}")
        root = Path(os.environ.get("PLATFORM_ROOT", PROJECT_ROOT)).resolve()
        home = Path(os.environ.get("PLATFORM_HOME", root / STATE_DIR_NAME)).resolve()
        specs = Path(os.environ.get("PLATFORM_SPECS_DIR", root / "pipelines")).resolve()
        ui = os.environ.get("PLATFORM_MLFLOW_UI_URL", "http://127.0.0.1:5000")
        quarantine = os.environ.get("PLATFORM_QUARANTINE_URI") or None
        return cls(
            env=cast(Environment, env),
            root=root,
            home=home,
            specs_dir=specs,
            mlflow_ui_url=ui,
            quarantine_uri=quarantine,
        )

    @property
    def state(self) -> StatePaths:
        return StatePaths(self.home)
