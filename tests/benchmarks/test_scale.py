"""Section c's pieces on a tiny size: the generated stations read by the platform's own ingest under the derived spec,
the stage ranges inside the partitions, which speedups are judged, and the sampler's per-process peaks (which name
the features step's RSS)."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd

from benchmarks.common import bench_pipeline
from benchmarks.harness import Bench, ProcessSampler
from benchmarks.scale import FIRST_DAY, PIPELINE, Size, _speedups, _stage_ranges, generate_landing, write_scale_spec
from kernel.paths import PROJECT_ROOT

FIRST, LAST = date(2012, 3, 1), date(2012, 3, 10)


def test_generated_stations_land_as_the_derived_spec_reads_them(tmp_path: Path) -> None:
    from ml import ingest

    landing = tmp_path / "landing"
    data = generate_landing(landing, stations=3, first=FIRST, last=LAST)
    specs_dir = write_scale_spec(tmp_path / "specs", landing, Size(stations=3)).parent
    spec = bench_pipeline(specs_dir, name=PIPELINE).spec
    assert spec.source.entity_columns == ["station"]
    assert spec.expectations.reject == "series_day"

    frames = [
        ingest.normalise(ingest.read_source_file(str(path), spec, PROJECT_ROOT), spec, str(path)).frame
        for path in sorted(landing.glob("*.csv"))
    ]
    collapsed = ingest.collapse_duplicates(pd.concat(frames, ignore_index=True), spec).frame
    days = ingest.split_days(collapsed, ingest.days_in(collapsed), spec)

    assert data["files"] == 4  # three stations and the re-sent file
    assert data["rows"] == sum(len(frame) for frame in frames)
    assert sorted(days) == [str(d.date()) for d in pd.date_range(FIRST, LAST)]
    assert set(collapsed["station"]) == {"S01", "S02", "S03"}
    assert all(frame.groupby("station").size().between(1, 24).all() for frame in days.values())
    faults = data["faults"]
    late = faults["late_station"]
    delivered_anyway = {day for station, day in (faults["broken"], faults["resent"]) if station == late}
    early = [day for day in days if day < faults["late_from"] and day not in delivered_anyway]
    assert early
    assert not any((days[day]["station"] == late).any() for day in early)


def test_stage_ranges_fit_the_partitions_and_end_on_the_last_day(tmp_path: Path) -> None:
    size = Size(stations=3, days=60, model_days=4)
    specs_dir = write_scale_spec(tmp_path / "specs", tmp_path / "landing", size).parent
    bench = Bench(tmp=tmp_path, specs_dir=specs_dir, pipeline=bench_pipeline(specs_dir, name=PIPELINE))
    ranges = _stage_ranges(bench, size)
    assert (ranges["features"][1] - ranges["features"][0]).days + 1 == 60
    assert (ranges["model"][1] - ranges["model"][0]).days + 1 == 4
    assert (ranges["features"][0] - ranges["raw"][0]).days == bench.pipeline.lookback_days
    assert len({last for _, last in ranges.values()}) == 1
    assert min(first for first, _ in ranges.values()) >= FIRST_DAY


def test_sampler_records_each_process_peak_of_the_tree(tmp_path: Path) -> None:
    allocate = "import time; block = bytearray(200 * 1024 * 1024); time.sleep(2)"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {allocate!r}])"]
    )
    with ProcessSampler(parent.pid, ray_roots=[], interval=0.1) as sampler:
        parent.wait(timeout=60)
    child = [mb for pid, mb in sampler.pid_peaks_mb.items() if pid != parent.pid]
    assert parent.pid in sampler.pid_peaks_mb
    assert child and max(child) >= 200
    assert sampler.pid_peaks_mb[parent.pid] < 100


def test_speedups_judge_only_the_compute_bound_stages() -> None:
    def run(execute_s: float, step_s: float) -> dict[str, float]:
        return {"execute_s": execute_s, "step_wall_s": step_s}

    runs = {
        "1_node": {"raw": run(10, 8), "features": run(40, 36), "model": run(30, 28), "predictions": run(12, 10)},
        "2_nodes": {"raw": run(10, 8), "features": run(20, 18), "model": run(25, 20), "predictions": run(8, 6)},
    }
    figures = {figure["stage"]: figure for figure in _speedups(runs)}
    assert figures["features"]["value"] == 2.0 and figures["features"]["meets_target"]
    assert figures["model"]["value"] == 1.2 and not figures["model"]["meets_target"]
    assert figures["model"]["step_speedup"] == 1.4
    assert "target" not in figures["raw"] and "target" not in figures["predictions"]
