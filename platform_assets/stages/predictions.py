"""`<p>/predictions`: batch inference with the champion, per day, as Ray tasks."""

from typing import TYPE_CHECKING

import dagster as dg
from dagster_ray import RayResource

from kernel import automation
from kernel.frames import Frame
from kernel.metadata import frame_metadata, svg_markdown
from kernel.pipeline import Pipeline, run_days
from kernel.records import Rejected
from resources.compute import ray_map
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking

from .serving import champion_model

if TYPE_CHECKING:
    import pandas as pd


def newest_day_picture(built: "dict[str, pd.DataFrame]") -> dict[str, dg.MetadataValue]:
    """Forecast vs actual of the newest day the run predicted, small enough to be drawn in place on the asset's page."""
    from ml import plots

    if not built:
        return {}
    newest = max(built)
    svg = plots.forecast_vs_actual_svg(built[newest])
    return {"forecast_vs_actual": svg_markdown(svg, f"forecast vs actual, {newest}", f"{newest}, hourly")}


def build(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @pipeline.asset(
        "predictions",
        description=f"Hourly {spec.name} forecasts from the champion; each row names its model version and run.",
        kinds={"ray", "pandas", "parquet"},
        compute=spec.compute.default,
        ins={"features": pipeline.day_input("features")},
        deps=[pipeline.key("champion")],
        automation_condition=automation.fresh_latest_partition(ignore=pipeline.key("champion")),
    )
    def predictions(
        context: dg.AssetExecutionContext,
        ray_cluster: RayResource,
        mlflow: MlflowTracking,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
        features: dict[str, Frame | Rejected],
    ) -> dg.Output[dict[str, Frame | Rejected]]:
        """Hourly forecasts from the model the registry's champion alias points at now, its version on every row."""
        import pandas as pd

        from ml import training

        served = champion_model(pipeline, io_manager, mlflow)
        if served is None:
            raise dg.Failure(f"{pipeline.name} has no champion in the MLflow registry yet: train and promote a model")
        serving, _, model = served
        days = run_days(context)
        rejected = {
            str(day): Rejected(day=str(day), reason=f"not predicted: features rejected ({value.reason})")
            for day in days
            if isinstance(value := features[str(day)], Rejected)
        }
        calls = [(model, features[str(d)], spec, serving.lineage) for d in days if str(d) not in rejected]
        frames = ray_map(
            training.predict_day,
            calls,
            num_cpus=spec.compute.ray_cpus_per_task,
            timeout=spec.compute.ray_task_timeout_seconds,
            progress=context.log.info,
        )
        built = {
            str(day): frame
            for (_, _, _, _), day, frame in zip(calls, [d for d in days if str(d) not in rejected], frames, strict=True)
        }
        metadata = frame_metadata(pd.concat(built.values(), ignore_index=True)) if built else {}
        metadata |= newest_day_picture(built)
        metadata |= {
            "model_version": serving.version,
            "mlflow_run_id": serving.mlflow_run_id,
            "days_rejected": len(rejected),
            "rejected_days": dg.MetadataValue.json({d: r.reason for d, r in rejected.items()}),
            "ray_tasks": len(frames),
        }
        return dg.Output(
            {str(d): built[str(d)] if str(d) in built else rejected[str(d)] for d in days}, metadata=metadata
        )

    return predictions
