"""`<p>/model` (a candidate per day: walk-forward) and `<p>/champion` (the promoted model)."""

import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from dagster_ray import RayResource

from checks.models import BEATS_SEASONAL_NAIVE, FINITE_PREDICTIONS, NOT_WORSE_THAN_CHAMPION
from platform_assets import automation
from platform_assets.metadata import png_markdown
from platform_assets.ml import plots, training
from platform_assets.ml.features import feature_columns
from platform_assets.pipeline import Pipeline, run_days
from resources.compute import ray_map
from resources.storage import ALLOW_MISSING_PARTITIONS, PartitionedParquetIOManager
from resources.tracking import CHAMPION, MlflowTracking

MODEL_GATES = (BEATS_SEASONAL_NAIVE, NOT_WORSE_THAN_CHAMPION, FINITE_PREDICTIONS)


def _pip_requirements() -> list[str]:
    # Explicit requirements: MLflow's inference costs ~10 s per logged model.
    import sklearn
    import skops

    return [
        f"scikit-learn=={sklearn.__version__}",
        f"pandas=={pd.__version__}",
        f"numpy=={np.__version__}",
        f"skops=={skops.__version__}",
    ]


def _trusted_types(model: Any) -> list[str]:
    # The model was fitted in this run from our own pipeline: every type in it is ours to trust.
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(model))


def _score_champion(champion: Any, holdout: pd.DataFrame, pipeline: Pipeline) -> dict[str, Any]:
    try:
        predicted = training.predict(champion, holdout, pipeline.spec)
    except (KeyError, ValueError) as exc:
        return {"comparable": False, "reason": f"champion cannot score this window's features: {exc}"}
    metrics = training.forecast_metrics(holdout[pipeline.spec.target].to_numpy(dtype="float64"), predicted)
    return {"comparable": True, "mae": metrics.mae}


def _log_candidate(
    mlflow_res: MlflowTracking,
    pipeline: Pipeline,
    *,
    day: date,
    split: training.WindowSplit,
    results: list[training.CandidateResult],
    run_id: str,
) -> dict[str, Any]:
    """One MLflow run per model partition: params, metrics, plots, the model and its registered version."""
    import mlflow
    import mlflow.sklearn

    best = training.best_candidate(results)
    train, holdout, window = split.train, split.holdout, split.window

    spec = pipeline.spec
    predicted = training.predict(best.model, holdout, spec)
    baseline = training.forecast_metrics(
        holdout[spec.target].to_numpy(dtype="float64"),
        training.seasonal_naive(holdout, spec.evaluation.baseline_season_hours),
    )
    frame = training.holdout_frame(holdout, predicted, spec)
    importances = training.feature_importance(best.model, holdout, spec)
    images = {
        "forecast_vs_actual.png": plots.forecast_vs_actual(frame),
        "residuals.png": plots.residuals(frame),
        "feature_importance.png": plots.importance(importances),
    }
    experiment_id = mlflow_res.experiment_id(pipeline.name)
    tags = {
        "pipeline": pipeline.name,
        "partition": str(day),
        "dagster_run_id": run_id,
        "training_window": f"{window.train_days[0]}..{window.holdout_days[-1]}",
    }
    info = None
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{pipeline.name}-{day}", tags=tags) as run:
        mlflow.log_params(
            {
                "family": best.candidate.family,
                **best.candidate.params,
                "window_days": spec.training.window_days,
                "holdout_days": spec.evaluation.holdout_days,
                "train_rows": len(train),
                "holdout_rows": len(holdout),
            }
        )
        mlflow.log_metrics(best.metrics.as_dict() | baseline.as_dict("baseline_"))
        for index, result in enumerate(results):
            mlflow.log_metric(f"candidate_{index}_{result.candidate.family}_mae", result.metrics.mae)
        mlflow.log_dict(
            {"train_days": window.train_days, "holdout_days": window.holdout_days, "missing_days": window.missing_days},
            "training_window.json",
        )
        mlflow.log_dict(importances, "feature_importance.json")
        with tempfile.TemporaryDirectory() as directory:
            for name, png in images.items():
                (Path(directory) / name).write_bytes(png)
            mlflow.log_artifacts(directory, "plots")
        info = mlflow.sklearn.log_model(
            best.model,
            name="model",
            registered_model_name=pipeline.name,
            input_example=holdout[feature_columns(spec)].head(3),
            pip_requirements=_pip_requirements(),
            skops_trusted_types=_trusted_types(best.model),
        )
    assert info is not None, "MLflow returned no model info"
    version = str(info.registered_model_version)
    client = mlflow_res.client()
    for key, value in tags.items():
        client.set_model_version_tag(pipeline.name, version, key, value)
    return {
        "pipeline": pipeline.name,
        "partition": str(day),
        "model_name": pipeline.name,
        "version": version,
        "mlflow_run_id": run.info.run_id,
        "experiment_id": experiment_id,
        "model_uri": f"models:/{pipeline.name}/{version}",
        "family": best.candidate.family,
        "params": dict(best.candidate.params),
        "metrics": best.metrics.as_dict(),
        "baseline": baseline.as_dict(),
        "candidates": [{"family": r.candidate.family, "mae": r.metrics.mae} for r in results],
        "non_finite_predictions": int((~np.isfinite(predicted)).sum()),
        "train_days": window.train_days,
        "holdout_days": window.holdout_days,
        "missing_days": window.missing_days,
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "dagster_run_id": run_id,
        "ray_worker_pids": sorted({r.worker_pid for r in results}),
        "_images": images,
    }


