"""`<p>/model` (a candidate per day: walk-forward) and `<p>/champion` (the promoted model)."""

from collections.abc import Callable
from datetime import date
from typing import Any

import dagster as dg
import pandas as pd
from dagster_ray import RayResource

from kernel import automation
from kernel.metadata import picture
from kernel.names import MODEL_GATES
from kernel.pipeline import Pipeline, run_days
from kernel.records import ChampionRecord, ModelRecord, Rejected
from kernel.spec import PipelineSpec
from ml import backtest, training
from ml import evaluation as evaluation_fns
from resources.compute import ray_map
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking
from resources.verdicts import materialising_run, rejected_days

from .serving import champion_model, keep_version_record

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
        "missing_target_rows": newest.missing_target_rows,
    }
    # In place on the asset's page: the very PNGs logged to the MLflow run, fetched from the MLflow UI.
    metadata |= {
        name: picture(alt, images[f"{name}.png"], mlflow.artifact_url(newest.mlflow_run_id, f"plots/{name}.png"))
        for name, alt in PLOTS.items()
    }
    if url := mlflow.run_url(newest.experiment_id, newest.mlflow_run_id):
        metadata["mlflow_run"] = dg.MetadataValue.url(url)
    return metadata


def split_windows(
    features: dict[str, pd.DataFrame | Rejected], days: list[date], pipeline: Pipeline
) -> tuple[dict[date, training.WindowSplit], dict[str, Rejected]]:
    """Each day's training window, or why that model partition cannot be trained (too many rejected days,
    too few rows): a bad window rejects its own partition, never the others of the run."""
    windows: dict[date, training.WindowSplit] = {}
    rejected: dict[str, Rejected] = {}
    for day in days:
        try:
            windows[day] = training.split_window(features, day, pipeline.spec)
        except training.TrainingDataError as exc:
            rejected[str(day)] = Rejected(day=str(day), reason=f"{pipeline.key('model').to_user_string()}: {exc}")
    return windows, rejected


def served_champion(
    pipeline: Pipeline, store: PartitionedParquetIOManager, mlflow: MlflowTracking
) -> tuple[Any, str, date] | None:
    """The model behind the 'champion' alias (through its verified lineage), its version and its window's last day."""
    served = champion_model(pipeline, store, mlflow)
    if served is None:
        return None
    serving, _, model = served
    return model, serving.version, date.fromisoformat(serving.partition)


# Days trained, evaluated, refitted and logged together: enough Ray tasks to keep a cluster busy, few enough fitted
# models held at once (a year's backfill gathering all of them first peaked at 4.8 GB, over a 4 GiB training pod).
DAYS_PER_ROUND = 16


def train_round(
    windows: dict[date, training.WindowSplit],
    spec: PipelineSpec,
    champion: tuple[Any, str, date] | None,
    progress: Callable[[str], None],
) -> list[tuple[date, training.WindowSplit, list[training.CandidateResult], evaluation_fns.Evaluation, Any]]:
    """Per day: its candidates trained (Ray tasks), then the best evaluated against the baseline and the champion
    and refitted on the whole window (a Ray task per day)."""
    compute = spec.compute
    calls = [(c, split.train, split.holdout, spec) for split in windows.values() for c in spec.training.candidates]
    results = ray_map(
        training.train_candidate,
        calls,
        num_cpus=compute.ray_cpus_per_task,
        timeout=compute.ray_task_timeout_seconds,
        progress=progress,
    )
    per_day = len(spec.training.candidates)
    by_day = [results[index * per_day : (index + 1) * per_day] for index in range(len(windows))]
    evaluated = ray_map(
        evaluation_fns.evaluate_and_refit,
        [(day_results, split, spec, champion) for day_results, split in zip(by_day, windows.values(), strict=True)],
        num_cpus=compute.ray_cpus_per_task,
        timeout=compute.ray_task_timeout_seconds,
        progress=progress,
    )
    return [
        (day, split, day_results, evaluation, model)
        for (day, split), day_results, (evaluation, model) in zip(windows.items(), by_day, evaluated, strict=True)
    ]


