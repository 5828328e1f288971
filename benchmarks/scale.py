"""Section c: the bike data scaled up to N stations, raw -> features -> model -> predictions over a range on a Ray
cluster of a driver-only head plus one and then two one-CPU worker nodes (speedup per stage), and the features
driver's peak RSS against the range's length (flat: the driver should not hold the range's frames).

The data is `benchmarks.stations.generate` with N stations over the sample's two years, written as landing files into
the section's temp folder; the spec is `pipelines/bike_demand.yaml` made multi-series (`scale_spec_document`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import SOURCE_SPEC, StageFailed, bench_pipeline
from benchmarks.harness import Bench, ray_head, ray_node

if TYPE_CHECKING:
    from kernel.paths import StatePaths

PIPELINE = "bike_scale"
FIRST_DAY, LAST_DAY = date(2011, 1, 1), date(2012, 12, 31)  # the sample's two years
STAGES = ("raw", "features", "model", "predictions")
COMPUTE_BOUND = ("features", "model")  # the stages whose work is Ray tasks (raw is the driver's; predictions is light)
RAY_METADATA = ("ray_tasks", "ray_nodes", "ray_worker_pids", "days_built", "days_rejected")
TARGETS = {"c_speedup_min": 1.7, "c_rss_ratio_max": 1.25}


@dataclass(frozen=True)
class Size:
    """What section c runs: stations, the stage range, the model stage's range and training, the RSS ranges."""

    stations: int = 400
    days: int = 60
    model_days: int = 4
    window_days: int = 14
    max_iter: int = 100
    rss_days: tuple[int, ...] = (30, 60, 120)


def scale_spec_document(landing: Path, size: Size) -> dict[str, Any]:
    """`pipelines/bike_demand.yaml` as one pipeline of `size.stations` series: the landing folder's files, entity column
    `station`, fixed partitions, a failed expectation rejecting the series' day, counts up to 5000 (a station's scale
    goes to 1.8x the city's), and a training stage small enough for the section's budget (shorter window, one
    candidate with fewer iterations)."""
    import yaml

    document: dict[str, Any] = yaml.safe_load(SOURCE_SPEC.read_text())
    document["name"] = PIPELINE
    document["description"] = f"Hourly bike rentals at {size.stations} generated stations (benchmark section c)."
    document["source"] |= {"uri": str(landing / "*.csv"), "entity_columns": ["station"], "duplicates": "last"}
    document["partitioning"] = {
        "start_date": str(FIRST_DAY),
        "end_date": str(LAST_DAY + timedelta(days=1)),
        "rebase_to_yesterday": False,
    }
    document["expectations"]["reject"] = "series_day"
    document["expectations"]["columns"]["cnt"]["max"] = 5000
    candidate = document["training"]["candidates"][0]
    candidate["params"] = {**candidate["params"], "max_iter": size.max_iter}
    document["training"] = {"window_days": size.window_days, "candidates": [candidate]}
    document["evaluation"]["holdout_days"] = 3
    return document


def write_scale_spec(specs_dir: Path, landing: Path, size: Size) -> Path:
    import yaml

    path = specs_dir / f"{PIPELINE}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(scale_spec_document(landing, size), sort_keys=False))
    return path


def generate_landing(landing: Path, stations: int, first: date = FIRST_DAY, last: date = LAST_DAY) -> dict[str, Any]:
    """The scaled-up data as landing files: `stations` stations from `first` to `last`; what was written."""
    from benchmarks.stations import generate

    started = time.perf_counter()
    paths, faults = generate(landing, first, last, stations=stations)
    seconds = time.perf_counter() - started
    with_header = [sum(1 for _ in path.open()) for path in paths]
    return {
        "stations": stations,
        "days": (last - first).days + 1,
        "files": len(paths),
        "rows": sum(with_header) - len(paths),
        "bytes": sum(path.stat().st_size for path in paths),
        "faults": vars(faults),
        "generate_s": round(seconds, 1),
    }


def last_days(days: int, end: date = LAST_DAY) -> tuple[date, date]:
    return end - timedelta(days=days - 1), end