def _load_champion(mlflow_res: MlflowTracking, name: str) -> tuple[Any, str] | None:
    version = mlflow_res.alias_version(name, CHAMPION)
    if version is None:
        return None
    return mlflow_res.load_model(f"models:/{name}/{version}"), version


def build_model(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @dg.asset(
        key=pipeline.key("model"),
        description=f"Candidate {spec.name} model trained on the window ending each day (walk-forward).",
        group_name=pipeline.name,
        owners=pipeline.owners,
        tags=pipeline.tags,
        kinds={"ray", "scikitlearn", "mlflow"},
        partitions_def=pipeline.partitions_def,
        backfill_policy=pipeline.backfill_policy,
        ins={
            "features": dg.AssetIn(
                key=pipeline.key("features"),
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-(spec.training.window_days - 1),
                    end_offset=0,
                    allow_nonexistent_upstream_partitions=True,
                ),
                metadata={ALLOW_MISSING_PARTITIONS: True},
            )
        },
        freshness_policy=pipeline.freshness(spec.freshness.model),
        automation_condition=automation.fresh_latest_partition(),
        op_tags=pipeline.op_tags(spec.compute.training),
        pool="ray_heavy",
    )
    def model(
        context: dg.AssetExecutionContext,
        ray_cluster: RayResource,
        mlflow: MlflowTracking,
        features: dict[str, pd.DataFrame],
    ) -> dg.Output[dict[str, dict[str, Any]]]:
        """Candidate model trained on the window ending each day (walk-forward)."""
        days = run_days(context)
        try:
            windows = {day: training.split_window(features, day, spec) for day in days}
        except training.TrainingDataError as exc:
            raise dg.Failure(f"{pipeline.key('model').to_user_string()}: {exc}") from exc
        calls = [(c, windows[day].train, windows[day].holdout, spec) for day in days for c in spec.training.candidates]
        results = ray_map(training.train_candidate, calls, num_cpus=spec.compute.ray_cpus_per_task)
        per_day = len(spec.training.candidates)
        champion = _load_champion(mlflow, pipeline.name)
        records: dict[str, dict[str, Any]] = {}
        for index, day in enumerate(days):
            day_results = results[index * per_day : (index + 1) * per_day]
            record = _log_candidate(
                mlflow, pipeline, day=day, split=windows[day], results=day_results, run_id=context.run.run_id
            )
            if champion is not None:
                record["champion"] = {
                    "version": champion[1],
                    **_score_champion(champion[0], windows[day].holdout, pipeline),
                }
            else:
                record["champion"] = None
            records[str(day)] = record
        newest = records[str(days[-1])]
        images = newest.pop("_images")
        for record in records.values():
            record.pop("_images", None)
        url = mlflow.run_url(newest["experiment_id"], newest["mlflow_run_id"])
        metadata: dict[str, Any] = {
            "model_version": newest["version"],
            "mlflow_run_id": newest["mlflow_run_id"],
            "mae": newest["metrics"]["mae"],
            "baseline_mae": newest["baseline"]["mae"],
            "smape": newest["metrics"]["smape"],
            "family": newest["family"],
            "training_window": f"{newest['train_days'][0]}..{newest['holdout_days'][-1]}",
            "missing_days_in_window": len(newest["missing_days"]),
            "forecast_vs_actual": png_markdown(images["forecast_vs_actual.png"], "forecast vs actual"),
            "residuals": png_markdown(images["residuals.png"], "residuals"),
            "feature_importance": png_markdown(images["feature_importance.png"], "feature importance"),
            "ray_tasks": len(results),
            "ray_worker_pids": dg.MetadataValue.json(sorted({r.worker_pid for r in results})),
        }
        if url:
            metadata["mlflow_run"] = dg.MetadataValue.url(url)
        return dg.Output(records, metadata=metadata)

    return model


