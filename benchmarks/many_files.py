"""(j) Landing N files of one pipeline at once (N = 1, 12, 100): the runs the landing sensor requests, what they read.

Each N runs in its own worker process and home. One quarter of the bike sample (2012-01-01..2012-03-31, every row)
is split into N CSV files the way per-series deliveries look: row k goes to file k mod N, so every file spans the
whole quarter (with N = 12, each file holds two hours of every day), and the N files together hold each row once.
All N land in the landing zone at once; the pipeline's real landing sensor is ticked as the daemon would (the first
tick sees them, the second finds them stable and requests; a third must request nothing more), and every run it
requested is executed in-process on the benchmark's Dagster instance, `raw` and `features` with their checks.

Measured per N: runs requested, wall time of the ticks and of the runs, rows landed (the live ingest log entries'
rows) and rows read by the runs: each run's `raw` step reads the log entries it names in `source_files` over its
days; those reads are repeated afterwards with the log's own reader (`IngestLog.read_rows`, the call the run makes)
and their rows counted. Flat means rows read / rows landed close to 1: each landed row read once, whatever N.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import TARGETS, StageFailed
from benchmarks.harness import Bench
from benchmarks.ingest import landing_platform
from kernel.paths import PROJECT_ROOT

PIPELINE = "bike_landing"
FIRST_DAY = date(2012, 1, 1)
LAST_DAY = date(2012, 3, 31)
SIZES = (1, 12, 100)
TICKS = 3  # sees the files, finds them stable and requests, then must find nothing new


def split_rows(frame: Any, n: int) -> list[Any]:
    """N interleaved files: row k in file k mod N, so each spans the whole range, as a per-series file does."""
    return [frame.iloc[k::n] for k in range(n)]


def worker_many_files(args: Mapping[str, Any]) -> dict[str, Any]:
    """N files land at once; the real landing sensor is ticked and every run it requests is executed in-process."""
    import dagster as dg
    import pandas as pd

    from kernel.days import day_range
    from kernel.names import RANGE_END, RANGE_START, SOURCE_FILES_TAG
    from ml import ingest_log as log
    from resources.ingest_log import IngestLog

    n, root = int(args["n"]), Path(args["root"])
    landing, specs = root / "landing", root / "specs"
    for folder in (landing, specs):
        folder.mkdir(parents=True, exist_ok=True)
    defs, store, pipeline = landing_platform(PIPELINE, landing, specs, FIRST_DAY, LAST_DAY + timedelta(days=1))
    sensor = defs.resolve_sensor_def(f"{PIPELINE}_landing_sensor")
    job = defs.resolve_implicit_global_asset_job_def()

    source = pd.read_csv(PROJECT_ROOT / "data" / "bike_sharing" / "hour.csv")
    dates = pd.to_datetime(source["dteday"], format="%m/%d/%y").dt.date
    quarter = source[(dates >= FIRST_DAY) & (dates <= LAST_DAY)]
    for k, part in enumerate(split_rows(quarter, n)):
        part.to_csv(landing / f"series_{k:03d}.csv", index=False)
    landed_bytes = sum(path.stat().st_size for path in landing.iterdir())

    requests: list[dg.RunRequest] = []
    requests_per_tick, ticks_s, runs = [], [], []
    read: dict[str, tuple[list[date], list[str]]] = {}  # run id -> its days and the log entries its raw step read
    cursor = None
    with dg.DagsterInstance.get() as instance:
        for _ in range(TICKS):
            clock = time.perf_counter()
            result = sensor(dg.build_sensor_context(cursor=cursor, instance=instance))
            ticks_s.append(round(time.perf_counter() - clock, 3))
            if not isinstance(result, dg.SensorResult):
                raise StageFailed(f"(j) the landing sensor returned {type(result).__name__}, not a SensorResult")
            cursor = result.cursor
            requests_per_tick.append(len(result.run_requests or []))
            for request in result.run_requests or []:
                clock = time.perf_counter()
                run = job.execute_in_process(
                    instance=instance,
                    asset_selection=list(request.asset_selection or []),
                    tags=dict(request.tags),
                    raise_on_error=False,
                )
                wall = time.perf_counter() - clock
                if not run.success:
                    raise StageFailed(f"(j) N={n}: the landing run {run.run_id} failed")
                raw = [
                    event.step_materialization_data.materialization
                    for event in run.get_asset_materialization_events()
                    if event.asset_key == pipeline.key("raw")
                ]
                if not raw:
                    raise StageFailed(f"(j) N={n}: the landing run {run.run_id} materialised no raw partition")
                metadata = raw[0].metadata
                named = json.loads(request.tags[SOURCE_FILES_TAG])
                landed_notes = metadata["landed"].value
                if not isinstance(landed_notes, dict) or not all("landed as" in str(v) for v in landed_notes.values()):
                    raise StageFailed(f"(j) N={n}: the landing run did not land every file it names: {landed_notes}")
                read_entries = metadata["source_files"].value
                counted = metadata["ingest_log_reads"].value
                rows_written = metadata["dagster/row_count"].value
                if not isinstance(read_entries, list) or not isinstance(counted, dict):
                    raise StageFailed(f"(j) N={n}: the landing run recorded no ingest log reads")
                if not isinstance(rows_written, int):
                    raise StageFailed(f"(j) N={n}: the landing run recorded no row count")
                first, last = (date.fromisoformat(request.tags[tag]) for tag in (RANGE_START, RANGE_END))
                days = day_range(first, last)
                read[run.run_id] = (days, [str(e["entry"]) for e in read_entries if isinstance(e, dict)])
                requests.append(request)
                runs.append(
                    {
                        "run_id": run.run_id,
                        "range": f"{first}..{last}",
                        "days": len(days),
                        "files_named": len(named),
                        "wall_s": round(wall, 3),
                        "raw_rows_written": rows_written,
                        "duplicate_rows_collapsed": int(str(metadata["duplicate_rows_collapsed"].value)),
                        **{str(key): int(str(value)) for key, value in counted.items()},
                    }
                )

        ingest_log = IngestLog.of(store, PIPELINE)
        names = ingest_log.names()
        live = {name.id: ingest_log.read_entry(name) for name in log.live(names)}
        rows_landed = sum(entry.rows for entry in live.values())
        rows_read = 0
        for run in runs:
            days, entries = read[run["run_id"]]
            wanted = log.source_days(days, pipeline.shift_days)
            run["rows_read"] = sum(len(ingest_log.read_rows(live[entry], wanted)) for entry in entries)
            rows_read += run["rows_read"]
    if len(live) != n:
        raise StageFailed(f"(j) N={n}: {len(live)} live ingest log entries for {n} files landed")
    return {
        "n": n,
        "files": n,
        "rows_in_files": len(quarter),
        "landed_bytes": landed_bytes,
        "requests_per_tick": requests_per_tick,
        "runs_requested": len(requests),
        "ticks_s": ticks_s,
        "runs": runs,
        "runs_s": round(sum(run["wall_s"] for run in runs), 3),
        "wall_s": round(sum(ticks_s) + sum(run["wall_s"] for run in runs), 3),
        "rows_landed": rows_landed,
        "rows_read": rows_read,
        "rows_read_per_row_landed": round(rows_read / rows_landed, 4) if rows_landed else None,
    }


def section_j(bench: Bench) -> dict[str, Any]:
    """N files of one pipeline landed at once for N in `SIZES`: one run, each landed row read once."""
    print(f"(j) landing N files of one pipeline at once, N = {', '.join(map(str, SIZES))}")
    by_n = {}
    for n in SIZES:
        root = bench.tmp / f"j_{n}"
        by_n[str(n)] = bench.worker(f"j_many_files_{n}", "many_files", {"n": n, "root": str(root)}, bench.home(f"j{n}"))
    figures = []
    for n, result in by_n.items():
        runs, ratio = result["runs_requested"], result["rows_read_per_row_landed"]
        figures += [
            {
                "figure": f"runs requested by the landing sensor for {n} file(s) landed at once",
                "value": runs,
                "target": TARGETS["j_runs_requested"],
                "meets_target": runs == TARGETS["j_runs_requested"],
            },
            {
                "figure": f"rows read by the run(s) / rows landed, {n} file(s)",
                "value": ratio,
                "target": TARGETS["j_rows_read_ratio_max"],
                "meets_target": ratio is not None and ratio <= TARGETS["j_rows_read_ratio_max"],
            },
        ]
    for n, result in by_n.items():
        print(
            f"  · N={n}: {result['runs_requested']} run(s) requested (per tick {result['requests_per_tick']}), "
            f"{result['wall_s']:.2f}s (ticks {' + '.join(f'{s:.2f}' for s in result['ticks_s'])}s, "
            f"runs {result['runs_s']:.2f}s), rows read {result['rows_read']} / landed {result['rows_landed']}; "
            f"from the log: {sum(run['copies_read'] for run in result['runs'])} copies, "
            f"{sum(run['bytes_read'] for run in result['runs'])} bytes, "
            f"{sum(run['names_listed'] for run in result['runs'])} names listed"
        )
    for figure in figures:
        relation = "==" if figure["figure"].startswith("runs") else "<="
        print(
            f"  · {figure['figure']}: {figure['value']} (target {relation} {figure['target']}: "
            f"{'PASS' if figure['meets_target'] else 'MISS'})"
        )
    return {"by_n": by_n, "figures": figures}
