"""MLflow tracking and registry, as a thin resource (MLflow is imported only when a step uses it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous_champion"
CHALLENGER = "challenger"


class MlflowTracking(dg.ConfigurableResource):
    """Logs runs and models to MLflow and moves registry aliases (champion, previous_champion)."""

    tracking_uri: str = Field(
        description="MLflow tracking URI: `sqlite:///...` locally, `http(s)://...` in production."
    )
    artifact_root: str | None = Field(
        default=None, description="Artifact location for new experiments; None lets the server decide."
    )
    ui_url: str | None = Field(default=None, description="Base URL of the MLflow UI, for links in Dagster metadata.")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)

    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created on first use (under `artifact_root` when set)."""
        client = self.client()
        existing = client.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        location = f"{self.artifact_root.rstrip('/')}/{name}" if self.artifact_root else None
        return client.create_experiment(name, artifact_location=location)

    def load_model(self, model_uri: str) -> Any:
        """A registered scikit-learn model, e.g. `models:/name/3`."""
        import mlflow.sklearn

        return mlflow.sklearn.load_model(model_uri)

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        if self.ui_url is None:
            return None
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def version_by_alias(self, model_name: str, alias: str) -> ModelVersion | None:
        """The version an alias points at, or None if the model or alias does not exist yet."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(model_name, alias)
        except MlflowException as exc:
            if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                return None
            raise

    def alias_version(self, model_name: str, alias: str) -> str | None:
        """The version number an alias points at, as a string (stores disagree on int vs str)."""
        version = self.version_by_alias(model_name, alias)
        return None if version is None else str(version.version)

    def promote(self, model_name: str, version: str) -> dict[str, Any]:
        """Point `champion` at `version`; the replaced champion becomes `previous_champion` for rollback."""
        client = self.client()
        current = self.alias_version(model_name, CHAMPION)
        if current == str(version):
            return {
                "champion": current,
                "previous_champion": self.alias_version(model_name, PREVIOUS_CHAMPION),
                "changed": False,
            }
        if current is not None:
            client.set_registered_model_alias(model_name, PREVIOUS_CHAMPION, current)
        client.set_registered_model_alias(model_name, CHAMPION, str(version))
        return {"champion": str(version), "previous_champion": current, "changed": True}

    def rollback(self, model_name: str) -> dict[str, Any]:
        """Swap `champion` and `previous_champion`: one action undoes the last promotion."""
        client = self.client()
        previous = self.alias_version(model_name, PREVIOUS_CHAMPION)
        current = self.alias_version(model_name, CHAMPION)
        if previous is None or current is None:
            raise dg.Failure(f"{model_name}: nothing to roll back to (no {PREVIOUS_CHAMPION!r} alias)")
        client.set_registered_model_alias(model_name, CHAMPION, previous)
        client.set_registered_model_alias(model_name, PREVIOUS_CHAMPION, current)
        return {"champion": previous, "previous_champion": current, "changed": True}
