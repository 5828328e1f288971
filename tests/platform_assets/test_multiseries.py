"""Multi-series is first-class (issue 20, 3): twelve per-station files land as one run, a broken station-day is
rejected alone (the unit is the (day, series)), the other stations' days flow on, and the model scores every
station and the pool; the stations are derived from the real bike sample (benchmarks/stations.py)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from conftest import PipelineFactory
from support import check_days, run_range, run_unpartitioned

from benchmarks.stations import Faults, generate, spec_document
from kernel import series
from kernel.names import SOURCE_FILES_TAG
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking

NAME = "stations"
FIRST, LAST = date(2012, 5, 1), date(2012, 6, 4)  # 35 days
MODEL_DAY = "2012-05-30"  # its 21-day window holds the broken station-day and the two days whose look-back it is in


def key(stage: str) -> dg.AssetKey:
    return dg.AssetKey([NAME, stage])


@pytest.fixture
def landed(tmp_path: Path) -> tuple[list[Path], Faults]:
    return generate(tmp_path / "landing", FIRST, LAST)


def test_twelve_station_files_are_one_run_and_a_broken_station_day_is_rejected_alone(
    make_defs: PipelineFactory, landed: tuple[list[Path], Faults], tmp_path: Path, ray_address: str
) -> None:
    paths, faults = landed
    defs = make_defs(spec_document(tmp_path / "landing", str(FIRST), "2012-06-05"))
    store = (defs.resources or {})["io_manager"]
    assert isinstance(store, PartitionedParquetIOManager)
    instance = dg.DagsterInstance.ephemeral()

    # The landing sensor, ticked as the daemon does: the files stable at one tick are one run over their days.
    sensor = defs.resolve_sensor_def(f"{NAME}_landing_sensor")
    seen = sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(seen, dg.SensorResult) and not seen.run_requests
    ready = sensor(dg.build_sensor_context(cursor=seen.cursor, instance=instance))
    assert isinstance(ready, dg.SensorResult)
    (request,) = ready.run_requests or []
    assert sorted(json.loads(request.tags[SOURCE_FILES_TAG])) == sorted(str(p) for p in paths)
    assert len(paths) == 13, "twelve stations and the re-sent file"
    landing = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=list(request.asset_selection or []), tags=dict(request.tags)
    )
    assert landing.success

    # The broken station-day: its day passes for the eleven others and names the station rejected, with the reason.
    station, broken = faults.broken
    verdicts = check_days(landing)["passes_expectations"]
    assert all(v.passed for v in verdicts.values()), "no whole day is rejected for one station"
    partial = {d: v.metadata["rejected_series"].value for d, v in verdicts.items() if "rejected_series" in v.metadata}
    assert list(partial) == [broken]
    rejected = partial[broken]
    assert isinstance(rejected, dict) and list(rejected) == [station]
    assert "expect_column_values_to_be_between cnt: 24 row(s)" in str(rejected[station])
    present = store.read(key("raw"), broken)["station"].nunique()  # the late station is not open yet
    described = str(verdicts[broken].description)
    assert described.startswith(f"1 of {present} series rejected ({station}: ")
    assert described.endswith(f"the other {present - 1} kept")
    # A station that opens late is no error: its absent days count no rows for it, they do not fail.
    completeness = check_days(landing)["complete_days"]
    early, opened = str(FIRST), store.read(key("raw"), str(FIRST))["station"]
    assert faults.late_station not in set(opened)
    assert completeness[early].passed, completeness[early].description
    assert completeness[early].metadata["series"].value == opened.nunique()

    # Two files disagreeing on the same (station, hour): `duplicates: last` decides, counted per day per station.
    per_series = "duplicate_rows_collapsed_per_series_this_day"
    collapsed = {
        e.materialization.partition: e.materialization.metadata[per_series].value
        for e in landing.get_asset_materialization_events()
        if e.asset_key == key("raw") and per_series in e.materialization.metadata
    }
    assert collapsed == {faults.resent[1]: {faults.resent[0]: faults.resent_hours}}

    # Downstream leaves out exactly that series on the days whose look-back holds the broken day (lags 24 h and
    # 48 h: the day and the two after it), naming why; every other station is there.
    broken_day = date.fromisoformat(broken)
    shadowed = [str(broken_day + pd.Timedelta(days=k)) for k in range(3)]
    for day in [*shadowed, str(broken_day + pd.Timedelta(days=3))]:
        features = store.read(key("features"), day)
        stations = set(features["station"])
        if day in shadowed:
            # The others are kept (a station just back from an outage has no lags yet: no rows, as for any series).
            assert station not in stations and len(stations) >= 9, day
            assert list(series.left_out(features)) == [station]
            assert "passes_expectations failed" in series.left_out(features)[station]
        else:
            assert station in stations and series.left_out(features) == {}
    features_event = next(e for e in landing.get_asset_materialization_events() if e.asset_key == key("features"))
    assert features_event.materialization.metadata["series_days_left_out"].value == len(shadowed)

    # The model's window skips those three series-days (recorded with their reasons) and scores each station.
    trained = run_range(defs, ["model"], NAME, (MODEL_DAY, MODEL_DAY), instance)
    assert trained.success
    record = store.read(key("model"), MODEL_DAY)
    assert {day: list(left) for day, left in record["series_left_out"].items()} == {d: [station] for d in shadowed}
    scores = record["metrics_per_series"]
    holdout = pd.concat([store.read(key("features"), day) for day in record["holdout_days"]])
    assert sorted(scores) == sorted(set(holdout["station"]))
    assert sum(s["rows"] for s in scores.values()) == record["holdout_rows"]
    model_event = next(e for e in trained.get_asset_materialization_events() if e.asset_key == key("model"))
    table = str(model_event.materialization.metadata["metrics_per_series"].value)
    assert "**pooled**" in table and all(f"| {label} |" in table for label in scores)
    # MLflow holds the same scores per station, on the run and on the logged model the run produced (its page in
    # the MLflow UI), each metric once.
    tracking = (defs.resources or {})["mlflow"]
    assert isinstance(tracking, MlflowTracking)
    client = tracking.client()
    run = client.get_run(record["mlflow_run_id"])
    for label, score in scores.items():
        assert run.data.metrics[f"series/{label}/mae"] == pytest.approx(score["metrics"]["mae"])
        assert run.data.metrics[f"series/{label}/baseline_mae"] == pytest.approx(score["baseline"]["mae"])
    (logged,) = run.outputs.model_outputs
    on_model = [(m.key, m.value) for m in client.get_logged_model(logged.model_id).metrics or []]
    assert sorted(on_model) == sorted(run.data.metrics.items())

    # Out of sample: the next day scored per station and pooled, and the report shows both.
    scored_day = str(date.fromisoformat(MODEL_DAY) + pd.Timedelta(days=1))
    assert run_range(defs, ["backtest"], NAME, (scored_day, scored_day), instance).success
    scores = store.read(key("backtest"), scored_day)
    pooled, by_station = scores[scores["series"] == ""], scores[scores["series"] != ""]
    assert len(pooled) == 1 and set(by_station["series"]) == set(store.read(key("features"), scored_day)["station"])
    assert by_station["rows"].sum() == pooled["rows"].iloc[0]
    report = run_unpartitioned(defs, ["backtest_report"], NAME, instance)
    assert report.success
    (report_event,) = report.get_asset_materialization_events()
    table = str(report_event.materialization.metadata["per_series"].value)
    assert "pooled" in table and all(f"| {label} " in table for label in by_station["series"])
