"""`<p>/model`: a candidate per day (walk-forward); `<p>/champion` is in `champion.py`."""

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster_ray import RayResource

from kernel import automation
from kernel.metadata import listed_days, per_day, picture
from kernel.pipeline import Pipeline, run_days
from kernel.records import ModelRecord, Rejected
from kernel.spec import PipelineSpec
from resources import day_tasks
from resources.compute import day_batches, ray_map
from resources.storage import PartitionedParquetIOManager
from resources.store import StoredDay
from resources.tracking import MlflowTracking

from .serving import champion_model, keep_version_record

if TYPE_CHECKING:
    from ml import evaluation

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
    if newest.metrics_per_series:
        metadata["metrics_per_series"] = dg.MetadataValue.md(series_table(newest))
        metadata["series_days_left_out_in_window"] = sum(len(left) for left in newest.series_left_out.values())
        metadata["series_left_out"] = dg.MetadataValue.json(newest.series_left_out)
    # In place on the asset's page: the very PNGs logged to the MLflow run, fetched from the MLflow UI.
    metadata |= {
        name: picture(alt, images[f"{name}.png"], mlflow.artifact_url(newest.mlflow_run_id, f"plots/{name}.png"))
        for name, alt in PLOTS.items()
    }
    if url := mlflow.run_url(newest.experiment_id, newest.mlflow_run_id):
        metadata["mlflow_run"] = dg.MetadataValue.url(url)
    return metadata


def series_table(record: ModelRecord) -> str:
    """The hold-out per series and pooled, as a Markdown table: rows, model MAE, baseline MAE, improvement."""
    lines = ["| series | rows | MAE | baseline MAE | improvement |", "|---|---:|---:|---:|---:|"]
    scores = [(label, s.rows, s.metrics.mae, s.baseline.mae) for label, s in record.metrics_per_series.items()]
    scores.append(("**pooled**", record.holdout_rows, record.metrics.mae, record.baseline.mae))
    for label, rows, mae, baseline in scores:
        lines.append(f"| {label} | {rows} | {mae:.2f} | {baseline:.2f} | {1 - mae / baseline:.1%} |")
    return "\n".join(lines)


def served_champion(
    pipeline: Pipeline, store: PartitionedParquetIOManager, mlflow: MlflowTracking
) -> tuple[Any, str, date] | None:
    """The model behind the 'champion' alias (through its verified lineage), its version and its window's last day."""
    served = champion_model(pipeline, store, mlflow)
    if served is None:
        return None
    serving, _, model = served
    return model, serving.version, date.fromisoformat(serving.partition)


# Model days trained, evaluated, refitted and logged together: enough Ray tasks to keep a cluster busy, few enough
# fitted models held at once (a year's backfill gathering all of them first peaked at 4.8 GB, over a 4 GiB training
# pod). A round's days go to Ray in batches of consecutive days (`day_batches`), each task reading the union of its
# days' windows once and training its days' candidates one after the other, not a task per (day, candidate):
# measured with two candidates, one bike day trained in 10 s this way against 11-13 s as separate tasks (README,
# "A model run goes in rounds of 16 days").
DAYS_PER_ROUND = 16


def train_round(
    batches: list[day_tasks.DayBatch],
    spec: PipelineSpec,
    champion: tuple[Any, str, date] | None,
    progress: Callable[[str], None],
) -> list[day_tasks.BatchTrained]:
    """A round's batches of model days, a Ray task each that reads its feature days from the store itself."""
    compute = spec.compute
    return ray_map(
        day_tasks.train_model_days,
        [(batch, spec, champion) for batch in batches],
        num_cpus=compute.ray_cpus_per_task,
        resources=compute.ray_resources,
        spread=True,
        timeout=compute.ray_task_timeout_seconds,
        progress=progress,
    )


def log_round(
    trained: "list[tuple[str, evaluation.TrainedWindow, Mapping[str, str | None]]]",
    *,
    pipeline: Pipeline,
    mlflow: MlflowTracking,
    store: PartitionedParquetIOManager,
    run_id: str,
    stop: threading.Event,
) -> list[ModelRecord]:
    """A trained round's days, in day order: each its own MLflow run and registered version, then the version's
    record kept (before the next day is logged); the first failure stops the round and is raised; `stop` (set
    when the run fails elsewhere) ends it before the next day."""
    logged = []
    for day, window, fingerprints in trained:
        if stop.is_set():
            break
        record = mlflow.log_model_partition(
            pipeline.spec,
            day=date.fromisoformat(day),
            trained=window,
            run_id=run_id,
            features_fingerprints=fingerprints,
        )
        keep_version_record(store, pipeline, record)
        logged.append(record)
    return logged


