"""`<p>/predictions`: batch inference with the champion, per day, as Ray tasks."""

from typing import Any

import dagster as dg
import pandas as pd
from dagster_ray import RayResource

from kernel import automation
from kernel.metadata import frame_metadata
from kernel.pipeline import Pipeline, run_days
from kernel.records import ChampionRecord
from ml import training
from resources.compute import ray_map
from resources.tracking import MlflowTracking


def build(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @pipeline.asset(
        "predictions",
        description=f"Hourly {spec.name} forecasts from the champion; each row names its model version and run.",
        kinds={"ray", "pandas", "parquet"},
        compute=spec.compute.default,
        ins={
            "features": dg.AssetIn(key=pipeline.key("features")),
            "champion": dg.AssetIn(key=pipeline.key("champion")),
        },
        automation_condition=automation.fresh_latest_partition(),
    )
    def predictions(
        context: dg.AssetExecutionContext,
        ray_cluster: RayResource,
        mlflow: MlflowTracking,
        features: dict[str, pd.DataFrame],
        champion: dict[str, Any],
    ) -> dg.Output[dict[str, pd.DataFrame]]:
        """Hourly forecasts from the champion model, with its version and MLflow run on every row."""
        serving = ChampionRecord.model_validate(champion)
        model = mlflow.load_model(serving.model_uri)
        lineage = serving.lineage
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
