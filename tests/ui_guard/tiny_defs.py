"""The smallest code location with something to lose: one asset whose materialisations a wipe would remove, and one
job that records who asked for it, like the rollback and manual promotion jobs."""

import dagster as dg


@dg.asset
def precious() -> int:
    """One materialisation the cross-site requests try to wipe."""
    return 1


class HandoverConfig(dg.Config):
    """Who asks for the handover, as the rollback and promotion jobs ask."""

    requested_by: str


@dg.op
def handover(context: dg.OpExecutionContext, config: HandoverConfig) -> None:
    """Log who asked."""
    context.log.info(f"handover by {config.requested_by}")


@dg.job
def handover_job() -> None:
    """A job launched with a requester in its run config."""
    handover()


defs = dg.Definitions(assets=[precious], jobs=[handover_job])
