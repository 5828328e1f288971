"""The landing sensor as a function of its cursor: first tick, nothing new, a new file, a changed file, a bad file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from conftest import BIKE_CSV, PipelineFactory, bike_spec_document

NAME = "bike_landing"


@pytest.fixture
def zone(tmp_path: Path) -> Path:
    landing = tmp_path / "landing"
    landing.mkdir()
    return landing


def write_days(frame: pd.DataFrame, days: list[str], path: Path) -> None:
    dates = pd.to_datetime(frame["dteday"], format="%m/%d/%y").dt.strftime("%Y-%m-%d")
    frame[dates.isin(days)].to_csv(path, index=False)


def sensor_for(make_defs: PipelineFactory, zone: Path) -> dg.SensorDefinition:
    document = bike_spec_document(
        name=NAME,
        source={"uri": str(zone / "*.csv")},
        partitioning={"start_date": "2012-01-01", "end_date": "2013-01-01", "rebase_to_yesterday": False},
    )
    return make_defs(document).resolve_sensor_def(f"{NAME}_landing_sensor")


def tick(sensor: dg.SensorDefinition, cursor: str | None, instance: dg.DagsterInstance) -> dg.SensorResult:
    context = dg.build_sensor_context(cursor=cursor, instance=instance)
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def ranges(result: dg.SensorResult) -> list[tuple[str, str, str]]:
    return [
        (
            Path(r.tags["platform/source_file"]).name,
            r.tags["dagster/asset_partition_range_start"],
            r.tags["dagster/asset_partition_range_end"],
        )
        for r in result.run_requests or []
    ]


def test_cursor_cases_first_tick_nothing_new_new_file_changed_file(make_defs: PipelineFactory, zone: Path) -> None:
    bike = pd.read_csv(BIKE_CSV)
    write_days(bike, ["2012-03-01", "2012-03-02"], zone / "a.csv")
    sensor = sensor_for(make_defs, zone)
    instance = dg.DagsterInstance.ephemeral()

    first = tick(sensor, None, instance)
    assert ranges(first) == [("a.csv", "2012-03-01", "2012-03-02")]
    request = (first.run_requests or [])[0]
    assert set(request.asset_selection or []) == {dg.AssetKey([NAME, "raw"]), dg.AssetKey([NAME, "features"])}
    assert first.cursor is not None
    assert set(json.loads(first.cursor)) == {str(zone / "a.csv")}

    nothing = tick(sensor, first.cursor, instance)
    assert ranges(nothing) == []
    assert nothing.cursor == first.cursor

    write_days(bike, ["2012-03-05"], zone / "b.csv")
    partial = tick(sensor, nothing.cursor, instance)
    assert ranges(partial) == [("b.csv", "2012-03-05", "2012-03-05")]

    write_days(bike, ["2012-03-01", "2012-03-02", "2012-03-03"], zone / "a.csv")
    stat = (zone / "a.csv").stat()
    os.utime(zone / "a.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changed = tick(sensor, partial.cursor, instance)
    assert ranges(changed) == [("a.csv", "2012-03-01", "2012-03-03")]
    assert changed.cursor is not None
    assert set(json.loads(changed.cursor)) == {str(zone / "a.csv"), str(zone / "b.csv")}


def test_a_malformed_file_is_quarantined_with_a_reason_and_the_rest_still_runs(
    make_defs: PipelineFactory, zone: Path, platform_home: Path
) -> None:
    bike = pd.read_csv(BIKE_CSV)
    write_days(bike, ["2012-04-01"], zone / "good.csv")
    bad = bike.head(30).copy()
    bad["dteday"] = bad["dteday"].astype("object")
    bad.loc[3, "dteday"] = "not a date"
    bad.to_csv(zone / "bad.csv", index=False)
    shutil.copy(zone / "good.csv", zone / "no_target.csv")
    pd.read_csv(zone / "no_target.csv").drop(columns=["cnt"]).to_csv(zone / "no_target.csv", index=False)
    sensor = sensor_for(make_defs, zone)

    result = tick(sensor, None, dg.DagsterInstance.ephemeral())

    assert ranges(result) == [("good.csv", "2012-04-01", "2012-04-01")]
    assert sorted(p.name for p in zone.iterdir()) == ["good.csv"], "bad files leave the landing zone"
    quarantine = platform_home / "quarantine" / NAME
    assert (quarantine / "bad.csv").exists()
    assert "do not match format" in (quarantine / "bad.csv.reason.txt").read_text()
    assert "missing column(s) ['cnt']" in (quarantine / "no_target.csv.reason.txt").read_text()
    assert pd.read_csv(quarantine / "bad.csv").shape == bad.shape, "a quarantined file is kept whole"
    assert result.cursor is not None
    assert set(json.loads(result.cursor)) == {str(zone / "good.csv")}


def test_a_file_outside_the_partitions_requests_nothing(make_defs: PipelineFactory, zone: Path) -> None:
    bike = pd.read_csv(BIKE_CSV)
    write_days(bike, ["2011-06-01"], zone / "old.csv")
    result = tick(sensor_for(make_defs, zone), None, dg.DagsterInstance.ephemeral())
    assert ranges(result) == []
    assert result.cursor is not None
    assert str(zone / "old.csv") in json.loads(result.cursor)
