"""`<p>/features`: model inputs per day, built from the raw look-back window as Ray tasks."""

from datetime import date, timedelta

import dagster as dg
import pandas as pd
from dagster_ray import RayResource

from platform_assets import automation
from platform_assets.metadata import frame_metadata
from platform_assets.ml import features as feature_fns
from platform_assets.pipeline import Pipeline, run_days
from resources.compute import ray_map
from resources.storage import ALLOW_MISSING_PARTITIONS


def window_for(raw: dict[str, pd.DataFrame], day: date, lookback_days: int) -> pd.DataFrame:
    """Raw rows of `day` and the days before it that were loaded."""
    days = [str(day - timedelta(days=k)) for k in range(lookback_days, -1, -1)]
    return pd.concat([raw[d] for d in days if d in raw], ignore_index=True)


def build(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @dg.asset(
        key=pipeline.key("features"),
        description=f"Hourly {spec.name} model inputs: calendar parts, target lags and rolling stats.",
        group_name=pipeline.name,
        owners=pipeline.owners,
        tags=pipeline.tags,
        kinds={"ray", "pandas", "parquet"},
        partitions_def=pipeline.partitions_def,
        backfill_policy=pipeline.backfill_policy,
        ins={
            "raw": dg.AssetIn(
                key=pipeline.key("raw"),
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-pipeline.lookback_days, end_offset=0, allow_nonexistent_upstream_partitions=True
                ),
                metadata={ALLOW_MISSING_PARTITIONS: True},
            )
        },
        freshness_policy=pipeline.freshness(spec.freshness.features),
        automation_condition=automation.fresh_latest_partition(),
        op_tags=pipeline.op_tags(spec.compute.default),
    )
    def features(
        context: dg.AssetExecutionContext, ray_cluster: RayResource, raw: dict[str, pd.DataFrame]
    ) -> dg.Output[dict[str, pd.DataFrame]]:
        """Hourly model inputs: calendar parts, target lags and rolling stats."""
        days = run_days(context)
        if missing := [str(day) for day in days if str(day) not in raw]:
            raise dg.Failure(f"{pipeline.key('raw').to_user_string()} is not materialised for {missing}")
        calls = [(window_for(raw, day, pipeline.lookback_days), day, spec) for day in days]
        results = ray_map(feature_fns.build_features, calls, num_cpus=spec.compute.ray_cpus_per_task)
        by_day = {str(day): result.frame for day, result in zip(days, results, strict=True)}
        metadata = frame_metadata(pd.concat(by_day.values(), ignore_index=True))
        metadata |= {
            "rows_without_history": sum(r.dropped_rows for r in results),
            "ray_tasks": len(results),
            "ray_worker_pids": dg.MetadataValue.json(sorted({r.worker_pid for r in results})),
            "ray_cluster": ray_cluster.name,
        }
        return dg.Output(by_day, metadata=metadata)

    return features
