"""(h) The first landing run of a five-year pipeline: air_quality's 1,826 days of raw + features, vs a plain script.

A copy of `pipelines/air_quality.yaml` (`air_first`, rebasing off) reads its landing zone, where the shipped Beijing
PM2.5 file (2010-01-01..2014-12-31) has just arrived. In a fresh worker process, as the daemon would: the pipeline's
real landing sensor is ticked until it requests (it sees the file, then finds it stable), and the run it requests
(raw + features over every day, their checks included, tagged as the sensor tags it) is executed on the home's
instance the way a launched run is (`execute_job`: the code location's executor, in-process locally).

Measured: the run's wall time; its start (run created -> RUN_START, almost all of it writing one planned
materialisation per asset and day); the worker process as a whole (load, ticks, run). The plain script is the same
compute without Dagster (`benchmarks/script.py`, sequential, raw + features written as one parquet file per day).
Targets: the worker process <= 2x the script's process, and run start <= 10 s.

With `--postgres` the same runs on production's instance on the machine's PostgreSQL (`h_postgres`). Each home runs
the landing twice, once on its instance and once on the same instance with the other event log
(benchmarks/instances.py), each time on a fresh home: a first landing needs an empty pipeline.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import StageFailed, bench_pipeline, platform_code_location, rusage_mb
from benchmarks.harness import Bench
from kernel.paths import PROJECT_ROOT

PIPELINE = "air_first"
SOURCE_SPEC = PROJECT_ROOT / "pipelines" / "air_quality.yaml"
SOURCE_DATA = PROJECT_ROOT / "data" / "beijing_pm25"
FIRST_DAY = date(2010, 1, 1)
DAYS = 1826  # 2010-01-01..2014-12-31, every day of the shipped file
STAGES = ("raw", "features")
TICKS = 3  # sees the file, finds it stable and requests; a third only if the second did not
RATIO_MAX = 2.0
RUN_START_MAX_S = 10.0


def write_spec(specs: Path, landing: Path, days: int) -> None:
    """air_quality renamed, reading `landing/*.csv` over its first `days` days, no rebase."""
    import yaml

    document = yaml.safe_load(SOURCE_SPEC.read_text())
    document |= {
        "name": PIPELINE,
        "source": {**document["source"], "uri": str(landing / "*.csv")},
        "partitioning": {
            "start_date": FIRST_DAY,
            "end_date": FIRST_DAY + timedelta(days=days),
            "rebase_to_yesterday": False,
        },
    }
    specs.mkdir(parents=True, exist_ok=True)
    (specs / f"{PIPELINE}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def worker_landing_first(args: Mapping[str, Any]) -> dict[str, Any]:
    """The file lands, the real landing sensor requests, and the requested run is executed as a launched run."""
    started = time.perf_counter()
    import dagster as dg
    from dagster._core.origin import JobPythonOrigin
    from dagster._utils.hosted_user_process import recon_job_from_origin

    from benchmarks.eventlog import failure_messages, run_breakdown

    specs, landing = Path(args["specs_dir"]), Path(args["landing"])
    # The code location this process (and every step process it starts) loads: the copy's spec folder only.
    os.environ["PLATFORM_SPECS_DIR"] = str(specs)
    origin, repo = platform_code_location()
    sensor = repo.get_sensor_def(f"{PIPELINE}_landing_sensor")
    loaded = time.perf_counter()
    for source in sorted(SOURCE_DATA.glob("*.csv")):
        shutil.copy(source, landing / source.name)
    instance = dg.DagsterInstance.get()
    cursor, request, ticks_s = None, None, []
    for _ in range(TICKS):
        clock = time.perf_counter()
        result = sensor(dg.build_sensor_context(cursor=cursor, instance=instance, repository_def=repo))
        ticks_s.append(round(time.perf_counter() - clock, 3))
        if not isinstance(result, dg.SensorResult):
            raise StageFailed(f"(h) the landing sensor returned {type(result).__name__}, not a SensorResult")
        cursor = result.cursor
        if result.run_requests:
            if len(result.run_requests) != 1:
                raise StageFailed(f"(h) the landing sensor requested {len(result.run_requests)} runs, not one")
            request = result.run_requests[0]
            break
    if request is None:
        raise StageFailed(f"(h) the landing sensor requested no run in {TICKS} ticks")
    keys = list(request.asset_selection or [])
    implicit = repo.get_implicit_job_def_for_assets(keys)
    if implicit is None:
        raise StageFailed("(h) the requested assets do not share one partitions definition")
    recon = recon_job_from_origin(JobPythonOrigin(implicit.name, repository_origin=origin))
    ran = time.perf_counter()
    run = dg.execute_job(recon, instance=instance, asset_selection=keys, tags=dict(request.tags))
    finished = time.perf_counter()
    if not run.success:
        details = "\n".join(f"[{step}] {text}" for step, text in failure_messages(instance.all_logs(run.run_id)))
        raise StageFailed(f"(h) the landing run {run.run_id} failed:\n{details}")
    breakdown = run_breakdown(instance, run.run_id)
    stages = {key.path[-1] for key in keys}
    if stages != set(STAGES):
        raise StageFailed(f"(h) the landing run materialised {sorted(stages)}, expected {list(STAGES)}")
    return {
        "load_s": round(loaded - started, 2),
        "ticks_s": ticks_s,
        "run_s": round(finished - ran, 2),
        "run_start_s": breakdown["create_to_start_s"],
        "breakdown": breakdown,
        "days": int(args["days"]),
        **rusage_mb(),
    }


def _landing_home(bench: Bench, label: str, instance: str, days: int) -> tuple[Any, dict[str, Any]]:
    state = bench.home(label, instance)
    root = bench.tmp / f"{label}_pipeline"
    specs, landing = root / "specs", root / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    write_spec(specs, landing, days)
    return state, {"specs_dir": str(specs), "landing": str(landing), "days": days}


def section_h(bench: Bench, instance: str = "local", label: str = "h", days: int = DAYS) -> dict[str, Any]:
    """The first landing run of `days` days on `instance` and on its twin with the other event log, vs the script."""
    from benchmarks.instances import OTHER_EVENT_LOG

    other = OTHER_EVENT_LOG[instance]
    print(f"({label}) first landing run of {PIPELINE}: {days} days of raw + features, instance {instance} vs {other}")
    state, args = _landing_home(bench, f"{label}_script", "minimal", days)
    for source in sorted(SOURCE_DATA.glob("*.csv")):  # the script reads the same landed file
        shutil.copy(source, Path(args["landing"]) / source.name)
    out_dir = bench.tmp / f"{label}_script_out"
    script_args = {
        "first": str(FIRST_DAY),
        "last": str(FIRST_DAY + timedelta(days=days - 1)),
        "lookback_days": bench_pipeline(Path(args["specs_dir"]), name=PIPELINE).lookback_days,
        "mode": "sequential",
        "warm": False,
        "predict": False,
        "pipeline": PIPELINE,
        "specs_dir": args["specs_dir"],
        "out_dir": str(out_dir),
    }
    script = bench.worker(f"{label}_script", "script", script_args, state)
    shutil.rmtree(out_dir, ignore_errors=True)
    runs = {}
    for kind in (instance, other):  # the twin last: on Dagster's own event log it is the long one
        state, args = _landing_home(bench, f"{label}_{kind}", kind, days)
        runs[kind] = bench.worker(f"{label}_landing_{kind}", "landing_first", args, state)
    figures = []
    for kind, run in runs.items():
        ratio = round(float(run["process_wall_s"]) / float(script["process_wall_s"]), 2)
        start = float(run["run_start_s"] or 0.0)
        figures += [
            {
                "figure": f"first landing run ({kind}) / plain script, fresh processes",
                "value": ratio,
                "target": RATIO_MAX,
                "meets_target": ratio <= RATIO_MAX,
                "headline": kind == instance,
            },
            {
                "figure": f"run start ({kind}): created -> RUN_START, s",
                "value": round(start, 2),
                "target": RUN_START_MAX_S,
                "meets_target": start <= RUN_START_MAX_S,
                "headline": kind == instance,
            },
        ]
    for figure in figures:
        print(
            f"  · {figure['figure']}: {figure['value']} (target <= {figure['target']}: "
            f"{'PASS' if figure['meets_target'] else 'MISS'})"
        )
    return {"instance": instance, "other": other, "days": days, "runs": runs, "script": script, "figures": figures}


def print_sections(figures: Mapping[str, Any]) -> None:
    """The printed tables of (h), h_postgres and a_postgres (the PostgreSQL run of (a): its headline pair only)."""
    from tabulate import tabulate

    if "a_postgres" in figures:
        a = figures["a_postgres"]
        print(f"\n(a_postgres) backfill of {a['range']['partitions']} partitions, instance {a['instance']}")
        rows = [
            [name, entry["wall_s"], entry["cpu_s"]]
            for group in ("dagster", "script")
            for name, entry in a[group].items()
        ]
        print(tabulate(rows, headers=["measure", "wall s", "CPU s"]))
        print(tabulate([[k, v] for k, v in a["ratios"].items()], headers=["ratio", "x"]))
        head = a["headline"]
        print(
            f"  headline ratio {head['ratio']} (target <= {head['target']}): "
            + ("PASS" if head["meets_target"] else "MISS")
        )
    for name in ("h", "h_postgres"):
        if name not in figures:
            continue
        h = figures[name]
        print(f"\n({name}) first landing run of {h['days']} days (raw + features), instance {h['instance']}")
        rows = [
            [kind, run["process_wall_s"], run["run_s"], run["run_start_s"], run["breakdown"]["planned_events"]]
            for kind, run in h["runs"].items()
        ]
        rows.append(["plain script", h["script"]["process_wall_s"], "", "", ""])
        print(tabulate(rows, headers=["process", "wall s", "run s", "run start s", "planned events"]))
        rows = [
            [x["figure"], x["value"], f"<= {x['target']}", "PASS" if x["meets_target"] else "MISS"]
            for x in h["figures"]
        ]
        print(tabulate(rows, headers=["figure", "value", "target", "result"]))
