"""Platform benchmarks: backfill vs a plain script (a), code-location load (b), one daily cycle (c).

    .venv/bin/python benchmarks/run.py                 # everything, 365-day backfill (~15 min on 2 cores)
    .venv/bin/python benchmarks/run.py --only b        # one section
    .venv/bin/python benchmarks/run.py --days 30 --only a,c

Every measurement runs in a fresh subprocess of this file (``--worker``), so peak RSS
(``ru_maxrss``) belongs to that measurement alone and import costs are explicit. The script
starts its own Ray head on free loopback ports and keeps all state (platform home, Dagster
home, spec copy) in a temporary directory; both are removed in ``finally``.

Results go to ``benchmarks/results/latest.json``; a failed run leaves ``latest.json`` alone,
writes what it measured to ``benchmarks/results/partial.tmp`` and exits non-zero.

This module's top level imports only the standard library: Dagster's multiprocess executor
starts step processes with ``spawn``, which re-imports ``__main__`` (this file) in every step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dagster as dg
    import pandas as pd
    import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
PIPELINE = "bike_bench"
SOURCE_SPEC = ROOT / "pipelines" / "bike_demand.yaml"
PARTITION_START = date(2011, 1, 1)
PARTITION_END = date(2013, 1, 1)  # exclusive
LAST_DAY = PARTITION_END - timedelta(days=1)
DEFAULT_CYCLE_DAY = date(2012, 6, 13)
BACKFILL_STAGES = ("raw", "features", "predictions")
CYCLE_STAGES = ("raw", "features", "model", "champion", "predictions")
HEAVY_MODULES = ("ray", "mlflow", "great_expectations", "sklearn", "kubernetes", "skops", "matplotlib", "dagster_k8s")
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
TARGETS = {"a_ratio_max": 1.3, "b_ratio_max": 1.2}
WORKER_TIMEOUT_S = 1800
MB = 1024 * 1024


class StageFailed(RuntimeError):
    """A measurement that did not complete; the message says which one and why."""


# --------------------------------------------------------------------------------------------
# Shared helpers (main process and workers)
# --------------------------------------------------------------------------------------------


def day_range(first: date, last: date) -> list[date]:
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def history_days(spec_doc: Mapping[str, Any]) -> int:
    """Days of features before a model partition (its training window) plus the raw look-back of those features."""
    features = spec_doc["features"]
    lags = list(features.get("target_lags_hours", []))
    min_lag = min(lags, default=24)
    rolling = [min_lag + int(r["window_hours"]) for r in features.get("rolling", [])]
    lookback_hours = max([*lags, *rolling, 0])
    return int(spec_doc["training"]["window_days"]) + math.ceil(lookback_hours / 24)


def rusage_mb() -> dict[str, float]:
    """Peak resident set of this process and of its largest waited-for child (Linux reports KiB)."""
    return {
        "self_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "children_maxrss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def range_tags(first: date, last: date) -> dict[str, str]:
    return {RANGE_START_TAG: str(first), RANGE_END_TAG: str(last)}


def stage_keys(stages: Sequence[str]) -> list[dg.AssetKey]:
    import dagster as dg

    return [dg.AssetKey([PIPELINE, stage]) for stage in stages]


def preimport_heavy() -> dict[str, float]:
    """Import what steps would import lazily, so a timed in-process section measures work, not imports."""
    import importlib

    seconds: dict[str, float] = {}
    for module in ("pandas", "pyarrow.parquet", "sklearn.ensemble", "mlflow.sklearn", "great_expectations", "ray"):
        started = time.perf_counter()
        importlib.import_module(module)
        seconds[module] = round(time.perf_counter() - started, 2)
    return seconds


def failure_messages(records: Sequence[Any]) -> list[tuple[str, str]]:
    """(step, message) of every step failure in a run's event log, with the user error's first lines."""
    messages = []
    for record in records:
        event = record.dagster_event
        if event is None or not event.is_step_failure:
            continue
        error = getattr(event.event_specific_data, "error", None)
        text = error.to_string() if error is not None else (record.message or "")
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith("  ")]
        messages.append((event.step_key or "run", "\n".join(lines[:8])))
    return messages


GATE_FAILURE = re.compile(r"blocking asset check failed|has not passed|Dependencies for step .* failed")


def gates_only(messages: Sequence[tuple[str, str]]) -> bool:
    """True when every step failure is a model gate rejecting a candidate (a product outcome, not an error)."""
    return bool(messages) and all(GATE_FAILURE.search(text) for _, text in messages)


# Event-log breakdown ------------------------------------------------------------------------


def _first(events: list[tuple[float, str]], kind: str) -> float | None:
    return next((t for t, k in events if k == kind), None)


def _last(events: list[tuple[float, str]], kind: str) -> float | None:
    found = [t for t, k in events if k == kind]
    return found[-1] if found else None


def _span(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 3)


def run_breakdown(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any]:
    """Where a run's time went, from its event log: per step and per phase, plus event counts."""
    records = instance.all_logs(run_id)
    run_record = instance.get_run_record_by_id(run_id)
    typed = [(r.timestamp, r.step_key, r.dagster_event_type.value) for r in records if r.dagster_event_type]
    run_events = [(t, k) for t, s, k in typed if s is None]
    run_start = _first(run_events, "PIPELINE_START")
    run_end = _first(run_events, "PIPELINE_SUCCESS") or _first(run_events, "PIPELINE_FAILURE")
    created = run_record.create_timestamp.timestamp() if run_record else None
    steps: dict[str, list[tuple[float, str]]] = {}
    for t, step, kind in typed:
        if step is not None:
            steps.setdefault(step, []).append((t, kind))
    per_step: dict[str, dict[str, Any]] = {}
    for step, events in steps.items():
        start = _first(events, "STEP_START")
        end = _last(events, "STEP_SUCCESS") or _last(events, "STEP_FAILURE")
        begin = _first(events, "STEP_WORKER_STARTING") or start  # *_PLANNED events belong to run creation
        if begin is None:
            continue
        inputs = _last(events, "STEP_INPUT")
        first_output = _first(events, "STEP_OUTPUT")
        first_mat = _first(events, "ASSET_MATERIALIZATION")
        handled = _last(events, "HANDLED_OUTPUT")
        last_check = _last(events, "ASSET_CHECK_EVALUATION")
        phases: dict[str, Any] = {
            "offset_s": _span(run_start, begin),
            "wall_s": _span(begin, end),
            "spawn_import_s": _span(_first(events, "STEP_WORKER_STARTING"), _first(events, "STEP_WORKER_STARTED")),
            "resource_init_s": _span(_first(events, "RESOURCE_INIT_STARTED"), _first(events, "RESOURCE_INIT_SUCCESS")),
            "before_step_start_s": _span(begin, start),
            "load_inputs_s": _span(start, inputs),
            "compute_s": _span(inputs or start, first_output) if last_check is None else _span(start, last_check),
            "write_outputs_s": _span(first_output, first_mat) if first_mat else _span(first_output, handled),
            "materialization_events_s": _span(first_mat, handled) if first_mat else None,
            "materializations": sum(1 for _, k in events if k == "ASSET_MATERIALIZATION"),
            "check_evaluations": sum(1 for _, k in events if k == "ASSET_CHECK_EVALUATION"),
        }
        per_step[step] = {k: v for k, v in phases.items() if v not in (None, 0)}
    counts = Counter(k for _, _, k in typed)
    resource_init = [
        _span(t, next((u for u, s2, k2 in typed if k2 == "RESOURCE_INIT_SUCCESS" and u >= t and s2 == s), None))
        for t, s, k in typed
        if k == "RESOURCE_INIT_STARTED" and s is None
    ]
    totals: dict[str, float] = {}
    for phases in per_step.values():
        for key, value in phases.items():
            if key.endswith("_s") and key not in ("offset_s", "wall_s", "before_step_start_s"):
                totals[key] = round(totals.get(key, 0.0) + float(value), 2)
    step_walls = sum(float(p.get("wall_s", 0.0)) for p in per_step.values())
    planned = [t for t, _, k in typed if k.endswith("_PLANNED")]
    return {
        "run_id": run_id,
        "create_to_start_s": _span(created, run_start),
        "sum_of_step_walls_s": round(step_walls, 2),
        "planned_events": len(planned),
        "create_to_last_planned_event_s": _span(created, max(planned)) if planned else None,
        "start_to_end_s": _span(run_start, run_end),
        "run_level_resource_init_s": round(sum(r for r in resource_init if r is not None), 2) or None,
        "events": len(records),
        "event_counts": dict(sorted(counts.items())),
        "steps": per_step,
        "totals": totals,
    }


