"""`<p>/predictions`: batch inference with the champion, per day, as Ray tasks."""

from typing import Any

import dagster as dg
import pandas as pd
from dagster_ray import RayResource

from platform_assets import automation
from platform_assets.metadata import frame_metadata
from platform_assets.ml import training
from platform_assets.pipeline import Pipeline, run_days
from resources.compute import ray_map
from resources.tracking import MlflowTracking


def build(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @dg.asset(
        key=pipeline.key("predictions"),
        description=f"Hourly {spec.name} forecasts from the champion; each row names its model version and run.",
        group_name=pipeline.name,
        owners=pipeline.owners,
        tags=pipeline.tags,
        kinds={"ray", "pandas", "parquet"},
        partitions_def=pipeline.partitions_def,
        backfill_policy=pipeline.backfill_policy,
        ins={
            "features": dg.AssetIn(key=pipeline.key("features")),
            "champion": dg.AssetIn(key=pipeline.key("champion")),
        },
        freshness_policy=pipeline.freshness(spec.freshness.predictions),
        automation_condition=automation.fresh_latest_partition(),
        op_tags=pipeline.op_tags(spec.compute.default),
    )
    def predictions(
        context: dg.AssetExecutionContext,
        ray_cluster: RayResource,
        mlflow: MlflowTracking,
        features: dict[str, pd.DataFrame],
        champion: dict[str, Any],
    ) -> dg.Output[dict[str, pd.DataFrame]]:
        """Hourly forecasts from the champion model, with its version and MLflow run on every row."""
        model = mlflow.load_model(champion["model_uri"])
        lineage = {
            "model_name": champion["model_name"],
            "model_version": str(champion["version"]),
            "mlflow_run_id": champion["mlflow_run_id"],
        }
        days = run_days(context)
        calls = [(model, features[str(day)], spec, lineage) for day in days]
        frames = ray_map(training.predict_day, calls, num_cpus=spec.compute.ray_cpus_per_task)
        by_day = {str(day): frame for day, frame in zip(days, frames, strict=True)}
        metadata = frame_metadata(pd.concat(by_day.values(), ignore_index=True))
        metadata |= {
            "model_version": lineage["model_version"],
            "mlflow_run_id": lineage["mlflow_run_id"],
            "ray_tasks": len(frames),
        }
        return dg.Output(by_day, metadata=metadata)

    return predictions
