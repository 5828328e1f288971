"""Worker entry points: each runs in a fresh `run.py --worker NAME` process and returns a JSON-able dict.

The main process sets RAY_ADDRESS, PLATFORM_HOME, DAGSTER_HOME and PLATFORM_SPECS_DIR for them, so the
platform's own `Settings.from_environment()` finds the benchmark's state, spec copy and Ray head.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import (
    BACKFILL_STAGES,
    PIPELINE,
    StageFailed,
    bench_pipeline,
    platform_code_location,
    preimport_heavy,
    range_tags,
    rusage_mb,
)
from benchmarks.eventlog import failure_messages, gates_only, run_breakdown
from benchmarks.fresh_day import worker_fresh_day
from benchmarks.ingest import worker_ingest_nth
from benchmarks.landing_first import worker_landing_first
from benchmarks.many_files import worker_many_files
from benchmarks.scale import worker_scale_champion, worker_scale_stage
from benchmarks.script import worker_model_compute, worker_script
from kernel.days import day_range

if TYPE_CHECKING:
    import dagster as dg

    from kernel.pipeline import Pipeline
    from resources.storage import PartitionedParquetIOManager
    from resources.tracking import MlflowTracking


def _definitions(name: str = PIPELINE) -> tuple[dg.Definitions, Pipeline]:
    """The code location as Dagster loads it, and the benchmark pipeline in it."""
    from kernel.settings import Settings
    from platform_assets.definitions import build_definitions

    settings = Settings.from_environment()
    return build_definitions(settings), bench_pipeline(settings.specs_dir, settings.root, name)


def _resources(defs: dg.Definitions) -> tuple[PartitionedParquetIOManager, MlflowTracking]:
    """The asset store and the MLflow resource exactly as the code location wires them."""
    from resources.storage import PartitionedParquetIOManager
    from resources.tracking import MlflowTracking

    resources = defs.resources or {}
    store, tracking = resources.get("io_manager"), resources.get("mlflow")
    if not isinstance(store, PartitionedParquetIOManager) or not isinstance(tracking, MlflowTracking):
        raise StageFailed("unexpected resource types for io_manager and mlflow")
    return store, tracking


def _execute_in_process(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    pipeline: Pipeline,
    stages: Sequence[str],
    days: tuple[date, date] | None,
    *,
    checks: bool = True,
    tolerate_gates: bool = False,
) -> tuple[float, str, list[tuple[str, str]]]:
    """Run `stages` for the days in one in-process run: seconds, run id and (tolerated) gate failures."""
    job = defs.resolve_implicit_global_asset_job_def()
    keys = [pipeline.key(stage) for stage in stages]
    selection: list[dg.AssetKey] | None = keys
    if not checks:
        job = job.get_subset(asset_selection=set(keys), asset_check_selection=set())
        selection = None
    tags = range_tags(*days) if days else None
    started = time.perf_counter()
    result = job.execute_in_process(instance=instance, asset_selection=selection, tags=tags, raise_on_error=False)
    elapsed = time.perf_counter() - started
    if result.success:
        return elapsed, result.run_id, []
    failures = failure_messages(instance.all_logs(result.run_id))
    if tolerate_gates and gates_only(failures):
        return elapsed, result.run_id, failures
    details = "\n".join(f"[{step}] {text}" for step, text in failures) or "(no step failure recorded)"
    raise StageFailed(f"run of {'+'.join(stages)} for {days} failed (run {result.run_id}):\n{details}")


def _force_champion(
    defs: dg.Definitions, instance: dg.DagsterInstance, pipeline: Pipeline, day: date
) -> dict[str, Any]:
    """Promote the day's candidate although a gate rejected it: the backfill only needs *a* champion.

    Through the platform's own `<p>_promote` job with `override: true`, so it is audited like any promotion by hand
    and predictions load it exactly as usual.
    """
    from kernel.records import ChampionRecord, ModelRecord

    store, _ = _resources(defs)
    record = ModelRecord.model_validate(store.read(pipeline.key("model"), str(day)))
    config = {
        "version": record.version,
        "reason": "benchmark setup: the measured backfill needs a champion",
        "requested_by": "benchmarks/worker.py",
        "override": True,
    }
    result = defs.resolve_job_def(f"{pipeline.name}_promote").execute_in_process(
        instance=instance,
        run_config={"ops": {f"{pipeline.name}_promote_champion": {"config": config}}},
        raise_on_error=False,
    )
    if not result.success:
        details = "\n".join(f"[{step}] {text}" for step, text in failure_messages(instance.all_logs(result.run_id)))
        raise StageFailed(f"promoting v{record.version} by hand failed (run {result.run_id}):\n{details}")
    champion = ChampionRecord.model_validate(store.read(pipeline.key("champion"), None))
    return champion.model_dump(exclude={"previous_champion"})


def history_and_champion(
    defs: dg.Definitions, instance: dg.DagsterInstance, pipeline: Pipeline, first: date, last: date
) -> dict[str, Any]:
    """raw+features over first..last, then a model and a champion for `last` (promoted by hand if a gate refuses)."""
    features_s, _, _ = _execute_in_process(defs, instance, pipeline, ["raw", "features"], (first, last))
    model_s, model_run, rejected = _execute_in_process(
        defs, instance, pipeline, ["model", "champion"], (last, last), tolerate_gates=True
    )
    result: dict[str, Any] = {
        "history": f"{first}..{last}",
        "raw_features_s": round(features_s, 2),
        "model_champion_s": round(model_s, 2),
        "model_breakdown": run_breakdown(instance, model_run),
        **rusage_mb(),
    }
    if rejected:
        result["gate_rejections"] = [f"[{step}] {text}" for step, text in rejected]
        result["champion_forced"] = _force_champion(defs, instance, pipeline, last)
    return result


def worker_setup(args: Mapping[str, Any]) -> dict[str, Any]:
    """Untimed history: raw+features before the first measured day, then a model and a champion."""
    import dagster as dg

    defs, pipeline = _definitions()
    first, last = date.fromisoformat(args["first"]), date.fromisoformat(args["last"])
    return history_and_champion(defs, dg.DagsterInstance.get(), pipeline, first, last)


def worker_dagster_inprocess(args: Mapping[str, Any]) -> dict[str, Any]:
    """`execute_in_process` of raw+features+predictions over the range (imports done before the clock)."""
    import dagster as dg

    imports = preimport_heavy()
    defs, pipeline = _definitions()
    instance = dg.DagsterInstance.get()
    days = (date.fromisoformat(args["first"]), date.fromisoformat(args["last"]))
    elapsed, run_id, _ = _execute_in_process(
        defs, instance, pipeline, BACKFILL_STAGES, days, checks=bool(args["checks"])
    )
    return {
        "wall_s": round(elapsed, 2),
        "preimport_s": imports,
        "breakdown": run_breakdown(instance, run_id),
        **rusage_mb(),
    }


def execute_cli_equivalent(
    select: str, first: date, last: date, *, checks: bool = True
) -> tuple[dg.DagsterInstance, dg.ExecutionResult, float, float]:
    """What `dagster asset materialize -m platform_assets.definitions --select SELECT --partition-range FIRST...LAST`
    does, minus its single_run() guard: load the code location, build the implicit job, `execute_job` it (the
    definitions' executor: in-process locally). Returns the instance, the result and the seconds of the load and of
    the run."""
    started = time.perf_counter()
    import dagster as dg
    from dagster._core.origin import JobPythonOrigin
    from dagster._utils.hosted_user_process import recon_job_from_origin

    origin, repo = platform_code_location()
    keys = dg.AssetSelection.from_coercible(list(select.split(","))).resolve(repo.asset_graph)
    implicit = repo.get_implicit_job_def_for_assets(keys)
    if implicit is None:
        raise StageFailed("the selected assets do not share one partitions definition")
    recon = recon_job_from_origin(JobPythonOrigin(implicit.name, repository_origin=origin))
    instance = dg.DagsterInstance.get()
    tags = range_tags(first, last)
    loaded = time.perf_counter()
    if checks:
        result = dg.execute_job(recon, instance=instance, asset_selection=list(keys), tags=tags)
    else:
        subset = recon.get_subset(asset_selection=set(keys), asset_check_selection=set())
        result = dg.execute_job(subset, instance=instance, tags=tags)
    return instance, result, loaded - started, time.perf_counter() - loaded


def worker_dagster_cli(args: Mapping[str, Any]) -> dict[str, Any]:
    """The CLI-equivalent run of (a)'s selection over its range (`execute_cli_equivalent`); it must succeed."""
    first, last = date.fromisoformat(args["first"]), date.fromisoformat(args["last"])
    instance, result, load_s, execute_s = execute_cli_equivalent(
        args["select"], first, last, checks=bool(args["checks"])
    )
    if not result.success:
        failures = failure_messages(instance.all_logs(result.run_id))
        details = "\n".join(f"[{step}] {text}" for step, text in failures)
        raise StageFailed(f"CLI-equivalent run failed (run {result.run_id}):\n{details}")
    return {
        "load_s": round(load_s, 2),
        "execute_s": round(execute_s, 2),
        "breakdown": run_breakdown(instance, result.run_id),
        **rusage_mb(),
    }


def worker_latest_run(args: Mapping[str, Any]) -> dict[str, Any]:
    """Breakdown of the newest run in the instance (after the real `dagster asset materialize`)."""
    import dagster as dg

    instance = dg.DagsterInstance.get()
    runs = instance.get_runs(limit=1)
    if not runs:
        raise StageFailed("no run recorded")
    return {"breakdown": run_breakdown(instance, runs[0].run_id), "status": runs[0].status.value}


def worker_ray_connect(args: Mapping[str, Any]) -> dict[str, Any]:
    """What connecting a fresh process to the Ray head costs: plain `ray.init` or the platform's RayCluster."""
    timings: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 3)
        t = now

    if args["mode"] == "plain":
        import ray

        lap("import_ray")
        ray.init(address=os.environ["RAY_ADDRESS"], logging_level=logging.WARNING)
        lap("ray_init")

        @ray.remote
        def noop() -> int:
            return os.getpid()

        ray.get(noop.remote())
        lap("first_task")
        ray.get([noop.remote() for _ in range(4)])
        lap("next_4_tasks")
        ray.shutdown()
        lap("shutdown")
        import ray.data

        lap("import_ray_data")
    else:
        import dagster as dg

        from resources.compute import RayCluster

        lap("import_dagster_and_resource")
        import ray

        lap("import_ray")  # as in the plain mode: every step that uses Ray pays it, whatever connects
        with dg.build_resources({}):
            pass
        lap("dagster_setup_without_resources")  # what a step has already paid before it sets up its resources
        with dg.build_resources({"ray_cluster": RayCluster(address="auto")}):
            lap("resource_setup")  # the resource's connect: one ray.init
        lap("resource_teardown")
        timings["connected_after_teardown"] = float(ray.is_initialized())
    return {"mode": args["mode"], "seconds": timings, **rusage_mb()}


