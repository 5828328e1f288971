"""(i) What landing one more daily file costs a pipeline that already holds N-1 of them (N = 30, 365, 1,826).

Each N runs in its own worker process and home. The history (N-1 daily CSV files, one per day, cut from the bike
sample with its dates moved so that five years exist) is landed straight into the ingest log, untimed, by the same
`IngestLog.land` a landing run calls. Then the N-th file (and, for a median, the next two) arrives in the landing zone
and is ingested by a real `raw` run on the benchmark's Dagster instance, tagged as the landing sensor tags it: the run
lands it, reads the log entries covering its day and builds that day, checks included. Measured per run: wall time,
the ingest log's own counters (entries and copies read, their bytes, names listed) and the landing bytes read.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import SOURCE_SPEC, TARGETS, StageFailed
from benchmarks.harness import Bench
from kernel.paths import PROJECT_ROOT

PIPELINE = "bike_ingest"
FIRST_DAY = date(2011, 1, 1)
SAMPLE_DAYS = 731  # the bike sample's days, reused in turn for five years of daily files
SIZES = (30, 365, 1826)
REPEATS = 3  # the N-th, N+1-th and N+2-th file: the median of three runs


def daily_csv(frame: Any, day: date) -> bytes:
    """One day's file: the sample's rows of a day at the same place in its two-year cycle, dated `day`."""
    source = FIRST_DAY + timedelta(days=(day - FIRST_DAY).days % SAMPLE_DAYS)
    rows = frame[frame["dteday"] == source.strftime("%Y-%m-%d")].copy()
    rows["dteday"] = day.strftime("%m/%d/%y")
    return rows.to_csv(index=False).encode()


def landing_platform(name: str, landing: Path, specs: Path, first: date, end: date) -> tuple[Any, Any, Any]:
    """The shipped bike spec renamed `name`, reading `landing/*.csv` over first..end (exclusive), built as the code
    location builds it in `PLATFORM_HOME`: its definitions, asset store and pipeline."""
    import yaml

    from kernel.pipeline import Pipeline
    from kernel.settings import Settings
    from kernel.spec import load_spec
    from platform_assets.definitions import build_definitions
    from resources.storage import PartitionedParquetIOManager

    document = yaml.safe_load(SOURCE_SPEC.read_text())
    document |= {
        "name": name,
        "source": {**document["source"], "uri": str(landing / "*.csv")},
        "partitioning": {"start_date": first, "end_date": end, "rebase_to_yesterday": False},
    }
    (specs / f"{name}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    home = Path(os.environ["PLATFORM_HOME"])
    settings = Settings(env="local", root=PROJECT_ROOT, home=home, specs_dir=specs, mlflow_ui_url="http://x")
    defs = build_definitions(settings)
    store = (defs.resources or {})["io_manager"]
    if not isinstance(store, PartitionedParquetIOManager):
        raise StageFailed("unexpected asset store resource")
    return defs, store, Pipeline(spec=load_spec(specs / f"{name}.yaml"), root=PROJECT_ROOT)


def worker_ingest_nth(args: Mapping[str, Any]) -> dict[str, Any]:
    """History of N-1 daily files landed untimed, then `REPEATS` timed landing runs of one new file each."""
    import dagster as dg
    import pandas as pd

    from kernel.names import RANGE_END, RANGE_START, SOURCE_FILES_TAG
    from ml import ingest
    from resources.ingest_log import IngestLog

    n, root = int(args["n"]), Path(args["root"])
    landing, archive, specs = root / "landing", root / "archive", root / "specs"
    for folder in (landing, archive, specs):
        folder.mkdir(parents=True, exist_ok=True)
    defs, store, pipeline = landing_platform(
        PIPELINE, landing, specs, FIRST_DAY, FIRST_DAY + timedelta(days=n + REPEATS)
    )
    frame = pd.read_csv(PROJECT_ROOT / "data" / "bike_sharing" / "hour.csv")
    frame["dteday"] = pd.to_datetime(frame["dteday"], format="%m/%d/%y").dt.strftime("%Y-%m-%d")

    started = time.perf_counter()
    history = IngestLog.of(store, PIPELINE)
    for k in range(n - 1):
        path = archive / f"{k:05d}.csv"
        path.write_bytes(daily_csv(frame, FIRST_DAY + timedelta(days=k)))
        stat = path.stat()
        if history.land(pipeline, ingest.SourceFile(str(path), stat.st_size, stat.st_mtime_ns)).entry is None:
            raise StageFailed(f"(i) history file {path} was not landed")
    setup_s = time.perf_counter() - started

    job = defs.resolve_implicit_global_asset_job_def()
    runs = []
    with dg.DagsterInstance.get() as instance:
        for r in range(REPEATS):
            day = FIRST_DAY + timedelta(days=n - 1 + r)
            path = landing / f"{day}.csv"
            path.write_bytes(daily_csv(frame, day))
            stat = path.stat()
            tags = {
                RANGE_START: str(day),
                RANGE_END: str(day),
                SOURCE_FILES_TAG: json.dumps({str(path): f"{stat.st_size}:{stat.st_mtime_ns}"}),
            }
            clock = time.perf_counter()
            result = job.execute_in_process(
                instance=instance, asset_selection=[pipeline.key("raw")], tags=tags, raise_on_error=False
            )
            wall = time.perf_counter() - clock
            if not result.success:
                raise StageFailed(f"(i) the landing run of {day} failed")
            (event,) = result.get_asset_materialization_events()
            metadata = event.step_materialization_data.materialization.metadata
            counted = metadata["ingest_log_reads"].value
            if not isinstance(counted, dict):
                raise StageFailed(f"(i) the landing run of {day} recorded no ingest log reads")
            reads: dict[str, int] = {str(key): int(str(value)) for key, value in counted.items()}
            if (landed := metadata["landed"].value) and "landed as" not in str(landed):
                raise StageFailed(f"(i) the landing run of {day} did not land its file: {landed}")
            # The landed file is read twice (hashed, then parsed); the log's reads are what selection opened.
            reads["landing_bytes_read"] = 2 * stat.st_size
            reads["bytes_read_total"] = reads["bytes_read"] + reads["landing_bytes_read"]
            runs.append({"day": str(day), "wall_s": round(wall, 3), **reads})
    return {
        "n": n,
        "history_entries": n - 1,
        "history_setup_s": round(setup_s, 1),
        "runs": runs,
        "wall_s": statistics.median(run["wall_s"] for run in runs),
        "bytes_read": statistics.median(run["bytes_read_total"] for run in runs),
        "entries_read": max(run["entries_read"] for run in runs),
        "names_listed": max(run["names_listed"] for run in runs),
    }


def section_i(bench: Bench) -> dict[str, Any]:
    """Landing the N-th daily file for N in `SIZES`; time and bytes read per run must not grow with N."""
    print(f"(i) landing the N-th daily file into a pipeline holding N-1, N = {', '.join(map(str, SIZES))}")
    by_n = {}
    for n in SIZES:
        root = bench.tmp / f"i_{n}"
        by_n[str(n)] = bench.worker(f"i_ingest_{n}", "ingest_nth", {"n": n, "root": str(root)}, bench.home(f"i{n}"))
    smallest, largest = by_n[str(SIZES[0])], by_n[str(SIZES[-1])]
    time_ratio = round(largest["wall_s"] / smallest["wall_s"], 2)
    bytes_ratio = round(largest["bytes_read"] / smallest["bytes_read"], 3)
    figures = [
        {
            "figure": f"run wall time at N={SIZES[-1]} / at N={SIZES[0]} (median of {REPEATS} runs each)",
            "value": time_ratio,
            "target": TARGETS["i_time_ratio_max"],
            "meets_target": time_ratio <= TARGETS["i_time_ratio_max"],
        },
        {
            "figure": f"bytes read per run at N={SIZES[-1]} / at N={SIZES[0]} (log entries, copies, landed file)",
            "value": bytes_ratio,
            "target": TARGETS["i_bytes_ratio_max"],
            "meets_target": bytes_ratio <= TARGETS["i_bytes_ratio_max"],
        },
    ]
    for n, result in by_n.items():
        print(
            f"  · N={n}: {result['wall_s']:.2f}s, {result['bytes_read']} bytes, {result['entries_read']} entries read, "
            f"{result['names_listed']} names listed (history landed in {result['history_setup_s']}s)"
        )
    for figure in figures:
        print(
            f"  · {figure['figure']}: {figure['value']} (target <= {figure['target']}: "
            f"{'PASS' if figure['meets_target'] else 'MISS'})"
        )
    return {"by_n": by_n, "figures": figures}
