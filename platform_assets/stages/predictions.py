"""`<p>/predictions`: batch inference with the champion, per day, by Ray tasks that read and write the store."""

from collections import Counter
from typing import TYPE_CHECKING

import dagster as dg
from dagster_ray import RayResource

from kernel import automation
from kernel.frames import FrameShape
from kernel.metadata import listed_days, per_day, shape_metadata, svg_markdown
from kernel.pipeline import Pipeline, run_days
from kernel.records import Rejected
from resources import day_tasks
from resources.compute import day_batches, ray_map
from resources.storage import PartitionedParquetIOManager
from resources.store import StoredDay, Written
from resources.tracking import MlflowTracking

from .serving import champion_model

if TYPE_CHECKING:
    import pandas as pd


def newest_day_picture(day: str, frame: "pd.DataFrame") -> dict[str, dg.MetadataValue]:
    """Forecast vs actual of the newest day the run predicted, small enough to be drawn in place on the asset's page."""
    from ml import plots

    svg = plots.forecast_vs_actual_svg(frame)
    return {"forecast_vs_actual": svg_markdown(svg, f"forecast vs actual, {day}", f"{day}, hourly")}


def build(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @pipeline.asset(
        "predictions",
        description=f"Hourly {spec.name} forecasts from the champion; each row names its model version and run.",
        kinds={"ray", "pandas", "parquet"},
        compute=spec.compute.default,
        ins={"features": pipeline.day_input("features", lazy=True)},
        deps=[pipeline.key("champion")],
        automation_condition=automation.fresh_latest_partition(ignore=pipeline.key("champion")),
    )
    def predictions(
        context: dg.AssetExecutionContext,
        ray_cluster: RayResource,
        mlflow: MlflowTracking,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
        features: dict[str, StoredDay | Rejected],
    ) -> dg.Output[dict[str, Written | Rejected]]:
        """Hourly forecasts from the model the registry's champion alias points at now, its version on every row."""
        served = champion_model(pipeline, io_manager, mlflow)
        if served is None:
            raise dg.Failure(f"{pipeline.name} has no champion in the MLflow registry yet: train and promote a model")
        serving, _, model = served
        output, lineage = tuple(pipeline.key("predictions").path), serving.lineage
        calls = [
            (day_tasks.DayBatch(io_manager.store, output, batch, {d: features[d] for d in batch}), model, spec, lineage)
            for batch in day_batches([str(day) for day in run_days(context)], spec.compute.ray_days_per_task)
        ]
        done = ray_map(
            day_tasks.predict_days,
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
        per_day(context, "rejected_this_day", reasons)
        shapes = [r.shape for r in built.values() if r.shape is not None]
        metadata = shape_metadata(FrameShape.combined(shapes)) if shapes else {}
        if built:
            metadata |= newest_day_picture(max(built), io_manager.read(pipeline.key("predictions"), max(built)))
        metadata |= {
            "model_version": serving.version,
            "mlflow_run_id": serving.mlflow_run_id,
            "days_rejected": len(rejected),
            "rejected_days": listed_days(reasons),
            "ray_tasks": len(done),
            "ray_nodes": dg.MetadataValue.json(dict(Counter(batch.node_id for batch in done))),
        }
        return dg.Output({day: r.value for day, r in results.items()}, metadata=metadata)

    return predictions