def worker_model_backfill(args: Mapping[str, Any]) -> dict[str, Any]:
    """Untimed raw+features for the history, then the timed part: one run of `model` over a range of days (a
    walk-forward backfill, as the UI or `--partition-range` launches it), then the champion."""
    import dagster as dg

    defs, pipeline = _definitions(args["pipeline"])
    instance = dg.DagsterInstance.get()
    features = (date.fromisoformat(args["features_first"]), date.fromisoformat(args["features_last"]))
    models = (date.fromisoformat(args["models_first"]), date.fromisoformat(args["models_last"]))
    features_s, _, _ = _execute_in_process(defs, instance, pipeline, ["raw", "features"], features)
    model_s, model_run, _ = _execute_in_process(defs, instance, pipeline, ["model"], models)
    champion_s, _, _ = _execute_in_process(defs, instance, pipeline, ["champion"], None)
    return {
        "features": f"{features[0]}..{features[1]}",
        "models": f"{models[0]}..{models[1]}",
        "partitions": (models[1] - models[0]).days + 1,
        "raw_features_s": round(features_s, 2),
        "model_backfill_s": round(model_s, 2),
        "champion_s": round(champion_s, 2),
        "model_breakdown": run_breakdown(instance, model_run),
        **rusage_mb(),
    }


def worker_backtest(args: Mapping[str, Any]) -> dict[str, Any]:
    """The backtest over a range of days in one run (each model loaded once), then the report: the platform's own
    out-of-sample figures, as its asset store and materialisations hold them."""
    import dagster as dg
    import pandas as pd

    from kernel.records import ModelRecord, Rejected

    defs, pipeline = _definitions(args["pipeline"])
    instance = dg.DagsterInstance.get()
    days = (date.fromisoformat(args["first"]), date.fromisoformat(args["last"]))
    backtest_s, backtest_run, _ = _execute_in_process(defs, instance, pipeline, ["backtest"], days)
    report_s, _, _ = _execute_in_process(defs, instance, pipeline, ["backtest_report"], None)
    store, _ = _resources(defs)
    event = instance.get_latest_materialization_event(pipeline.key("backtest"))
    scored = (
        {k: v.value for k, v in event.asset_materialization.metadata.items()}
        if event and event.asset_materialization
        else {}
    )
    report = instance.get_latest_materialization_event(pipeline.key("backtest_report"))
    figures = (
        {k: v.value for k, v in report.asset_materialization.metadata.items()}
        if report and report.asset_materialization
        else {}
    )
    table = store.read(pipeline.key("backtest_report"), None)
    models = store.read_many(
        pipeline.key("model"), [str(d) for d in day_range(days[0] - timedelta(days=1), days[1])], allow_missing=True
    )
    records = [ModelRecord.model_validate(v) for v in models.values() if not isinstance(v, Rejected)]
    in_range = table[(table["day"] >= pd.Timestamp(days[0])) & (table["day"] <= pd.Timestamp(days[1]))]
    return {
        "days": f"{days[0]}..{days[1]}",
        "backtest_s": round(backtest_s, 2),
        "report_s": round(report_s, 2),
        "backtest_breakdown": run_breakdown(instance, backtest_run),
        "days_scored": scored.get("days_scored"),
        "days_not_scored": scored.get("days_not_scored"),
        "not_scored_days": scored.get("not_scored_days"),
        "excluded_rows": scored.get("excluded_rows"),
        "models_loaded": scored.get("models_loaded"),
        "model_load_s": scored.get("model_load_s"),
        "out_of_sample_improvement": figures.get("out_of_sample_improvement"),
        "out_of_sample_mae": figures.get("out_of_sample_mae"),
        "out_of_sample_baseline_mae": figures.get("out_of_sample_baseline_mae"),
        "rolling_28d_improvement": {
            "min": float(in_range["improvement_28d"].min()),
            "max": float(in_range["improvement_28d"].max()),
        },
        "days_worse_than_baseline": int((in_range["improvement"] < 0).sum()),
        "in_window_improvement_mean": float(pd.Series([r.improvement_over_baseline for r in records]).mean()),
        "model_partitions": len(records),
        "model_partitions_rejected": len(models) - len(records),
        "families": {str(k): int(v) for k, v in pd.Series([r.family for r in records]).value_counts().items()},
        **rusage_mb(),
    }