# --------------------------------------------------------------------------------------------
# Workers: each runs in a fresh process with RAY_ADDRESS, PLATFORM_HOME, DAGSTER_HOME and
# PLATFORM_SPECS_DIR set by the main process, and returns a JSON-able dict.
# --------------------------------------------------------------------------------------------


def _definitions() -> dg.Definitions:
    from kernel.settings import Settings
    from platform_assets.definitions import build_definitions

    return build_definitions(Settings.from_environment())


def _execute_in_process(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    stages: Sequence[str],
    days: tuple[date, date] | None,
    *,
    checks: bool = True,
    tolerate_gates: bool = False,
) -> tuple[float, str, list[tuple[str, str]]]:
    """Run `stages` for the days in one in-process run: seconds, run id and (tolerated) gate failures."""
    job = defs.resolve_implicit_global_asset_job_def()
    keys = stage_keys(stages)
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


def _force_champion(defs: dg.Definitions, day: date) -> dict[str, Any]:
    """Promote the day's candidate although a gate rejected it: the backfill only needs *a* champion.

    Uses the platform's own store and registry calls, so predictions load it exactly as usual.
    """
    import dagster as dg

    from resources.storage import PartitionedParquetIOManager
    from resources.tracking import MlflowTracking

    resources = defs.resources or {}
    store, tracking = resources.get("io_manager"), resources.get("mlflow")
    if not isinstance(store, PartitionedParquetIOManager) or not isinstance(tracking, MlflowTracking):
        raise StageFailed("unexpected resource types; cannot promote a champion for the benchmark")
    record = store.read(dg.AssetKey([PIPELINE, "model"]), str(day))
    promotion = tracking.promote(PIPELINE, record["version"])
    value = {k: record[k] for k in ("model_name", "version", "mlflow_run_id", "model_uri", "partition")}
    store.write(
        dg.AssetKey([PIPELINE, "champion"]), None, {**value, "previous_champion": promotion["previous_champion"]}
    )
    return value


