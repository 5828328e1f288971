"""Where the project and its local state live: defined once, imported by the platform and its tools."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STATE_DIR_NAME = ".platform"
DEFAULT_HOME = PROJECT_ROOT / STATE_DIR_NAME


@dataclass(frozen=True)
class StatePaths:
    """The layout of one local state folder (`.platform/` by default; `make clean` removes it)."""

    home: Path

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"

    @property
    def assets(self) -> Path:
        return self.home / "assets"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def tracking_uri(self) -> str:
        """The local MLflow store (SQLite) that runs log to and the dev MLflow server serves."""
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def rebase(self) -> Path:
        return self.home / "rebase"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def dev_pids(self) -> Path:
        return self.home / "dev-pids.json"


def write_text_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader sees the old file or the new one, never a torn one.

    The text goes to a temp file beside `path`, is flushed to disk, and `os.replace` swaps it in. If writing fails
    (disk full, killed), `path` is left as it was and the temp file is removed (a SIGKILL can leave a `.*.tmp`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise
