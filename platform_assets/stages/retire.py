"""`<p>_retire`: a job a user launches to take a landed source out of raw, with who and why. Removing a file from the
landing zone changes nothing stored; retiring it is this explicit action. It appends a tombstone to the ingest log
(what it retired: entries, bytes, days) and the pipeline's retire sensor then re-materialises those raw days."""

import dagster as dg
from pydantic import Field

from kernel.pipeline import Pipeline
from resources.ingest_log import IngestLog
from resources.storage import PartitionedParquetIOManager


class RetireConfig(dg.Config):
    """What a retirement records: which source, why, and who asked."""

    source: str = Field(description="The landed source path to retire, as raw's `source_files` metadata names it.")
    reason: str = Field(description="Why its rows leave raw; recorded in the ingest log's tombstone.")
    requested_by: str = Field(description="Who asks for it.")


def build_retire(pipeline: Pipeline) -> dg.JobDefinition:
    raw_key = pipeline.key("raw")

    @dg.op(name=f"{pipeline.name}_retire_source", tags=pipeline.tags)
    def retire_source(
        context: dg.OpExecutionContext,
        config: RetireConfig,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> None:
        """Retires a source's live ingest log entry with a tombstone saying who and why; its raw days rebuild next."""
        from ml import ingest_log as log

        try:
            tombstone = IngestLog.of(io_manager, pipeline.name).retire(
                config.source, config.reason, config.requested_by
            )
        except log.IngestLogError as exc:
            raise dg.Failure(str(exc)) from exc
        context.log_event(
            dg.AssetObservation(
                asset_key=raw_key,
                description=f"retired {config.source} by {config.requested_by}: {config.reason}",
                metadata={
                    "action": "retire",
                    "source": config.source,
                    "reason": config.reason,
                    "requested_by": config.requested_by,
                    "tombstone": tombstone.name.id,
                    "retired_entries": dg.MetadataValue.json(tombstone.retired),
                    "days": dg.MetadataValue.json(tombstone.days),
                },
            )
        )

    @dg.job(name=f"{pipeline.name}_retire", tags=pipeline.tags)
    def retire() -> None:
        """Takes a landed source out of raw for good, recording who and why; its days are rebuilt without it."""
        retire_source()

    return retire
