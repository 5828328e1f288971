"""`<p>/features`: model inputs per day, built from the raw look-back window by Ray tasks that read, write and judge
the store themselves."""

from collections import Counter
from datetime import timedelta

import dagster as dg
from dagster_ray import RayResource

from kernel import automation
from kernel.frames import FrameShape
from kernel.metadata import listed_days, per_day, shape_metadata
from kernel.pipeline import Pipeline, run_days
from kernel.records import Rejected
from resources import day_tasks
from resources.compute import day_batches, ray_map
from resources.storage import PartitionedParquetIOManager
from resources.store import StoredDay, Written


def build(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec
    lookback = pipeline.lookback_days

    @pipeline.asset(
        "features",
        description=f"Hourly {spec.name} model inputs: calendar parts, target lags and rolling stats.",
        kinds={"ray", "pandas", "parquet"},
        compute=spec.compute.default,
        ins={"raw": pipeline.window_input("raw", lookback + 1, lazy=True)},
        automation_condition=automation.fresh_latest_partition(),
    )
    def features(
        context: dg.AssetExecutionContext,
        ray_cluster: RayResource,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
        raw: dict[str, StoredDay | Rejected],
    ) -> dg.Output[dict[str, Written | Rejected]]:
        """Hourly model inputs: calendar parts, target lags and rolling stats."""
        days = run_days(context)
        if missing := [str(day) for day in days if str(day) not in raw]:
            raise dg.Failure(f"{pipeline.key('raw').to_user_string()} is not materialised for {missing}")
        output, calls = tuple(pipeline.key("features").path), []
        reference = day_tasks.drift_reference(io_manager.store, output, days[0], spec)
        for batch in day_batches(days, spec.compute.ray_days_per_task):
            first = str(batch[0] - timedelta(days=lookback))
            needed = {day: ref for day, ref in raw.items() if first <= day <= str(batch[-1])}
            share = day_tasks.DayBatch(io_manager.store, output, [str(d) for d in batch], needed)
            calls.append((share, lookback, spec, reference))
        done = ray_map(
            day_tasks.build_feature_days,
            calls,
            num_cpus=spec.compute.ray_cpus_per_task,
            resources=spec.compute.ray_resources,
            spread=True,
            timeout=spec.compute.ray_task_timeout_seconds,
            progress=context.log.info,
        )
        results = {result.day: result for batch in done for result in batch.days}
        built = {day: r for day, r in results.items() if isinstance(r.value, Written)}
        rejected = {day: r.value for day, r in results.items() if isinstance(r.value, Rejected)}
        reasons = {day: r.reason for day, r in rejected.items()}
        left_out = {day: dict(r.left_out) for day, r in built.items() if r.left_out}
        per_day(context, "rejected_this_day", reasons)
        per_day(
            context,
            "series_left_out_this_day",
            {day: dg.MetadataValue.json(labels) for day, labels in left_out.items()},
        )
        shapes = [r.shape for r in built.values() if r.shape is not None]
        metadata = shape_metadata(FrameShape.combined(shapes)) if shapes else {}
        metadata |= {
            "days_built": len(built),
            "days_rejected": len(rejected),
            "rejected_days": listed_days(reasons),
            "series_days_left_out": sum(len(r.left_out) for r in built.values()),
            "series_left_out": listed_days(left_out),
            "rows_without_history": sum(r.dropped_rows for r in built.values()),
            "duplicate_hours_dropped": sum(r.duplicate_rows for r in built.values()),
            "rows_missing_target": sum(r.missing_target_rows for r in built.values()),
            "ray_tasks": len(done),
            "ray_worker_pids": dg.MetadataValue.json(sorted({batch.worker_pid for batch in done})),
            "ray_nodes": dg.MetadataValue.json(dict(Counter(batch.node_id for batch in done))),
            "ray_cluster": ray_cluster.name,
        }
        return dg.Output({str(day): results[str(day)].value for day in days}, metadata=metadata)

    return features