def worker_setup(args: Mapping[str, Any]) -> dict[str, Any]:
    """Untimed history: raw+features before the first measured day, then a model and a champion."""
    import dagster as dg

    defs = _definitions()
    instance = dg.DagsterInstance.get()
    first, last = date.fromisoformat(args["first"]), date.fromisoformat(args["last"])
    features_s, _, _ = _execute_in_process(defs, instance, ["raw", "features"], (first, last))
    model_s, model_run, rejected = _execute_in_process(
        defs, instance, ["model", "champion"], (last, last), tolerate_gates=True
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
        result["champion_forced"] = _force_champion(defs, last)
    return result


def worker_dagster_inprocess(args: Mapping[str, Any]) -> dict[str, Any]:
    """`execute_in_process` of raw+features+predictions over the range (imports done before the clock)."""
    import dagster as dg

    imports = preimport_heavy()
    defs = _definitions()
    instance = dg.DagsterInstance.get()
    days = (date.fromisoformat(args["first"]), date.fromisoformat(args["last"]))
    elapsed, run_id, _ = _execute_in_process(defs, instance, BACKFILL_STAGES, days, checks=bool(args["checks"]))
    return {
        "wall_s": round(elapsed, 2),
        "preimport_s": imports,
        "breakdown": run_breakdown(instance, run_id),
        **rusage_mb(),
    }


EXECUTOR_CONFIGS: dict[str, dict[str, Any] | None] = {
    "default": None,  # what `dagster asset materialize` and a daemon-launched backfill run use: multiprocess, spawn
    "in_process": {"execution": {"config": {"in_process": {}}}},
    "forkserver": {
        "execution": {
            "config": {
                "multiprocess": {"start_method": {"forkserver": {"preload_modules": ["platform_assets.definitions"]}}}
            }
        }
    },
}


def worker_dagster_cli(args: Mapping[str, Any]) -> dict[str, Any]:
    """What `dagster asset materialize -m platform_assets.definitions --partition-range` does, minus its
    single_run() guard: load the code location, build the implicit job, `execute_job` it (default executor)."""
    started = time.perf_counter()
    import dagster as dg
    from dagster._cli.workspace.cli_target import get_repository_python_origin_from_cli_opts
    from dagster._core.origin import JobPythonOrigin
    from dagster._utils.hosted_user_process import recon_job_from_origin, recon_repository_from_origin
    from dagster_shared.cli import PythonPointerOpts

    origin = get_repository_python_origin_from_cli_opts(
        PythonPointerOpts(
            python_file=None,
            module_name="platform_assets.definitions",
            package_name=None,
            working_directory=str(ROOT),
            attribute=None,
            autoload_defs_module_name=None,
        )
    )
    repo = recon_repository_from_origin(origin).get_definition()
    keys = dg.AssetSelection.from_coercible(list(args["select"].split(","))).resolve(repo.asset_graph)
    implicit = repo.get_implicit_job_def_for_assets(keys)
    if implicit is None:
        raise StageFailed("the selected assets do not share one partitions definition")
    recon = recon_job_from_origin(JobPythonOrigin(implicit.name, repository_origin=origin))
    instance = dg.DagsterInstance.get()
    tags = range_tags(date.fromisoformat(args["first"]), date.fromisoformat(args["last"]))
    run_config = EXECUTOR_CONFIGS[args["executor"]]
    loaded = time.perf_counter()
    if args["checks"]:
        result = dg.execute_job(recon, instance=instance, asset_selection=list(keys), tags=tags, run_config=run_config)
    else:
        subset = recon.get_subset(asset_selection=set(keys), asset_check_selection=set())
        result = dg.execute_job(subset, instance=instance, tags=tags, run_config=run_config)
    finished = time.perf_counter()
    if not result.success:
        failures = failure_messages(instance.all_logs(result.run_id))
        details = "\n".join(f"[{step}] {text}" for step, text in failures)
        raise StageFailed(f"CLI-equivalent run failed (run {result.run_id}):\n{details}")
    return {
        "load_s": round(loaded - started, 2),
        "execute_s": round(finished - loaded, 2),
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


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), str(path))


def worker_script(args: Mapping[str, Any]) -> dict[str, Any]:
    """The same compute as a plain script: read+normalise+split, features per day, predict per day, write parquet.

    `warm`: heavy imports happen before the clock (compare with `execute_in_process`); otherwise the
    main process times the whole subprocess (compare with the CLI-equivalent run).
    """
    clock_start = time.perf_counter()
    imports = preimport_heavy() if args["warm"] else {}
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        phases[name] = round(phases.get(name, 0.0) + now - since, 3)
        return now

    import pandas as pd

    from kernel.settings import Settings
    from kernel.spec import load_spec
    from ml import features as feature_fns
    from ml import ingest, training

    settings = Settings.from_environment()
    spec = load_spec(settings.specs_dir / f"{PIPELINE}.yaml")
    first, last = date.fromisoformat(args["first"]), date.fromisoformat(args["last"])
    days = day_range(first, last)
    lookback = -(-spec.features.lookback_hours // 24)
    out = Path(args["out_dir"])
    use_ray = args["mode"] == "ray"
    t = lap("imports", started)

    files = ingest.list_source_files(spec.source.uri, settings.root)
    frame = pd.concat(
        [ingest.normalise(ingest.read_source_file(f.path, spec, settings.root), spec, f.path).frame for f in files],
        ignore_index=True,
    )
    raw = ingest.split_days(frame, day_range(first - timedelta(days=lookback), last), spec)
    t = lap("read_normalise_split", t)
    for day in days:
        _write_parquet(raw[str(day)], out / "raw" / f"{day}.parquet")
    t = lap("write", t)

    def window(day: date) -> pd.DataFrame:
        keys = [str(day - timedelta(days=k)) for k in range(lookback, -1, -1)]
        return pd.concat([raw[k] for k in keys if k in raw], ignore_index=True)

    if use_ray:
        import ray

        from resources.compute import ray_map

        ray.init(address=os.environ["RAY_ADDRESS"], logging_level=logging.WARNING)
        t = lap("ray_connect", t)
        feature_results = ray_map(
            feature_fns.build_features, [(window(d), d, spec) for d in days], num_cpus=spec.compute.ray_cpus_per_task
        )
    else:
        feature_results = [feature_fns.build_features(window(d), d, spec) for d in days]
    features = {str(d): r.frame for d, r in zip(days, feature_results, strict=True)}
    t = lap("features", t)
    for day in days:
        _write_parquet(features[str(day)], out / "features" / f"{day}.parquet")
    t = lap("write", t)

    import mlflow.sklearn

    t = lap("import_mlflow", t)
    champion = json.loads((settings.home / "assets" / PIPELINE / "champion" / "__all__.json").read_text())
    mlflow.set_tracking_uri(settings.state.tracking_uri)
    mlflow.set_registry_uri(settings.state.tracking_uri)
    model = mlflow.sklearn.load_model(champion["model_uri"])
    lineage = {
        "model_name": champion["model_name"],
        "model_version": str(champion["version"]),
        "mlflow_run_id": champion["mlflow_run_id"],
    }
    t = lap("load_model", t)
    if use_ray:
        from resources.compute import ray_map

        predictions = ray_map(
            training.predict_day,
            [(model, features[str(d)], spec, lineage) for d in days],
            num_cpus=spec.compute.ray_cpus_per_task,
        )
    else:
        predictions = [training.predict_day(model, features[str(d)], spec, lineage) for d in days]
    t = lap("predict", t)
    for day, frame_ in zip(days, predictions, strict=True):
        _write_parquet(frame_, out / "predictions" / f"{day}.parquet")
    t = lap("write", t)
    if use_ray:
        import ray

        ray.shutdown()
        lap("ray_shutdown", t)
    finished = time.perf_counter()
    return {
        "wall_s": round(finished - started, 2),
        "in_process_total_s": round(finished - clock_start, 2),
        "compute_only_s": round(finished - started - phases.get("write", 0.0), 2),
        "preimport_s": imports,
        "phases": phases,
        "rows": {"features": sum(len(f) for f in features.values()), "predictions": sum(len(p) for p in predictions)},
        **rusage_mb(),
    }


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
        with dg.build_resources({"ray_cluster": RayCluster(address="auto")}):
            lap("resource_setup")  # ray.init + Ray Data options applied locally and in one remote task
        lap("resource_teardown")
    return {"mode": args["mode"], "seconds": timings, **rusage_mb()}


def worker_cycle(args: Mapping[str, Any]) -> dict[str, Any]:
    """One new day through every stage, one in-process run per stage, as automation would request them."""
    import dagster as dg

    clock = time.perf_counter()
    imports = preimport_heavy()
    defs = _definitions()
    instance = dg.DagsterInstance.get()
    ready = time.perf_counter()
    day = date.fromisoformat(args["day"])
    stages: dict[str, Any] = {}
    for stage in CYCLE_STAGES:
        days = None if stage == "champion" else (day, day)
        elapsed, run_id, rejected = _execute_in_process(
            defs, instance, [stage], days, tolerate_gates=stage in ("model", "champion")
        )
        breakdown = run_breakdown(instance, run_id)
        stages[stage] = {
            "wall_s": round(elapsed, 2),
            "outcome": "gate rejected the candidate" if rejected else "success",
            "checks": breakdown["event_counts"].get("ASSET_CHECK_EVALUATION", 0),
            "steps": breakdown["steps"],
            "run_level_resource_init_s": breakdown["run_level_resource_init_s"],
        }
    finished = time.perf_counter()
    model = json.loads(Path(args["model_record"]).read_text()) if Path(args["model_record"]).exists() else {}
    return {
        "day": str(day),
        "imports_and_load_s": round(ready - clock, 2),
        "preimport_s": imports,
        "stages": stages,
        "stages_total_s": round(finished - ready, 2),
        "total_s": round(finished - clock, 2),
        "model_family": model.get("family"),
        **rusage_mb(),
    }


WORKERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "setup": worker_setup,
    "dagster_inprocess": worker_dagster_inprocess,
    "dagster_cli": worker_dagster_cli,
    "latest_run": worker_latest_run,
    "script": worker_script,
    "cycle": worker_cycle,
    "ray_connect": worker_ray_connect,
}


