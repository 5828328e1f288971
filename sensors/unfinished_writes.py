"""Writes cut short: the temp files a killed writer leaves in the asset store (any filesystem, s3:// in production)."""

from __future__ import annotations

import time

import dagster as dg

from resources.storage import PartitionedParquetIOManager

# How old a temp file must be to be a dead write's: a live write renames its temp file within seconds of opening it
# (one day's file, one ingest log entry), so an hour leaves every running writer alone.
UNFINISHED_AFTER_S = 3600
MAX_LISTED = 20


def build(store: PartitionedParquetIOManager) -> dg.SensorDefinition:
    @dg.sensor(
        name="unfinished_writes_sensor",
        description="Hourly: deletes the asset store's temp files of writes cut short (older than an hour).",
        minimum_interval_seconds=UNFINISHED_AFTER_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def unfinished_writes_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        """Deletes the asset store's temp files of writes cut short; the tick says which."""
        removed = store.store.remove_unfinished_writes(UNFINISHED_AFTER_S, time.time())
        if not removed:
            return dg.SkipReason("no unfinished write in the asset store")
        context.log.warning(f"removed {len(removed)} temp file(s) of writes cut short: {removed}")
        listed = removed[:MAX_LISTED]
        more = f" and {len(removed) - len(listed)} more" if len(removed) > len(listed) else ""
        return dg.SkipReason(f"removed {len(removed)} temp file(s) of writes cut short: {listed}{more}")

    return unfinished_writes_sensor
