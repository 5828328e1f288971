"""`<p>/features`: model inputs per day, built from the raw look-back window as Ray tasks."""

from datetime import date

import dagster as dg
import pandas as pd
from dagster_ray import RayResource

from kernel import automation
from kernel.days import window_ending
from kernel.metadata import frame_metadata
from kernel.pipeline import Pipeline, run_days
from ml import features as feature_fns
from resources.compute import ray_map


def window_for(raw: dict[str, pd.DataFrame], day: date, lookback_days: int) -> pd.DataFrame:
    """Raw rows of `day` and the days before it that were loaded."""
    days = [str(d) for d in window_ending(day, lookback_days + 1)]
    return pd.concat([raw[d] for d in days if d in raw], ignore_index=True)


def build(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @pipeline.asset(
        "features",
        description=f"Hourly {spec.name} model inputs: calendar parts, target lags and rolling stats.",
        kinds={"ray", "pandas", "parquet"},
        compute=spec.compute.default,
        ins={"raw": pipeline.window_input("raw", pipeline.lookback_days + 1)},
        automation_condition=automation.fresh_latest_partition(),
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
