"""`<p>_rollback`: a job a user launches from the UI to put the previous champion back, with who and why."""

import dagster as dg
from pydantic import Field

from kernel.pipeline import Pipeline
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking


class RollbackConfig(dg.Config):
    """What a rollback records: who asked for it and why."""

    reason: str = Field(description="Why the champion is rolled back; recorded with the rollback.")
    requested_by: str = Field(description="Who asks for the rollback.")


def build_rollback(pipeline: Pipeline) -> dg.JobDefinition:
    champion_key = pipeline.key("champion")

    @dg.op(name=f"{pipeline.name}_rollback_champion", tags=pipeline.tags)
    def rollback_champion(
        context: dg.OpExecutionContext,
        config: RollbackConfig,
        mlflow: MlflowTracking,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> None:
        """Swaps MLflow's champion and previous_champion aliases and records who, why, from and to."""
        before = mlflow.champion_record(pipeline.name)
        mlflow.rollback(pipeline.name)
        after = mlflow.champion_record(pipeline.name)
        if before is None or after is None:
            raise dg.Failure(f"{pipeline.name}: no champion to roll back")
        io_manager.write(champion_key, None, after)
        context.log_event(
            dg.AssetMaterialization(
                asset_key=champion_key,
                description=f"rollback by {config.requested_by}: {config.reason}",
                metadata={
                    "action": "rollback",
                    "requested_by": config.requested_by,
                    "reason": config.reason,
                    "from_version": before.version,
                    "to_version": after.version,
                    "model_version": after.version,
                    "champion_partition": after.partition,
                },
            )
        )

    @dg.job(name=f"{pipeline.name}_rollback", tags=pipeline.tags)
    def rollback() -> None:
        """Rolls the champion back to the previous one; the next predictions use it."""
        rollback_champion()

    return rollback