def build_model(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec
    window_days = spec.training.window_days

    @pipeline.asset(
        "model",
        description=f"Candidate {spec.name} model trained on the window ending each day (walk-forward).",
        kinds={"ray", "scikitlearn", "mlflow"},
        compute=spec.compute.training,
        ins={"features": pipeline.window_input("features", window_days, lazy=True)},
        automation_condition=automation.fresh_latest_partition(whole_window=False),
    )
    def model(
        context: dg.AssetExecutionContext,
        ray_cluster: RayResource,
        mlflow: MlflowTracking,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
        features: dict[str, StoredDay | Rejected],
    ) -> dg.Output[dict[str, ModelRecord | Rejected]]:
        """Candidate model trained on the passing days of the window ending each day (walk-forward)."""
        from ml import evaluation, training

        try:
            training.check_candidates(spec)
        except training.CandidateParamsError as exc:
            raise dg.Failure(str(exc)) from exc
        days = [str(day) for day in run_days(context)]
        unverified: dict[str, Any] = {}
        try:
            champion = served_champion(pipeline, io_manager, mlflow)
        except dg.Failure as refused:  # training is how a bad alias gets replaced: go on, compare with nothing
            context.log.warning(f"{refused.description}; candidates are not compared with a champion")
            champion, unverified["champion_unverified"] = None, str(refused.description)
        output = tuple(pipeline.key("model").path)

        def batch_of(batch: list[str]) -> day_tasks.DayBatch:
            """The batch's days and, by reference, every feature day of their windows."""
            first = str(date.fromisoformat(batch[0]) - timedelta(days=window_days - 1))
            return day_tasks.DayBatch(
                io_manager.store, output, batch, {d: r for d, r in features.items() if first <= d <= batch[-1]}
            )

        rejected: dict[str, Rejected] = {}
        done: list[day_tasks.BatchTrained] = []
        newest: evaluation.TrainedWindow | None = None
        logged: list[ModelRecord] = []
        # A round is logged to MLflow in the background while the next one trains on Ray: one logging thread (days
        # logged, registered and kept in day order), at most one round waiting for it. A logging failure fails the
        # run with MLflow's own error at the training's next progress report, or at the next wait.
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-logger") as logger:
            logging_round: Future[list[ModelRecord]] | None = None

            def progress(message: str) -> None:
                if logging_round is not None and logging_round.done():
                    logging_round.result()
                context.log.info(message)

            try:
                for start in range(0, len(days), DAYS_PER_ROUND):
                    batches = day_batches(days[start : start + DAYS_PER_ROUND], spec.compute.ray_days_per_task)
                    round_done = train_round([batch_of(batch) for batch in batches], spec, champion, progress)
                    done += round_done
                    trained = []
                    for result in (r for batch in round_done for r in batch.days):
                        if isinstance(result.value, Rejected):
                            rejected[result.day] = result.value
                        else:
                            trained.append((result.day, result.value, result.features_fingerprints))
                            newest = result.value
                    if logging_round is not None:
                        logged += logging_round.result()
                    logging_round = logger.submit(
                        log_round,
                        trained,
                        pipeline=pipeline,
                        mlflow=mlflow,
                        store=io_manager,
                        run_id=context.run.run_id,
                        stop=stop,
                    )
                if logging_round is not None:
                    logged += logging_round.result()
            except BaseException as exc:  # the run fails or is stopped: the logger stops after its current day
                stop.set()
                if logging_round is not None and (failure := logging_round.exception()) not in {None, exc}:
                    context.log.error(f"logging a trained round to MLflow failed too: {failure!r}")
                raise
        records: dict[str, ModelRecord | Rejected] = {**rejected, **{record.partition: record for record in logged}}
        metadata = model_metadata(logged[-1], newest.evaluation.images, mlflow) if logged and newest else {}
        metadata |= unverified
        metadata["days_rejected"] = len(rejected)
        reasons = {day: r.reason for day, r in rejected.items()}
        metadata["rejected_days"] = listed_days(reasons)
        per_day(context, "rejected_this_day", reasons)
        metadata["ray_tasks"] = len(done)
        metadata["ray_worker_pids"] = dg.MetadataValue.json(sorted({batch.worker_pid for batch in done}))
        metadata["ray_nodes"] = dg.MetadataValue.json(dict(Counter(batch.node_id for batch in done)))
        return dg.Output({day: records[day] for day in days}, metadata=metadata)

    return model