def _gates_passed(context: dg.AssetExecutionContext, pipeline: Pipeline, run_id: str) -> list[str]:
    """Names of model gates whose latest execution did not pass for the candidate from `run_id`."""
    keys = [dg.AssetCheckKey(pipeline.key("model"), gate) for gate in MODEL_GATES]
    latest = context.instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    failed = []
    for key in keys:
        record = latest.get(key)
        evaluation = record.event.asset_check_evaluation if record and record.event else None
        if record is None or record.run_id != run_id or evaluation is None or not evaluation.passed:
            failed.append(key.name)
    return failed


def build_champion(pipeline: Pipeline) -> dg.AssetsDefinition:
    @dg.asset(
        key=pipeline.key("champion"),
        description=f"The {pipeline.name} model that serves predictions: the MLflow 'champion' alias.",
        group_name=pipeline.name,
        owners=pipeline.owners,
        tags=pipeline.tags,
        kinds={"mlflow"},
        deps=[pipeline.key("model")],
        automation_condition=automation.after_upstream_update(),
    )
    def champion(
        context: dg.AssetExecutionContext,
        mlflow: MlflowTracking,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> dg.Output[dict[str, Any]]:
        """Moves the MLflow 'champion' alias to the newest candidate that passed every gate."""
        event = context.instance.get_latest_materialization_event(pipeline.key("model"))
        if event is None or event.asset_materialization is None or event.asset_materialization.partition is None:
            raise dg.Failure(f"{pipeline.key('model').to_user_string()} has no materialised candidate yet")
        partition = event.asset_materialization.partition
        if failed := _gates_passed(context, pipeline, event.run_id):
            raise dg.Failure(
                f"candidate {partition} (run {event.run_id}) has not passed {failed}; the champion stays as it is"
            )
        record = io_manager.read(pipeline.key("model"), partition)
        promotion = mlflow.promote(pipeline.name, record["version"])
        value = {
            **{k: record[k] for k in ("model_name", "version", "mlflow_run_id", "model_uri", "partition")},
            "previous_champion": promotion["previous_champion"],
        }
        metadata = {
            "model_version": record["version"],
            "candidate_partition": partition,
            "previous_champion": promotion["previous_champion"] or "none",
            "alias_moved": promotion["changed"],
            "mae": record["metrics"]["mae"],
        }
        return dg.Output(value, metadata=metadata)

    return champion