def worker_scale_stage(args: Mapping[str, Any]) -> dict[str, Any]:
    """One stage over a range as `dagster asset materialize --partition-range` runs it (checks included, the
    definitions' executor: in-process locally); a model gate rejecting a candidate is tolerated when
    `tolerate_gates`. Returns the run's times, each step's process id (the sampler's peaks are per process) and the
    stage's Ray metadata."""
    from benchmarks.eventlog import failure_messages, gates_only, run_breakdown
    from benchmarks.worker import execute_cli_equivalent

    first, last = date.fromisoformat(args["first"]), date.fromisoformat(args["last"])
    instance, result, load_s, execute_s = execute_cli_equivalent(args["select"], first, last)
    records = instance.all_logs(result.run_id)
    if not result.success:
        failures = failure_messages(records)
        if not (args.get("tolerate_gates") and gates_only(failures)):
            details = "\n".join(f"[{step}] {text}" for step, text in failures)
            raise StageFailed(f"(c) {args['select']} {first}..{last} failed (run {result.run_id}):\n{details}")
    step_pids = {
        str(record.dagster_event.step_key): record.dagster_event.pid
        for record in records
        if record.dagster_event is not None and record.dagster_event.event_type_value == "STEP_START"
    }
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey.from_user_string(args["select"]))
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    ray = {name: metadata[name].value for name in RAY_METADATA if name in metadata}
    return {
        "range": f"{first}..{last}",
        "days": (last - first).days + 1,
        "load_s": round(load_s, 2),
        "execute_s": round(execute_s, 2),
        "step_pids": step_pids,
        "metadata": ray,
        "breakdown": run_breakdown(instance, result.run_id),
    }


def worker_scale_champion(args: Mapping[str, Any]) -> dict[str, Any]:
    """The model of `day` made champion through the platform's promote job (override: the section only needs *a*
    champion for predictions, whatever the gates said of a model trained this small)."""
    import dagster as dg

    from benchmarks.worker import _definitions, _force_champion

    defs, pipeline = _definitions(PIPELINE)
    return _force_champion(defs, dg.DagsterInstance.get(), pipeline, date.fromisoformat(args["day"]))


def _stage(bench: Bench, state: StatePaths, label: str, stage: str, days: tuple[date, date]) -> dict[str, Any]:
    args = {"select": f"{PIPELINE}/{stage}", "first": str(days[0]), "last": str(days[1])}
    result = bench.worker(label, "scale_stage", {**args, "tolerate_gates": stage == "model"}, state)
    step = next((s for s in result["step_pids"] if s.endswith(f"__{stage}") or s == stage), None)
    pid = result["step_pids"].get(step) if step else None
    result["step_peak_rss_mb"] = result["sampled_rss_by_pid"].get(str(pid)) if pid is not None else None
    result["step_wall_s"] = result["breakdown"]["steps"].get(step, {}).get("wall_s") if step else None
    return result


def _stage_ranges(bench: Bench, size: Size) -> dict[str, tuple[date, date]]:
    """Each stage's range: the last `days` days for features and predictions, raw with the features' look-back
    before them, and the model over the last `model_days`."""
    first, last = last_days(size.days)
    return {
        "raw": (first - timedelta(days=bench.pipeline.lookback_days), last),
        "features": (first, last),
        "model": last_days(size.model_days),
        "predictions": (first, last),
    }


