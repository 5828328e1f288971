"""Retire sensor: a tombstone in a pipeline's ingest log (the `<p>_retire` job) requests raw and features for the days
the retired entries covered, once per tombstone (the cursor is the newest tombstone handled)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import dagster as dg

from kernel.names import RANGE_END, RANGE_START, RETIRED_TAG
from kernel.pipeline import Pipeline
from resources.ingest_log import IngestLog
from resources.storage import PartitionedParquetIOManager

if TYPE_CHECKING:
    pass


def build(pipeline: Pipeline, store: PartitionedParquetIOManager) -> dg.SensorDefinition:
    targets = [pipeline.key("raw"), pipeline.key("features")]

    @dg.sensor(
        name=f"{pipeline.name}_retire_sensor",
        description=f"Sources retired from {pipeline.name}'s ingest log rebuild raw and features for their days.",
        asset_selection=dg.AssetSelection.assets(*targets),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def retire_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        """Requests raw and features for the days of newly retired ingest log entries."""
        from ml import ingest_log as log

        ingest_log = IngestLog.of(store, pipeline.name)
        handled = context.cursor or ""
        new = [name for name in ingest_log.names() if name.kind == "retire" and name.id > handled]
        if not new:
            return dg.SensorResult(run_requests=[], cursor=context.cursor)
        keys = set(pipeline.partitions_def.get_partition_keys())
        days = [
            day
            for name in new
            for day in log.partition_days(ingest_log.read_entry(name).days, pipeline.shift_days)
            if str(day) in keys
        ]
        cursor = new[-1].id
        if not days:
            context.log.info(f"{len(new)} tombstone(s) retired no day inside the partitions; nothing to run")
            return dg.SensorResult(run_requests=[], cursor=cursor)
        request = dg.RunRequest(
            run_key=f"retire:{cursor}",
            asset_selection=targets,
            tags={
                RANGE_START: str(min(days)),
                RANGE_END: str(max(days)),
                RETIRED_TAG: json.dumps([name.id for name in new]),
            },
        )
        return dg.SensorResult(run_requests=[request], cursor=cursor)

    return retire_sensor
