"""`<p>/model` (a candidate per day: walk-forward) and `<p>/champion` (the promoted model)."""

from typing import Any

import dagster as dg
import pandas as pd
from dagster_ray import RayResource

from kernel import automation
from kernel.metadata import png_markdown
from kernel.names import CHAMPION, MODEL_GATES
from kernel.pipeline import Pipeline, run_days
from kernel.records import ChampionRecord, ModelRecord
from ml import evaluation as evaluation_fns
from ml import training
from resources.compute import ray_map
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking

PLOTS = {
    "forecast_vs_actual": "forecast vs actual",
    "residuals": "residuals",
    "feature_importance": "feature importance",
}


def model_metadata(newest: ModelRecord, images: dict[str, bytes], mlflow: MlflowTracking) -> dict[str, Any]:
    """What the UI shows for a model run: the newest partition's version, metrics, window and plots."""
    metadata: dict[str, Any] = {
        "model_version": newest.version,
        "mlflow_run_id": newest.mlflow_run_id,
        "mae": newest.metrics.mae,
        "baseline_mae": newest.baseline.mae,
        "smape": newest.metrics.smape,
        "family": newest.family,
        "training_window": newest.training_window,
        "missing_days_in_window": len(newest.missing_days),
    }
    metadata |= {name: png_markdown(images[f"{name}.png"], alt) for name, alt in PLOTS.items()}
    if url := mlflow.run_url(newest.experiment_id, newest.mlflow_run_id):
        metadata["mlflow_run"] = dg.MetadataValue.url(url)
    return metadata


def build_model(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @pipeline.asset(
        "model",
        description=f"Candidate {spec.name} model trained on the window ending each day (walk-forward).",
        kinds={"ray", "scikitlearn", "mlflow"},
        compute=spec.compute.training,
        ins={"features": pipeline.window_input("features", spec.training.window_days)},
        automation_condition=automation.fresh_latest_partition(),
        pool="ray_heavy",
    )
    def model(
        context: dg.AssetExecutionContext,
        ray_cluster: RayResource,
        mlflow: MlflowTracking,
        features: dict[str, pd.DataFrame],
    ) -> dg.Output[dict[str, ModelRecord]]:
        """Candidate model trained on the window ending each day (walk-forward)."""
        days = run_days(context)
        try:
            windows = {day: training.split_window(features, day, spec) for day in days}
        except training.TrainingDataError as exc:
            raise dg.Failure(f"{pipeline.key('model').to_user_string()}: {exc}") from exc
        calls = [(c, windows[day].train, windows[day].holdout, spec) for day in days for c in spec.training.candidates]
        results = ray_map(training.train_candidate, calls, num_cpus=spec.compute.ray_cpus_per_task)
        per_day = len(spec.training.candidates)
        champion = mlflow.load_alias(pipeline.name, CHAMPION)
        records: dict[str, ModelRecord] = {}
        images: dict[str, bytes] = {}
        for index, day in enumerate(days):
            day_results = results[index * per_day : (index + 1) * per_day]
            evaluation = evaluation_fns.evaluate(day_results, windows[day], spec, champion)
            record = mlflow.log_model_partition(
                spec, day=day, split=windows[day], results=day_results, evaluation=evaluation, run_id=context.run.run_id
            )
            records[str(day)], images = record, evaluation.images
        metadata = model_metadata(records[str(days[-1])], images, mlflow)
        metadata["ray_tasks"] = len(results)
        metadata["ray_worker_pids"] = dg.MetadataValue.json(sorted({r.worker_pid for r in results}))
        return dg.Output(records, metadata=metadata)

    return model


def failed_gates(instance: dg.DagsterInstance, pipeline: Pipeline, run_id: str) -> list[str]:
    """Names of model gates whose latest execution did not pass for the candidate from `run_id`."""
    keys = [dg.AssetCheckKey(pipeline.key("model"), gate) for gate in MODEL_GATES]
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    failed = []
    for key in keys:
        record = latest.get(key)
        evaluation = record.event.asset_check_evaluation if record and record.event else None
        if record is None or record.run_id != run_id or evaluation is None or not evaluation.passed:
            failed.append(key.name)
    return failed


def build_champion(pipeline: Pipeline) -> dg.AssetsDefinition:
    @pipeline.asset(
        "champion",
        description=f"The {pipeline.name} model that serves predictions: the MLflow 'champion' alias.",
        kinds={"mlflow"},
        partitioned=False,
        deps=[pipeline.key("model")],
        automation_condition=automation.after_upstream_update(),
    )
    def champion(
        context: dg.AssetExecutionContext,
        mlflow: MlflowTracking,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> dg.Output[ChampionRecord]:
        """Moves the MLflow 'champion' alias to the newest candidate that passed every gate."""
        event = context.instance.get_latest_materialization_event(pipeline.key("model"))
        if event is None or event.asset_materialization is None or event.asset_materialization.partition is None:
            raise dg.Failure(f"{pipeline.key('model').to_user_string()} has no materialised candidate yet")
        partition = event.asset_materialization.partition
        if failed := failed_gates(context.instance, pipeline, event.run_id):
            raise dg.Failure(
                f"candidate {partition} (run {event.run_id}) has not passed {failed}; the champion stays as it is"
            )
        record = ModelRecord.model_validate(io_manager.read(pipeline.key("model"), partition))
        promotion = mlflow.promote(pipeline.name, record.version)
        lineage = record.model_dump(include={"model_name", "version", "mlflow_run_id", "model_uri", "partition"})
        value = ChampionRecord(**lineage, previous_champion=promotion["previous_champion"])
        metadata = {
            "model_version": record.version,
            "candidate_partition": partition,
            "previous_champion": promotion["previous_champion"] or "none",
            "alias_moved": promotion["changed"],
            "mae": record.metrics.mae,
        }
        return dg.Output(value, metadata=metadata)

    return champion