def _speedups(runs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    figures = []
    for stage in STAGES:
        one, two = runs["1_node"][stage]["execute_s"], runs["2_nodes"][stage]["execute_s"]
        speedup = round(one / two, 2) if two else None
        step_one, step_two = runs["1_node"][stage]["step_wall_s"], runs["2_nodes"][stage]["step_wall_s"]
        figure: dict[str, Any] = {
            "figure": f"{stage}: run time on 1 worker node / on 2",
            "stage": stage,
            "one_node_s": one,
            "two_nodes_s": two,
            "value": speedup,
            "step_speedup": round(step_one / step_two, 2) if step_one and step_two else None,
        }
        if stage in COMPUTE_BOUND:
            figure["target"] = TARGETS["c_speedup_min"]
            figure["meets_target"] = speedup is not None and speedup >= TARGETS["c_speedup_min"]
        figures.append(figure)
    return figures


def section_c(bench: Bench, size: Size) -> dict[str, Any]:
    """Generate the data, then every stage on 1 and on 2 worker nodes, then the features driver's RSS per range."""
    import os

    root = bench.tmp / "c"
    landing = root / "landing"
    print(f"(c) {size.stations} stations, stages over {size.days} days on 1 and 2 Ray worker nodes of 1 CPU")
    data = generate_landing(landing, size.stations)
    print(f"  · generated {data['rows']} rows in {data['files']} files ({data['generate_s']}s)")
    specs_dir = write_scale_spec(root / "specs", landing, size).parent
    scale = Bench(tmp=root, specs_dir=specs_dir, pipeline=bench_pipeline(specs_dir, name=PIPELINE))
    ranges = _stage_ranges(scale, size)
    loadavg_start = [round(x, 2) for x in os.getloadavg()]
    runs: dict[str, dict[str, Any]] = {}
    with ray_head(scale, cpus=0), ray_node(scale):
        state = scale.home("c", "local")
        runs["1_node"] = _cluster_runs(scale, state, "1_node", ranges, champion=True)
        with ray_node(scale):
            runs["2_nodes"] = _cluster_runs(scale, state, "2_nodes", ranges, champion=False)
            rss = _rss_runs(scale, state, size)
    loadavg_end = [round(x, 2) for x in os.getloadavg()]
    speedups = _speedups(runs)
    peaks = {days: run["step_peak_rss_mb"] for days, run in rss.items()}
    low, high = min(size.rss_days), max(size.rss_days)
    ratio = round(peaks[str(high)] / peaks[str(low)], 3) if peaks[str(low)] and peaks[str(high)] else None
    rss_figure = {
        "figure": f"features driver (step process) peak RSS at {high} days / at {low} days",
        "value": ratio,
        "target": TARGETS["c_rss_ratio_max"],
        "meets_target": ratio is not None and ratio <= TARGETS["c_rss_ratio_max"],
    }
    return {
        "data": data,
        "stations": size.stations,
        "days": size.days,
        "rows": data["rows"],
        "size": vars(size) | {"rss_days": list(size.rss_days)},
        "ranges": {stage: f"{first}..{last}" for stage, (first, last) in ranges.items()},
        "note": (
            f"model stage over the last {size.model_days} days only (window {size.window_days} days, one "
            f"hist_gradient_boosting candidate of {size.max_iter} iterations) to keep the section in budget; "
            "champion promoted by hand (override) after the 1-node model run; stage time = the run's execute_job "
            "wall (checks included, code-location load excluded; step_speedup: the asset's step alone); "
            "Ray head with 0 CPUs, worker nodes of 1 CPU each"
        ),
        "loadavg_at_start": loadavg_start,
        "loadavg_at_end": loadavg_end,
        "runs": runs,
        "rss_runs": rss,
        "features_step_peak_rss_mb": peaks,
        "ray_workers_peak_rss_mb": {
            days: {k: run["sampled_rss"][k] for k in ("ray_worker_max_mb", "ray_workers_sum_mb")}
            for days, run in rss.items()
        },
        "figures": [*speedups, rss_figure],
    }


def _cluster_runs(
    bench: Bench, state: StatePaths, label: str, ranges: Mapping[str, tuple[date, date]], *, champion: bool
) -> dict[str, Any]:
    runs = {}
    for stage in STAGES:
        runs[stage] = _stage(bench, state, f"c_{label}_{stage}", stage, ranges[stage])
        if stage == "model" and champion:
            bench.worker(f"c_{label}_champion", "scale_champion", {"day": str(ranges["model"][1])}, state)
    return runs


def _rss_runs(bench: Bench, state: StatePaths, size: Size) -> dict[str, Any]:
    """Features over the last 30, 60 and 120 days (`size.rss_days`), each its own run, after raw for the longest."""
    longest = last_days(max(size.rss_days))
    raw = (longest[0] - timedelta(days=bench.pipeline.lookback_days), longest[1])
    _stage(bench, state, "c_rss_raw", "raw", raw)
    return {
        str(days): _stage(bench, state, f"c_rss_features_{days}d", "features", last_days(days))
        for days in size.rss_days
    }
