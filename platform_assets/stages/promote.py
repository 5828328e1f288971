"""`<p>_promote`: a job a user launches to promote one named model version by hand, audited like a rollback. A
version that failed its gates (or was rolled back, or whose lineage does not check out) needs `override: true`."""

import dagster as dg
from pydantic import Field

from kernel.names import PROMOTION_POOL
from kernel.pipeline import Pipeline
from ml.promotion import ManualRequest, decide
from platform_assets.stages.champion import carry_out, decision_metadata, named_candidate, now
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking


class PromoteConfig(dg.Config):
    """What a promotion by hand records: which version, who asked for it, why, and whether the gates are overridden."""

    version: str = Field(description="The registered model version to promote, e.g. '7'.")
    reason: str = Field(description="Why this version is promoted by hand; recorded with the promotion.")
    requested_by: str = Field(description="Who asks for the promotion.")
    override: bool = Field(
        default=False,
        description="Promote even a version that failed its gates, was rolled back or whose lineage does not check "
        "out; recorded on the version and the champion's materialisation.",
    )


def build_promote(pipeline: Pipeline) -> dg.JobDefinition:
    champion_key = pipeline.key("champion")

    @dg.op(name=f"{pipeline.name}_promote_champion", tags=pipeline.tags, pool=PROMOTION_POOL)
    def promote_champion(
        context: dg.OpExecutionContext,
        config: PromoteConfig,
        mlflow: MlflowTracking,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> None:
        """Moves the champion alias to the named version if the decision allows it, and records who, why, from, to."""
        evidence = named_candidate(context.instance, pipeline, io_manager, mlflow, config.version)
        request = ManualRequest(config.version, config.requested_by, config.reason, config.override)
        decision = decide(evidence, request)
        at = now()
        audit = {
            "promoted_by": config.requested_by,
            "promotion_reason": config.reason,
            "promoted_at": at,
            "promotion_override": str(config.override).lower(),
            "promotion_run_id": context.run.run_id,
        }
        serving = carry_out(pipeline, mlflow, decision, audit)
        io_manager.write(champion_key, None, serving)
        context.log_event(
            dg.AssetMaterialization(
                asset_key=champion_key,
                description=f"promotion of v{config.version} by hand by {config.requested_by}: {config.reason}",
                metadata={
                    **decision_metadata(decision, serving),
                    "action": "manual_promotion",
                    "requested_by": config.requested_by,
                    "reason": config.reason,
                    "override": config.override,
                    "from_version": evidence.aliases.champion or "none",
                    "to_version": serving.version,
                },
            )
        )

    @dg.job(name=f"{pipeline.name}_promote", tags=pipeline.tags)
    def promote() -> None:
        """Promotes a named model version by hand (override: true for one that failed its gates); audited."""
        promote_champion()

    return promote