def build_model(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @pipeline.asset(
        "model",
        description=f"Candidate {spec.name} model trained on the window ending each day (walk-forward).",
        kinds={"ray", "scikitlearn", "mlflow"},
        compute=spec.compute.training,
        ins={"features": pipeline.window_input("features", spec.training.window_days)},
        automation_condition=automation.fresh_latest_partition(whole_window=False),
        pool="ray_heavy",
    )
    def model(
        context: dg.AssetExecutionContext,
        ray_cluster: RayResource,
        mlflow: MlflowTracking,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
        features: dict[str, pd.DataFrame | Rejected],
    ) -> dg.Output[dict[str, ModelRecord | Rejected]]:
        """Candidate model trained on the passing days of the window ending each day (walk-forward)."""
        try:
            training.check_candidates(spec)
        except training.CandidateParamsError as exc:
            raise dg.Failure(str(exc)) from exc
        days = run_days(context)
        windows, rejected = split_windows(features, days, pipeline)
        unverified: dict[str, Any] = {}
        try:
            champion = served_champion(pipeline, io_manager, mlflow)
        except dg.Failure as refused:  # training is how a bad alias gets replaced: go on, compare with nothing
            context.log.warning(f"{refused.description}; candidates are not compared with a champion")
            champion, unverified["champion_unverified"] = None, str(refused.description)
        metadata: dict[str, Any] = {}
        records: dict[str, ModelRecord | Rejected] = dict(rejected)
        worker_pids: set[int] = set()
        rounds = list(windows.items())
        for start in range(0, len(rounds), DAYS_PER_ROUND):
            for day, split, results, evaluation, served in train_round(
                dict(rounds[start : start + DAYS_PER_ROUND]), spec, champion, context.log.info
            ):
                record = mlflow.log_model_partition(
                    spec,
                    day=day,
                    split=split,
                    results=results,
                    evaluation=evaluation,
                    model=served,
                    run_id=context.run.run_id,
                )
                keep_version_record(io_manager, pipeline, record)
                records[str(day)], metadata = record, model_metadata(record, evaluation.images, mlflow)
                worker_pids |= {r.worker_pid for r in results}
        metadata |= unverified
        metadata["days_rejected"] = len(rejected)
        metadata["rejected_days"] = dg.MetadataValue.json({d: r.reason for d, r in rejected.items()})
        metadata["ray_tasks"] = len(windows) * (len(spec.training.candidates) + 1)
        metadata["ray_worker_pids"] = dg.MetadataValue.json(sorted(worker_pids))
        return dg.Output({str(day): records[str(day)] for day in days}, metadata=metadata)

    return model


def newest_passing(
    instance: dg.DagsterInstance, pipeline: Pipeline, store: PartitionedParquetIOManager
) -> tuple[ModelRecord, str] | None:
    """The newest model partition (by date) whose gates all passed on its current materialisation, with the
    run that produced it."""
    key = pipeline.key("model")
    days = sorted(instance.get_materialized_partitions(key), reverse=True)
    rejected = rejected_days(instance, key, MODEL_GATES, store.fingerprints(key, days))
    for day in days:
        if day in rejected or (run_id := materialising_run(instance, key, day)) is None:
            continue
        value = store.read(key, day)
        if not isinstance(value, Rejected):
            return ModelRecord.model_validate(value), run_id
    return None


def verify_lineage(record: ModelRecord, run_id: str, mlflow: MlflowTracking) -> None:
    """Refuse a candidate whose stored record does not match the run its gates judged and the registry's tags."""
    tags = mlflow.version_tags(record.model_name, record.version)
    expected = {"dagster_run_id": run_id, "partition": record.partition, "pipeline": record.pipeline}
    found = {"dagster_run_id": record.dagster_run_id} | {k: tags.get(k, "<missing>") for k in expected}
    if record.dagster_run_id != run_id or any(tags.get(k) != v for k, v in expected.items()):
        raise dg.Failure(
            f"refusing to promote {record.model_name} v{record.version} for {record.partition}: its stored record or "
            f"registry tags do not match the run {run_id} whose gates passed (found {found}); the champion stays"
        )


def recent_scores(pipeline: Pipeline, store: PartitionedParquetIOManager, until: str, days: int) -> pd.DataFrame:
    """The backtest rows of the last `days` scored days on or before `until` (days not scored are skipped)."""
    keys = [key for key in pipeline.partitions_def.get_partition_keys() if key <= until]
    scored: list[pd.DataFrame] = []
    for key in reversed(keys):
        if len(scored) == days:
            break
        if store.exists(pipeline.key("backtest"), key) and isinstance(
            value := store.read(pipeline.key("backtest"), key), pd.DataFrame
        ):
            scored.append(value)
    return pd.concat(scored, ignore_index=True) if scored else pd.DataFrame(columns=backtest.SCORE_COLUMNS)


def judge_track_record(
    pipeline: Pipeline, store: PartitionedParquetIOManager, candidate: ModelRecord
) -> tuple[bool, str, dict[str, Any]]:
    """`promotion.track_record_days`: whether the out-of-sample record up to the candidate's day allows promoting it."""
    days = pipeline.spec.promotion.track_record_days
    record = backtest.track_record(recent_scores(pipeline, store, candidate.partition, days), days)
    passed, reason = backtest.judge_track_record(record, days, pipeline.spec.promotion)
    scored = len(record.days) if record else 0
    observed: dict[str, Any] = {"track_record_days": days, "track_record_scored_days": scored}
    if record is not None:
        observed |= {
            "track_record_improvement": record.improvement,
            "track_record_mae": record.model_mae,
            "track_record_baseline_mae": record.baseline_mae,
            "track_record_champion_mae": record.champion_mae if record.champion_mae is not None else "not scored",
        }
    return passed, reason, observed


def build_champion(pipeline: Pipeline) -> dg.AssetsDefinition:
    gated = pipeline.spec.promotion.track_record_days > 0

    @pipeline.asset(
        "champion",
        description=f"The {pipeline.name} model that serves predictions: the MLflow 'champion' alias.",
        kinds={"mlflow"},
        partitioned=False,
        # With the track-record gate on, promotion reads the backtest too, and follows its updates.
        deps=[pipeline.key("model"), *([pipeline.key("backtest")] if gated else [])],
        automation_condition=automation.after_upstream_update(),
    )
    def champion(
        context: dg.AssetExecutionContext,
        mlflow: MlflowTracking,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    ) -> dg.Output[ChampionRecord]:
        """Points the MLflow 'champion' alias at the newest model partition whose gates passed, never an older one."""
        found = newest_passing(context.instance, pipeline, io_manager)
        if found is None:
            raise dg.Failure(f"{pipeline.key('model').to_user_string()} has no partition that passed every gate yet")
        candidate, run_id = found
        verify_lineage(candidate, run_id, mlflow)
        current = mlflow.champion_record(pipeline.name)
        passed, refusal, track = judge_track_record(pipeline, io_manager, candidate) if gated else (True, "", {})
        refused = f"refusing to promote v{candidate.version} ({candidate.partition}): {refusal}"
        if not passed and current is None:
            raise dg.Failure(f"{refused}; there is no champion yet")
        moved = False
        if passed and (current is None or current.partition <= candidate.partition):
            moved = bool(mlflow.promote(pipeline.name, candidate.version)["changed"])
        serving = mlflow.champion_record(pipeline.name)
        if serving is None:
            raise dg.Failure(f"{pipeline.name}: the registry has no champion alias right after promoting")
        metadata = {
            "model_version": serving.version,
            "champion_partition": serving.partition,
            "newest_passing_partition": candidate.partition,
            "previous_champion": serving.previous_champion or "none",
            "alias_moved": moved,
            "mae": candidate.metrics.mae,
            **track,
            **({"refused": f"{refused}; the champion stays"} if not passed else {}),
        }
        return dg.Output(serving, metadata=metadata)

    return champion