def worker_main(name: str, raw_args: str, out: Path) -> int:
    try:
        result = WORKERS[name](json.loads(raw_args))
    except StageFailed as exc:
        print(f"BENCHMARK STAGE FAILED: {exc}", file=sys.stderr, flush=True)
        return 3
    out.write_text(json.dumps(result, default=str))
    return 0


# --------------------------------------------------------------------------------------------
# Main process: Ray head, temp state, sampling, sections, report
# --------------------------------------------------------------------------------------------


def _is_ray_worker(process: psutil.Process) -> bool:
    cmdline = process.cmdline()
    return bool(cmdline) and (cmdline[0].startswith("ray::") or any("default_worker.py" in c for c in cmdline))


class ProcessSampler:
    """Peak RSS of a measured process tree and of the Ray workers, and the CPU time the Ray workers used,
    sampled from outside every 0.5 s (Ray workers are children of the raylet, not of the measured process)."""

    def __init__(self, root_pid: int, ray_head_pid: int | None, interval: float = 0.5) -> None:
        self.root_pid, self.ray_head_pid, self.interval = root_pid, ray_head_pid, interval
        self.peaks: dict[str, float] = {"tree_sum_mb": 0.0, "tree_max_mb": 0.0, "ray_workers_sum_mb": 0.0}
        self.peaks["ray_worker_max_mb"] = 0.0
        self.ray_cpu: dict[int, list[float]] = {}  # pid -> [cpu seconds at the window start, last seen]
        self.tree_cpu: dict[int, float] = {}  # pid -> last seen cpu seconds (catches children nobody waits for)
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()

    def _rss(self, processes: list[psutil.Process]) -> list[float]:
        import psutil

        values = []
        for process in processes:
            with contextlib.suppress(psutil.Error):
                values.append(process.memory_info().rss / MB)
        return values

    def _sample(self) -> None:
        import psutil

        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.root_pid)
            members = [root, *root.children(recursive=True)]
            for process in members:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    self.tree_cpu[process.pid] = times.user + times.system
            tree = self._rss(members)
            if tree:
                self.peaks["tree_sum_mb"] = max(self.peaks["tree_sum_mb"], sum(tree))
                self.peaks["tree_max_mb"] = max(self.peaks["tree_max_mb"], *tree)
        if self.ray_head_pid is None:
            return
        with contextlib.suppress(psutil.Error):
            workers = []
            for process in psutil.Process(self.ray_head_pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if _is_ray_worker(process):
                        workers.append(process)
                        times = process.cpu_times()
                        cpu = times.user + times.system
                        if process.pid not in self.ray_cpu:
                            baseline = 0.0 if process.create_time() >= self.started else cpu
                            self.ray_cpu[process.pid] = [baseline, cpu]
                        self.ray_cpu[process.pid][1] = cpu
            rss = self._rss(workers)
            if rss:
                self.peaks["ray_workers_sum_mb"] = max(self.peaks["ray_workers_sum_mb"], sum(rss))
                self.peaks["ray_worker_max_mb"] = max(self.peaks["ray_worker_max_mb"], *rss)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def summary(self) -> dict[str, float | int]:
        ray_cpu = sum(last - first for first, last in self.ray_cpu.values())
        return {
            **{k: round(v, 1) for k, v in self.peaks.items()},
            "ray_workers_seen": len(self.ray_cpu),
            "ray_workers_cpu_s": round(ray_cpu, 2),
            "tree_cpu_sampled_s": round(sum(self.tree_cpu.values()), 2),
        }


@dataclass
class Measured:
    """One measured subprocess: exit code, wall seconds, CPU seconds, sampled peaks and its log."""

    code: int
    wall_s: float
    cpu_s: float
    sampled: dict[str, float | int]
    log: Path


@dataclass
class Bench:
    """Temp state, the Ray head and the spec copy every measurement shares."""

    tmp: Path
    specs_dir: Path
    spec_doc: dict[str, Any]
    ray_address: str = ""
    ray_head_pid: int | None = None
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.logs = self.tmp / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def home(self, name: str) -> tuple[Path, Path]:
        """A platform home and a Dagster home (minimal dagster.yaml) for one section."""
        home = self.tmp / f"home_{name}"
        dagster_home = self.tmp / f"dagster_home_{name}"
        for path in (home, dagster_home):
            path.mkdir(parents=True, exist_ok=True)
        (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        return home, dagster_home

    def env(self, home: Path | None = None, dagster_home: Path | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "RAY_AUTH_MODE": "disabled",
                "RAY_USAGE_STATS_ENABLED": "0",
                # devtools.stack.RAY_LOOPBACK_ENV: the head is loopback-only, drivers must agree to reach it.
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "PLATFORM_ENV": "local",
                "PLATFORM_ROOT": str(ROOT),
                "PLATFORM_SPECS_DIR": str(self.specs_dir),
                "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            }
        )
        if self.ray_address:
            env["RAY_ADDRESS"] = self.ray_address
        if home is not None:
            env["PLATFORM_HOME"] = str(home)
        if dagster_home is not None:
            env["DAGSTER_HOME"] = str(dagster_home)
        return env

    def run(self, label: str, command: list[str], env: Mapping[str, str], *, check: bool = True) -> Measured:
        """Run a measured subprocess and wait for it (CPU time from the rusage of waited-for children)."""
        log = self.logs / f"{label}.log"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with log.open("wb") as handle:
            started = time.perf_counter()
            process = subprocess.Popen(command, env=dict(env), cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
            with ProcessSampler(process.pid, self.ray_head_pid) as sampler:
                try:
                    code = process.wait(timeout=WORKER_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                    raise StageFailed(f"{label}: timed out after {WORKER_TIMEOUT_S}s (log: {log})") from None
            wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        waited = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        # rusage misses children the measured process never waits for (forkserver workers); sampling misses
        # processes shorter than the interval: take the larger.
        cpu = max(waited, float(sampler.summary()["tree_cpu_sampled_s"]))
        if check and code != 0:
            raise StageFailed(f"{label}: exited with code {code} (log: {log}):\n{tail(log)}")
        return Measured(code, wall, cpu, sampler.summary(), log)

    def worker(self, label: str, name: str, args: Mapping[str, Any], home: Path, dagster_home: Path) -> dict[str, Any]:
        out = self.tmp / f"{label}.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", name]
        command += ["--worker-args", json.dumps(args), "--worker-out", str(out)]
        print(f"  · {label} ...", end="", flush=True)
        load_before = os.getloadavg()[0]
        measured = self.run(label, command, self.env(home, dagster_home))
        result: dict[str, Any] = json.loads(out.read_text())
        result["process_wall_s"] = round(measured.wall_s, 2)
        result["process_cpu_s"] = round(measured.cpu_s, 2)
        result["cpu_incl_ray_workers_s"] = round(measured.cpu_s + float(measured.sampled["ray_workers_cpu_s"]), 2)
        result["sampled_rss"] = measured.sampled
        result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        print(f" {measured.wall_s:.1f}s wall, {result['cpu_incl_ray_workers_s']:.1f}s CPU", flush=True)
        return result


def tail(path: Path, lines: int = 25) -> str:
    """The worker's own failure message if it wrote one, else the end of its log."""
    text = path.read_text(errors="replace")
    marker = "BENCHMARK STAGE FAILED: "
    if marker in text:
        return text[text.rindex(marker) + len(marker) :].strip()
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def ray_head(bench: Bench) -> Iterator[None]:
    """One Ray head on free loopback ports, stopped (with its whole process tree) on exit."""
    import psutil

    from devtools.stack import Ports, pick_ports, ray_head_command, stop, wait_for_port

    ports = pick_ports(Ports(dagster=0, mlflow=0, ray=6680, ray_dashboard=8565, ray_client=9301, ray_agent=52665))
    log = (bench.logs / "ray_head.log").open("ab")
    env = bench.env()
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        ray_head_command(ports, cpus=os.cpu_count() or 2),
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdout=log,
        stderr=log,
    )
    try:
        started = time.perf_counter()
        try:
            wait_for_port(ports.ray_dashboard, "ray", head, timeout=120)
        except SystemExit as exc:
            raise StageFailed(f"Ray head did not start: {exc} (log: {bench.logs / 'ray_head.log'})") from None
        bench.ray_address, bench.ray_head_pid = f"127.0.0.1:{ports.ray}", head.pid
        print(f"Ray head at {bench.ray_address} (pid {head.pid}) up in {time.perf_counter() - started:.1f}s")
        yield
    finally:
        bench.ray_address, bench.ray_head_pid = "", None
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(head.pid)
            stop([parent, *parent.children(recursive=True)])
        log.close()


# Sections -----------------------------------------------------------------------------------


def summarise(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of repeated runs of one measure; the run closest to the median is kept in full.

    `cold`: the whole fresh process, timed from outside (what a user waits for).
    `warm`: the worker's timed section after imports (in-process figures).
    """
    walls = [float(e["process_wall_s"] if kind == "cold" else e["wall_s"]) for e in entries]
    cpus = [float(e["cpu_incl_ray_workers_s"]) for e in entries]
    median = statistics.median(walls)
    closest = min(range(len(entries)), key=lambda i: abs(walls[i] - median))
    return {
        "kind": kind,
        "wall_s": round(median, 2),
        "wall_samples_s": walls,
        "cpu_s": round(statistics.median(cpus), 2),
        "cpu_samples_s": cpus,
        "peak_rss_mb": max(max(e["self_maxrss_mb"], e["children_maxrss_mb"]) for e in entries),
        "peak_ray_workers_rss_mb": max(float(e["sampled_rss"]["ray_workers_sum_mb"]) for e in entries),
        "median_run": entries[closest],
    }


def section_a(bench: Bench, days: int, variants: bool, repeats: int) -> dict[str, Any]:
    first = LAST_DAY - timedelta(days=days - 1)
    history = history_days(bench.spec_doc)
    setup_first = first - timedelta(days=history)
    if setup_first < PARTITION_START:
        raise StageFailed(f"--days {days} leaves no room for {history} days of history before the range")
    last = LAST_DAY
    home, dagster_home = bench.home("a")
    span = {"first": str(first), "last": str(last)}
    print(f"(a) backfill of {days} partitions {first}..{last}, history {setup_first}..{first - timedelta(days=1)}")
    result: dict[str, Any] = {"range": {**span, "partitions": days}, "repeats": repeats}
    result["setup"] = bench.worker(
        "a_setup", "setup", {"first": str(setup_first), "last": str(first - timedelta(days=1))}, home, dagster_home
    )

    select = ",".join(f"{PIPELINE}/{s}" for s in BACKFILL_STAGES)
    cli = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "platform_assets.definitions"]
    cli += ["--select", select, "--partition-range", f"{first}...{last}"]
    print("  · a_cli_real (dagster asset materialize --partition-range) ...", end="", flush=True)
    measured = bench.run("a_cli_real", cli, bench.env(home, dagster_home), check=False)
    cli_guard = r"Partition ranges with the CLI require.*?single_run\(\) policy\."
    guard = re.search(cli_guard, measured.log.read_text(errors="replace"))
    real: dict[str, Any] = {
        "command": " ".join(cli[1:]),
        "exit_code": measured.code,
        "wall_s": round(measured.wall_s, 2),
    }
    if measured.code == 0:
        real["sampled_rss"] = measured.sampled
        real |= bench.worker("a_cli_real_breakdown", "latest_run", {}, home, dagster_home)
    else:
        real["error"] = guard.group(0) if guard else tail(measured.log, 5)
    print(f" exit {measured.code} in {measured.wall_s:.1f}s")
    result["cli_real"] = real

    cli_args = {**span, "select": select, "checks": True, "executor": "default"}
    # (name, group, worker, args, kind, repeated?)
    measures: list[tuple[str, str, str, dict[str, Any], str, bool]] = [
        ("cli_checks", "dagster", "dagster_cli", cli_args, "cold", True),
        ("script_cold_sequential", "script", "script", {**span, "mode": "sequential", "warm": False}, "cold", True),
        ("inprocess_checks", "dagster", "dagster_inprocess", {**span, "checks": True}, "warm", True),
        ("script_warm_sequential", "script", "script", {**span, "mode": "sequential", "warm": True}, "warm", True),
        ("cli_no_checks", "dagster", "dagster_cli", {**cli_args, "checks": False}, "cold", False),
        ("script_cold_ray", "script", "script", {**span, "mode": "ray", "warm": False}, "cold", False),
        ("inprocess_no_checks", "dagster", "dagster_inprocess", {**span, "checks": False}, "warm", False),
        ("script_warm_ray", "script", "script", {**span, "mode": "ray", "warm": True}, "warm", False),
    ]
    if variants:  # the same run with other executors (run config only, no platform change)
        for executor in ("in_process", "forkserver"):
            args = {**cli_args, "executor": executor}
            measures.append((f"cli_checks_{executor}_executor", "dagster", "dagster_cli", args, "cold", False))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in measures}
    rounds = [[m for m in measures if m[5]] for _ in range(repeats)]  # interleaved against load drift
    rounds[0] += [m for m in measures if not m[5]]
    for index, measures_of_round in enumerate(rounds):
        for name, _, worker, args, _, _ in measures_of_round:
            out_dir = bench.tmp / f"script_out_{name}"
            worker_args = {**args, "out_dir": str(out_dir)} if worker == "script" else args
            runs[name].append(bench.worker(f"a_{name}_{index}", worker, worker_args, home, dagster_home))
            shutil.rmtree(out_dir, ignore_errors=True)
    result["dagster"] = {n: summarise(k, runs[n]) for n, g, _, _, k, _ in measures if g == "dagster"}
    result["script"] = {n: summarise(k, runs[n]) for n, g, _, _, k, _ in measures if g == "script"}
    result["ray_connect"] = {
        mode: bench.worker(f"a_ray_connect_{mode}", "ray_connect", {"mode": mode}, home, dagster_home)
        for mode in ("plain", "platform_resource")
    }
    dagster, script = result["dagster"], result["script"]

    def ratio(a: str, b: str, metric: str = "wall_s") -> float:
        return round(float(dagster[a][metric]) / float(script[b][metric]), 2)

    ratios = {
        "cli_checks_vs_script_cold_sequential": ratio("cli_checks", "script_cold_sequential"),
        "cli_checks_vs_script_cold_ray": ratio("cli_checks", "script_cold_ray"),
        "cli_no_checks_vs_script_cold_sequential": ratio("cli_no_checks", "script_cold_sequential"),
        "inprocess_checks_vs_script_warm_sequential": ratio("inprocess_checks", "script_warm_sequential"),
        "inprocess_no_checks_vs_script_warm_sequential": ratio("inprocess_no_checks", "script_warm_sequential"),
        "inprocess_checks_vs_script_warm_ray": ratio("inprocess_checks", "script_warm_ray"),
        "cpu_cli_checks_vs_script_cold_sequential": ratio("cli_checks", "script_cold_sequential", "cpu_s"),
    }
    for name in ("cli_checks_in_process_executor", "cli_checks_forkserver_executor"):
        if name in dagster:
            ratios[f"{name}_vs_script_cold_sequential"] = ratio(name, "script_cold_sequential")
    result["ratios"] = ratios
    headline = ratios["cli_checks_vs_script_cold_sequential"]
    result["headline"] = {
        "measure": "CLI-equivalent run (fresh process, default multiprocess executor, checks included) / plain "
        "script (fresh process, sequential pandas, same outputs written), medians of wall time",
        "ratio": headline,
        "target": TARGETS["a_ratio_max"],
        "meets_target": headline <= TARGETS["a_ratio_max"],
    }
    return result


LOAD_SNIPPET = """
import json, sys
from kernel.settings import Settings
from platform_assets.definitions import build_definitions
defs = build_definitions(Settings.from_environment())
graph = defs.resolve_asset_graph()
defs.resolve_implicit_global_asset_job_def()
defs.get_repository_def()
heavy = sorted(m for m in HEAVY if m in sys.modules)
print("BENCH " + json.dumps({"assets": len(graph.get_all_asset_keys()), "checks": len(graph.asset_check_keys),
                             "heavy_imported": heavy, "modules": len(sys.modules)}))
"""


def _import_offenders(stderr: str, top: int = 10) -> list[dict[str, Any]]:
    """Import time by top-level package (sum of `self` times), from `python -X importtime`."""
    totals: dict[str, float] = {}
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+)\s+\|\s+\d+\s+\|\s*(\S+)", line)
        if match:
            package = match.group(2).split(".")[0]
            totals[package] = totals.get(package, 0.0) + int(match.group(1)) / 1e6
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [{"package": name, "self_s": round(seconds, 3)} for name, seconds in ranked]


def section_b(bench: Bench, repeats: int) -> dict[str, Any]:
    home, dagster_home = bench.home("b")
    env = bench.env(home, dagster_home)
    snippet = f"HEAVY = {list(HEAVY_MODULES)!r}\n{LOAD_SNIPPET}"
    commands = {"import_dagster": [sys.executable, "-c", "import dagster"], "load_code_location": []}
    commands["load_code_location"] = [sys.executable, "-c", snippet]
    print(f"(b) code-location load vs bare `import dagster`, median of {repeats} (after one warm-up each)")
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for name, command in commands.items():
        bench.run(f"b_{name}_warmup", command, env)
    for index in range(repeats):  # interleaved, so drift in machine load hits both alike
        for name, command in commands.items():
            samples[name].append(round(bench.run(f"b_{name}_{index}", command, env).wall_s, 3))
    log = (bench.logs / f"b_load_code_location_{repeats - 1}.log").read_text()
    loaded = json.loads(next(line for line in log.splitlines() if line.startswith("BENCH "))[6:])
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", snippet],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratio = medians["load_code_location"] / medians["import_dagster"]
    heavy = loaded["heavy_imported"]
    result = {
        "repeats": repeats,
        "samples_s": samples,
        "median_s": {k: round(v, 3) for k, v in medians.items()},
        "ratio": round(ratio, 2),
        "target": TARGETS["b_ratio_max"],
        "meets_target": ratio <= TARGETS["b_ratio_max"],
        "loaded": loaded,
        "heavy_modules_checked": list(HEAVY_MODULES),
        "heavy_modules_absent": not heavy,
        "import_offenders": _import_offenders(traced.stderr),
        "pythondontwritebytecode": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
    }
    print(f"  · medians {result['median_s']} ratio {ratio:.2f}; heavy imported: {heavy or 'none'}")
    return result


def section_c(bench: Bench, day: date) -> dict[str, Any]:
    history = history_days(bench.spec_doc)
    home, dagster_home = bench.home("c")
    previous = day - timedelta(days=1)
    first = day - timedelta(days=history)
    if first < PARTITION_START or day > LAST_DAY:
        raise StageFailed(f"--cycle-day {day} needs {history} days of history inside {PARTITION_START}..{LAST_DAY}")
    print(f"(c) daily cycle for {day} (history {first}..{previous}, champion from {previous})")
    setup = bench.worker("c_setup", "setup", {"first": str(first), "last": str(previous)}, home, dagster_home)
    record = home / "assets" / PIPELINE / "model" / f"{day}.json"
    cycle = bench.worker("c_cycle", "cycle", {"day": str(day), "model_record": str(record)}, home, dagster_home)
    return {"setup": setup, **cycle}


# Report -------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import psutil

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = ["dagster", "dagster-ray", "ray", "pandas", "pyarrow", "scikit-learn", "mlflow", "great-expectations"]
    found = {}
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def _git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    return None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


STEP_PHASES = (
    "wall_s",
    "spawn_import_s",
    "resource_init_s",
    "load_inputs_s",
    "compute_s",
    "write_outputs_s",
    "materialization_events_s",
)


def step_table(breakdown: Mapping[str, Any]) -> list[list[str]]:
    steps = sorted(breakdown["steps"].items(), key=lambda kv: kv[1].get("offset_s", 0.0))
    return [[step, *(_fmt(phases.get(k)) for k in STEP_PHASES)] for step, phases in steps]


def print_report(report: Mapping[str, Any]) -> None:
    from tabulate import tabulate

    figures = report["figures"]
    if "a" in figures:
        a = figures["a"]
        rows = []
        for group in ("dagster", "script"):
            for name, entry in a.get(group, {}).items():
                rows.append(
                    [
                        f"{group}: {name}",
                        entry["kind"],
                        _fmt(entry["wall_s"]),
                        " ".join(f"{w:.1f}" for w in entry["wall_samples_s"]),
                        _fmt(entry["cpu_s"]),
                        _fmt(entry["peak_rss_mb"]),
                        _fmt(entry["peak_ray_workers_rss_mb"]),
                    ]
                )
        print(f"\n(a) backfill {a['range']['first']}..{a['range']['last']} ({a['range']['partitions']} partitions)")
        headers = ["measure", "kind", "wall s (median)", "samples", "CPU s", "peak RSS MB", "Ray workers MB"]
        print(tabulate(rows, headers=headers))
        print(
            "  cold = the whole fresh process timed from outside; warm = the timed section after imports.\n"
            "  CPU = the process tree plus Ray workers; peak RSS = ru_maxrss of the process or its largest child."
        )
        print(tabulate([[k, v] for k, v in a["ratios"].items()], headers=["ratio", "x"]))
        head = a["headline"]
        verdict = "OK" if head["meets_target"] else "MISS"
        print(f"  headline ratio {head['ratio']} (target <= {head['target']}): {verdict}")
        print(f"  real CLI: exit {a['cli_real']['exit_code']}: {a['cli_real'].get('error', 'ran')}")
        step_headers = ["step", "wall", "spawn+import", "resources", "inputs", "compute", "write", "mat. events"]
        for name in ("cli_checks", "cli_checks_in_process_executor", "inprocess_checks"):
            if name not in a["dagster"]:
                continue
            breakdown = a["dagster"][name]["median_run"]["breakdown"]
            print(f"\n  where the time goes: {name} (Dagster event log of the median run)")
            print(tabulate(step_table(breakdown), headers=step_headers))
            print(
                f"  run created -> started {breakdown['create_to_start_s']}s (of which "
                f"{breakdown['create_to_last_planned_event_s']}s until the last of {breakdown['planned_events']} "
                f"planned events); started -> finished "
                f"{breakdown['start_to_end_s']}s; steps summed {breakdown['sum_of_step_walls_s']}s; "
                f"{breakdown['events']} events"
            )
        for mode, probe in a.get("ray_connect", {}).items():
            print(f"  Ray connect from a fresh process ({mode}): {probe['seconds']}")
        for name in ("script_cold_sequential", "script_warm_ray"):
            print(f"  plain script phases ({name}):", a["script"][name]["median_run"]["phases"])
    if "b" in figures:
        b = figures["b"]
        print("\n(b) code-location load")
        rows = [[k, v, b["samples_s"][k]] for k, v in b["median_s"].items()]
        print(tabulate(rows, headers=["process", "median s", "samples s"]))
        print(f"  ratio {b['ratio']} (target <= {b['target']}): {'OK' if b['meets_target'] else 'MISS'}")
        print(f"  heavy modules imported by the load: {b['loaded']['heavy_imported'] or 'none'}")
        print("  top imports:", ", ".join(f"{o['package']} {o['self_s']}s" for o in b["import_offenders"][:6]))
    if "c" in figures:
        c = figures["c"]
        print(f"\n(c) daily cycle for {c['day']}")
        rows = [["imports + code location", c["imports_and_load_s"], ""]]
        rows += [[stage, s["wall_s"], s["checks"]] for stage, s in c["stages"].items()]
        rows += [["stages total", c["stages_total_s"], ""], ["total", c["total_s"], ""]]
        print(tabulate(rows, headers=["stage (one in-process run each)", "wall s", "check evaluations"]))
        rss = c["sampled_rss"]
        print(
            f"  peak RSS: process {c['self_maxrss_mb']} MB (ru_maxrss); Ray workers max {rss['ray_worker_max_mb']} MB "
            f"each, {rss['ray_workers_sum_mb']} MB together ({rss['ray_workers_seen']} workers seen)"
        )


def write_report(report: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(report, indent=1, sort_keys=False, default=str) + "\n")
    temporary.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="a,b,c", help="comma-separated sections: a (backfill), b (load), c (cycle)")
    parser.add_argument("--days", type=int, default=365, help="partitions in the (a) backfill (default 365)")
    parser.add_argument("--repeats", type=int, default=5, help="(b) subprocess runs per command (median)")
    parser.add_argument("--a-repeats", type=int, default=3, help="(a) runs of the four headline measures (median)")
    parser.add_argument("--cycle-day", type=date.fromisoformat, default=DEFAULT_CYCLE_DAY, help="(c) the new day")
    parser.add_argument("--no-variants", action="store_true", help="(a) skip the in_process/forkserver executor runs")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temp dir (state and logs) for debugging")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.worker not in WORKERS or args.worker_out is None:
            parser.error(f"unknown worker {args.worker!r}")
        return worker_main(args.worker, args.worker_args, args.worker_out)

    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := sorted(set(sections) - {"a", "b", "c"}):
        parser.error(f"unknown section(s) {unknown}; choose from a, b, c")
    if args.days < 1 or args.repeats < 1 or args.a_repeats < 1:
        parser.error("--days, --repeats and --a-repeats must be positive")

    import yaml

    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    tmp = Path(tempfile.mkdtemp(prefix="platform-bench-"))
    spec_doc = yaml.safe_load(SOURCE_SPEC.read_text())
    spec_doc["name"] = PIPELINE
    spec_doc["partitioning"] = {
        "start_date": PARTITION_START,
        "end_date": PARTITION_END,
        "rebase_to_yesterday": False,
    }
    specs_dir = tmp / "specs"
    specs_dir.mkdir()
    (specs_dir / f"{PIPELINE}.yaml").write_text(yaml.safe_dump(spec_doc, sort_keys=False))
    bench = Bench(tmp=tmp, specs_dir=specs_dir, spec_doc=spec_doc)
    report: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "machine": machine_info(),
        "versions": versions(),
        "config": {
            "sections": sections,
            "days": args.days,
            "pipeline": PIPELINE,
            "spec": f"{SOURCE_SPEC.relative_to(ROOT)} renamed {PIPELINE}, partitions "
            f"{PARTITION_START}..{PARTITION_END} (end exclusive), rebase_to_yesterday false",
            "dagster_yaml": "telemetry disabled only (default run launcher, sqlite storage)",
            "ray_head_cpus": os.cpu_count(),
        },
        "targets": TARGETS,
        "figures": {},
    }
    started = time.perf_counter()
    code = 0
    try:
        print(f"benchmarks: sections {','.join(sections)}; temp dir {tmp}")
        with ray_head(bench):
            if "a" in sections:
                report["figures"]["a"] = section_a(
                    bench, args.days, variants=not args.no_variants, repeats=args.a_repeats
                )
            if "b" in sections:
                report["figures"]["b"] = section_b(bench, args.repeats)
            if "c" in sections:
                report["figures"]["c"] = section_c(bench, args.cycle_day)
    except StageFailed as exc:
        report["failures"] = [str(exc)]
        code = 1
    except KeyboardInterrupt:
        report["failures"] = ["interrupted"]
        code = 130
    finally:
        report["duration_s"] = round(time.perf_counter() - started, 1)
        report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        if args.keep_temp:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if code == 0:
        print_report(report)
        write_report(report, args.output)
        print(f"\nwrote {args.output} ({report['duration_s']}s)")
    else:
        with contextlib.suppress(Exception):
            print_report(report)
        partial = RESULTS / "partial.tmp"
        write_report(report, partial)
        print(f"\nbenchmark failed; latest.json left as it was, partial results in {partial}", file=sys.stderr)
        for failure in report.get("failures", []):
            print(f"ERROR: {failure}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