def _median_seconds(action: Callable[[], object], repeats: int = 3) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return round(sorted(samples)[len(samples) // 2], 3)


def worker_fingerprints(args: Mapping[str, Any]) -> dict[str, Any]:
    """(e) Features for the range with their checks (untimed), then what fingerprints cost over those days."""
    import dagster as dg
    import pandas as pd
    import pyarrow as pa

    from kernel.names import GATES
    from resources.store import table_fingerprint
    from resources.verdicts import rejected_days

    defs, pipeline = _definitions()
    store, _ = _resources(defs)
    instance = dg.DagsterInstance.get()
    first, last = date.fromisoformat(args["first"]), date.fromisoformat(args["last"])
    build_s, _, _ = _execute_in_process(defs, instance, pipeline, ["raw", "features"], (first, last))
    key, days = pipeline.key("features"), [str(day) for day in day_range(first, last)]
    checks = list(GATES["features"])
    frames = {d: v for d, v in store.read_many(key, days, allow_missing=False).items() if isinstance(v, pd.DataFrame)}
    tables = [pa.Table.from_pandas(frame, preserve_index=False) for frame in frames.values()]  # as the write has
    fingerprints = store.fingerprints(key, days)
    rejected = rejected_days(instance, key, checks, fingerprints)
    seconds = {
        "load": _median_seconds(lambda: store.read_for_judging(key, days, allow_missing=False)),
        "load_without_fingerprints": _median_seconds(lambda: store.read_many(key, days, allow_missing=False)),
        "verdicts": _median_seconds(lambda: rejected_days(instance, key, checks, fingerprints)),
        "footers": _median_seconds(lambda: store.fingerprints(key, days)),
        "write": _median_seconds(lambda: [store.write(key, d, f) for d, f in frames.items()]),
        "hash": _median_seconds(lambda: [table_fingerprint(table) for table in tables]),
    }
    if store.fingerprints(key, days) != fingerprints:
        raise StageFailed("rewriting the same frames changed their fingerprints")
    return {
        "days": len(days),
        "frames": len(frames),
        "days_rejected": len(rejected),
        "build_raw_features_s": round(build_s, 2),
        "seconds": seconds,
        "shares": {
            "gate_of_load": round(seconds["verdicts"] / seconds["load"], 3),
            "footers_of_load": round(seconds["footers"] / seconds["load"], 3),
            "hash_of_write": round(seconds["hash"] / seconds["write"], 3),
        },
        **rusage_mb(),
    }


WORKERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "setup": worker_setup,
    "dagster_inprocess": worker_dagster_inprocess,
    "dagster_cli": worker_dagster_cli,
    "latest_run": worker_latest_run,
    "script": worker_script,
    "fresh_day": worker_fresh_day,
    "ray_connect": worker_ray_connect,
    "model_backfill": worker_model_backfill,
    "model_compute": worker_model_compute,
    "backtest": worker_backtest,
    "fingerprints": worker_fingerprints,
    "ingest_nth": worker_ingest_nth,
    "many_files": worker_many_files,
    "landing_first": worker_landing_first,
    "scale_stage": worker_scale_stage,
    "scale_champion": worker_scale_champion,
}


def worker_main(name: str, raw_args: str, out: Path) -> int:
    try:
        result = WORKERS[name](json.loads(raw_args))
    except StageFailed as exc:
        print(f"BENCHMARK STAGE FAILED: {exc}", file=sys.stderr, flush=True)
        return 3
    out.write_text(json.dumps(result, default=str))
    return 0
