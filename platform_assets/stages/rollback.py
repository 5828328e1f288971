"""`<p>_rollback`: a job a user launches from the UI to put the previous champion back, with who and why. The
rollback is a recorded decision (tags on the refused version) that every later promotion decision honours."""

import dagster as dg
from pydantic import Field

from kernel.names import PROMOTION_POOL
from kernel.pipeline import Pipeline
from ml.promotion import Evidence, RollbackRequest, decide
from platform_assets.stages.champion import carry_out, decision_metadata, now
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking


class RollbackConfig(dg.Config):
    """What a rollback records: who asked for it and why."""

    reason: str = Field(description="Why the champion is rolled back; recorded with the rollback.")
    requested_by: str = Field(description="Who asks for the rollback.")


def build_rollback(pipeline: Pipeline) -> dg.JobDefinition:
    champion_key = pipeline.key("champion")

    @dg.op(name=f"{pipeline.name}_rollback_champion", tags=pipeline.tags, pool=PROMOTION_POOL)
    def rollback_champion(
        context: dg.OpExecutionContext,
        config: RollbackConfig,
        mlflow: MlflowTracking,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> None:
        """Puts the previous champion back, refuses the rolled-back version from now on, records who, why, from, to."""
        evidence = Evidence(
            model_name=pipeline.name, aliases=mlflow.aliases(pipeline.name), rollbacks=mlflow.rollbacks(pipeline.name)
        )
        request = RollbackRequest(config.requested_by, config.reason, at=now(), run_id=context.run.run_id)
        decision = decide(evidence, request)
        serving = carry_out(pipeline, mlflow, decision)
        io_manager.write(champion_key, None, serving)
        refused = decision.record.version if decision.record else serving.previous_champion
        context.log_event(
            dg.AssetMaterialization(
                asset_key=champion_key,
                description=f"rollback by {config.requested_by}: {config.reason}",
                metadata={
                    **decision_metadata(decision, serving),
                    "action": "rollback",
                    "requested_by": config.requested_by,
                    "reason": config.reason,
                    "from_version": evidence.aliases.champion or "none",
                    "to_version": serving.version,
                    "refused_version": refused or "none",
                },
            )
        )

    @dg.job(name=f"{pipeline.name}_rollback", tags=pipeline.tags)
    def rollback() -> None:
        """Rolls the champion back to the previous one for good; the next predictions use it."""
        rollback_champion()

    return rollback
