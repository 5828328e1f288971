"""`<p>/model`: a candidate per day (walk-forward); `<p>/champion` is in `champion.py`."""

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster_ray import RayResource

from kernel import automation
from kernel.frames import Frame
from kernel.metadata import picture
from kernel.names import FINGERPRINT
from kernel.pipeline import Pipeline, run_days
from kernel.records import ModelRecord, Rejected
from kernel.spec import PipelineSpec
from resources.compute import ray_map
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking

from .serving import champion_model, keep_version_record

if TYPE_CHECKING:
    import pandas as pd

    from ml import evaluation as evaluation_fns
    from ml import training

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


def split_windows(
    features: "dict[str, pd.DataFrame | Rejected]", days: list[date], pipeline: Pipeline
) -> "tuple[dict[date, training.WindowSplit], dict[str, Rejected]]":
    """Each day's training window, or why that model partition cannot be trained (too many rejected days,
    too few rows): a bad window rejects its own partition, never the others of the run."""
    from ml import training

    windows: dict[date, training.WindowSplit] = {}
    rejected: dict[str, Rejected] = {}
    for day in days:
        try:
            windows[day] = training.split_window(features, day, pipeline.spec)
        except training.TrainingDataError as exc:
            rejected[str(day)] = Rejected(day=str(day), reason=f"{pipeline.key('model').to_user_string()}: {exc}")
    return windows, rejected


def read_from(
    features: "Mapping[str, pd.DataFrame | Rejected]", window: "training.TrainingWindow"
) -> dict[str, str | None]:
    """The fingerprint of each feature day a model trained and was evaluated on, as the asset store read it."""
    import pandas as pd

    return {
        day: frame.attrs.get(FINGERPRINT) if isinstance(frame := features[day], pd.DataFrame) else None
        for day in (*window.train_days, *window.holdout_days)
    }


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
# A day of a trained round: its window split, its candidates' results, the evaluation and the refitted model.
TrainedDay = tuple[date, "training.WindowSplit", list["training.CandidateResult"], "evaluation_fns.Evaluation", Any]


def train_round(
    windows: "dict[date, training.WindowSplit]",
    spec: PipelineSpec,
    champion: tuple[Any, str, date] | None,
    progress: Callable[[str], None],
) -> list[TrainedDay]:
    """Per day: its candidates trained (Ray tasks), then the best evaluated against the baseline and the champion
    and refitted on the whole window (a Ray task per day)."""
    from ml import evaluation as evaluation_fns
    from ml import training

    compute = spec.compute
    calls = [(c, split.train, split.holdout, spec) for split in windows.values() for c in spec.training.candidates]
    results = ray_map(
        training.train_candidate,
        calls,
        num_cpus=compute.ray_cpus_per_task,
        resources=compute.ray_resources,
        timeout=compute.ray_task_timeout_seconds,
        progress=progress,
    )
    per_day = len(spec.training.candidates)
    by_day = [results[index * per_day : (index + 1) * per_day] for index in range(len(windows))]
    evaluated = ray_map(
        evaluation_fns.evaluate_and_refit,
        [(day_results, split, spec, champion) for day_results, split in zip(by_day, windows.values(), strict=True)],
        num_cpus=compute.ray_cpus_per_task,
        resources=compute.ray_resources,
        timeout=compute.ray_task_timeout_seconds,
        progress=progress,
    )
    return [
        (day, split, day_results, evaluation, model)
        for (day, split), day_results, (evaluation, model) in zip(windows.items(), by_day, evaluated, strict=True)
    ]


def log_round(
    trained: list[TrainedDay],
    *,
    pipeline: Pipeline,
    mlflow: MlflowTracking,
    store: PartitionedParquetIOManager,
    run_id: str,
    features: "Mapping[str, pd.DataFrame | Rejected]",
    stop: threading.Event,
) -> list[ModelRecord]:
    """A trained round's days, in day order: each its own MLflow run and registered version, then the version's
    record kept (before the next day is logged); the first failure stops the round and is raised; `stop` (set
    when the run fails elsewhere) ends it before the next day."""
    logged = []
    for day, split, results, evaluation, served in trained:
        if stop.is_set():
            break
        record = mlflow.log_model_partition(
            pipeline.spec,
            day=day,
            split=split,
            results=results,
            evaluation=evaluation,
            model=served,
            run_id=run_id,
            features_fingerprints=read_from(features, split.window),
        )
        keep_version_record(store, pipeline, record)
        logged.append(record)
    return logged


def build_model(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec

    @pipeline.asset(
        "model",
        description=f"Candidate {spec.name} model trained on the window ending each day (walk-forward).",
        kinds={"ray", "scikitlearn", "mlflow"},
        compute=spec.compute.training,
        ins={"features": pipeline.window_input("features", spec.training.window_days)},
        automation_condition=automation.fresh_latest_partition(whole_window=False),
    )
    def model(
        context: dg.AssetExecutionContext,
        ray_cluster: RayResource,
        mlflow: MlflowTracking,
        io_manager: dg.ResourceParam[PartitionedParquetIOManager],
        features: dict[str, Frame | Rejected],
    ) -> dg.Output[dict[str, ModelRecord | Rejected]]:
        """Candidate model trained on the passing days of the window ending each day (walk-forward)."""
        from ml import training

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
        records: dict[str, ModelRecord | Rejected] = dict(rejected)
        worker_pids: set[int] = set()
        rounds = list(windows.items())
        trained: list[TrainedDay] = []
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
                for start in range(0, len(rounds), DAYS_PER_ROUND):
                    trained = train_round(dict(rounds[start : start + DAYS_PER_ROUND]), spec, champion, progress)
                    worker_pids |= {r.worker_pid for _, _, results, _, _ in trained for r in results}
                    if logging_round is not None:
                        logged += logging_round.result()
                    logging_round = logger.submit(
                        log_round,
                        trained,
                        pipeline=pipeline,
                        mlflow=mlflow,
                        store=io_manager,
                        run_id=context.run.run_id,
                        features=features,
                        stop=stop,
                    )
                if logging_round is not None:
                    logged += logging_round.result()
            except BaseException as exc:  # the run fails or is stopped: the logger stops after its current day
                stop.set()
                if logging_round is not None and (failure := logging_round.exception()) not in {None, exc}:
                    context.log.error(f"logging a trained round to MLflow failed too: {failure!r}")
                raise
        records.update((record.partition, record) for record in logged)
        metadata = model_metadata(logged[-1], trained[-1][3].images, mlflow) if logged else {}
        metadata |= unverified
        metadata["days_rejected"] = len(rejected)
        metadata["rejected_days"] = dg.MetadataValue.json({d: r.reason for d, r in rejected.items()})
        metadata["ray_tasks"] = len(windows) * (len(spec.training.candidates) + 1)
        metadata["ray_worker_pids"] = dg.MetadataValue.json(sorted(worker_pids))
        return dg.Output({str(day): records[str(day)] for day in days}, metadata=metadata)

    return model
