"""The landing sensor as a function of its cursor: first sight, stable, nothing new, new, changed and bad files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from conftest import BIKE_CSV, PipelineFactory, bike_spec_document

from ml import ingest

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


def settled(sensor: dg.SensorDefinition, cursor: str | None, instance: dg.DagsterInstance) -> dg.SensorResult:
    """Two ticks: the first sees new or changed files, the second finds them unchanged (stable) and reads them."""
    seen = tick(sensor, cursor, instance)
    assert seen.run_requests == [], "nothing is read on the tick that first sees a file"
    return tick(sensor, seen.cursor, instance)


def ranges(result: dg.SensorResult) -> list[tuple[str, str, str]]:
    return [
        (
            ", ".join(Path(path).name for path in json.loads(r.tags["platform/source_files"])),
            r.tags["dagster/asset_partition_range_start"],
            r.tags["dagster/asset_partition_range_end"],
        )
        for r in result.run_requests or []
    ]


def cursor_of(result: dg.SensorResult) -> dict[str, dict[str, str]]:
    assert result.cursor is not None
    return json.loads(result.cursor)


def quarantined(zone: Path) -> dict[str, str]:
    """`<landing>/_quarantine/<pipeline>/`: each quarantined file (unique name) -> its reason."""
    folder = zone / "_quarantine" / NAME
    files = sorted(p for p in folder.iterdir() if not p.name.endswith(".reason.txt")) if folder.exists() else []
    return {p.name: (folder / f"{p.name}.reason.txt").read_text() for p in files}


def test_cursor_cases_first_tick_nothing_new_new_file_changed_file(make_defs: PipelineFactory, zone: Path) -> None:
    bike = pd.read_csv(BIKE_CSV)
    write_days(bike, ["2012-03-01", "2012-03-02"], zone / "a.csv")
    sensor = sensor_for(make_defs, zone)
    instance = dg.DagsterInstance.ephemeral()

    seen = tick(sensor, None, instance)
    assert ranges(seen) == []
    assert cursor_of(seen) == {"done": {}, "pending": {str(zone / "a.csv"): fingerprint(zone / "a.csv")}}

    first = tick(sensor, seen.cursor, instance)
    assert ranges(first) == [("a.csv", "2012-03-01", "2012-03-02")]
    request = (first.run_requests or [])[0]
    assert set(request.asset_selection or []) == {dg.AssetKey([NAME, "raw"]), dg.AssetKey([NAME, "features"])}
    assert cursor_of(first) == {"done": {str(zone / "a.csv"): fingerprint(zone / "a.csv")}, "pending": {}}

    nothing = tick(sensor, first.cursor, instance)
    assert ranges(nothing) == []
    assert nothing.cursor == first.cursor

    write_days(bike, ["2012-03-05"], zone / "b.csv")
    partial = settled(sensor, nothing.cursor, instance)
    assert ranges(partial) == [("b.csv", "2012-03-05", "2012-03-05")]

    write_days(bike, ["2012-03-01", "2012-03-02", "2012-03-03"], zone / "a.csv")
    stat = (zone / "a.csv").stat()
    os.utime(zone / "a.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changed = settled(sensor, partial.cursor, instance)
    assert ranges(changed) == [("a.csv", "2012-03-01", "2012-03-03")]
    assert set(cursor_of(changed)["done"]) == {str(zone / "a.csv"), str(zone / "b.csv")}


def fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def test_a_cursor_of_the_earlier_format_counts_as_read(make_defs: PipelineFactory, zone: Path) -> None:
    """After an upgrade the sensor's stored cursor is `{path: fingerprint}`: those files are not requested again."""
    bike = pd.read_csv(BIKE_CSV)
    write_days(bike, ["2012-03-01"], zone / "a.csv")
    earlier = json.dumps({str(zone / "a.csv"): fingerprint(zone / "a.csv")})

    result = tick(sensor_for(make_defs, zone), earlier, dg.DagsterInstance.ephemeral())

    assert ranges(result) == []
    assert cursor_of(result)["done"] == json.loads(earlier)


def test_a_malformed_file_is_quarantined_with_a_reason_and_the_rest_still_runs(
    make_defs: PipelineFactory, zone: Path
) -> None:
    bike = pd.read_csv(BIKE_CSV)
    write_days(bike, ["2012-04-01"], zone / "good.csv")
    bad = bike.head(30).copy()
    bad["dteday"] = bad["dteday"].astype("object")
    bad.loc[3, "dteday"] = "not a date"
    bad.to_csv(zone / "bad.csv", index=False)
    shutil.copy(zone / "good.csv", zone / "no_target.csv")
    pd.read_csv(zone / "no_target.csv").drop(columns=["cnt"]).to_csv(zone / "no_target.csv", index=False)
    (zone / "garbage.csv").write_bytes(b"\xff\xfe\x00 not text at all \x81\n")
    sensor = sensor_for(make_defs, zone)

    result = settled(sensor, None, dg.DagsterInstance.ephemeral())

    assert ranges(result) == [("good.csv", "2012-04-01", "2012-04-01")]
    assert sorted(p.name for p in zone.iterdir()) == ["_quarantine", "good.csv"], "bad files leave the landing zone"
    reasons = {name.split(".")[0]: reason for name, reason in quarantined(zone).items()}
    assert set(reasons) == {"bad", "no_target", "garbage"}
    assert "do not match format" in reasons["bad"]
    assert "missing column(s) ['cnt']" in reasons["no_target"]
    assert "not a readable csv file" in reasons["garbage"]
    assert all(f"source: {zone}/" in reason for reason in reasons.values()), "the reason names where it came from"
    (bad_copy,) = (zone / "_quarantine" / NAME).glob("bad.*.csv")
    assert pd.read_csv(bad_copy).shape == bad.shape, "a quarantined file is kept whole"
    assert cursor_of(result) == {"done": {str(zone / "good.csv"): fingerprint(zone / "good.csv")}, "pending": {}}


def test_quarantined_files_are_never_listed_again(make_defs: PipelineFactory, zone: Path) -> None:
    """A glob deep enough to reach `<landing>/_quarantine/<p>/` still never sees what was quarantined."""
    bike = pd.read_csv(BIKE_CSV)
    (zone / "acme" / "march").mkdir(parents=True)
    write_days(bike, ["2012-03-01"], zone / "acme" / "march" / "good.csv")
    (zone / "acme" / "march" / "bad.csv").write_text("no,bikes,here\n1,2,3\n")
    document = bike_spec_document(
        name=NAME,
        source={"uri": str(zone / "*" / "*" / "*.csv")},
        partitioning={"start_date": "2012-01-01", "end_date": "2013-01-01", "rebase_to_yesterday": False},
    )
    sensor = make_defs(document).resolve_sensor_def(f"{NAME}_landing_sensor")
    instance = dg.DagsterInstance.ephemeral()

    result = settled(sensor, None, instance)
    assert ranges(result) == [("good.csv", "2012-03-01", "2012-03-01")]
    assert len(quarantined(zone)) == 1
    again = settled(sensor, result.cursor, instance)

    assert ranges(again) == []
    assert len(quarantined(zone)) == 1, "the quarantined copy is not judged (and quarantined) again"
    listed = [Path(f.path).name for f in ingest.list_source_files(document["source"]["uri"], Path("/"))]
    assert listed == ["good.csv"]


def test_a_file_outside_the_partitions_requests_nothing(make_defs: PipelineFactory, zone: Path) -> None:
    bike = pd.read_csv(BIKE_CSV)
    write_days(bike, ["2011-06-01"], zone / "old.csv")
    result = settled(sensor_for(make_defs, zone), None, dg.DagsterInstance.ephemeral())
    assert ranges(result) == []
    assert str(zone / "old.csv") in cursor_of(result)["done"]


def test_files_ready_on_the_same_tick_are_one_run_over_the_days_they_cover(
    make_defs: PipelineFactory, zone: Path
) -> None:
    """A year delivered as twelve monthly files: one run over the whole year that names all twelve, not twelve runs
    writing overlapping days; a file still being written waits for a later tick and a run of its own."""
    bike = pd.read_csv(BIKE_CSV)
    dates = pd.to_datetime(bike["dteday"], format="%m/%d/%y")
    for month in range(1, 13):
        bike[(dates.dt.year == 2012) & (dates.dt.month == month)].to_csv(zone / f"2012-{month:02d}.csv", index=False)
    sensor = sensor_for(make_defs, zone)
    instance = dg.DagsterInstance.ephemeral()
    seen = tick(sensor, None, instance)
    write_days(bike, ["2012-06-15"], zone / "late.csv")  # arrives after the first look: not stable yet

    result = tick(sensor, seen.cursor, instance)

    names = ", ".join(f"2012-{month:02d}.csv" for month in range(1, 13))
    assert ranges(result) == [(names, "2012-01-01", "2012-12-31")]
    assert str(zone / "late.csv") in cursor_of(result)["pending"]
    later = tick(sensor, result.cursor, instance)
    assert ranges(later) == [("late.csv", "2012-06-15", "2012-06-15")], "the late file alone, on its own tick"
    assert ranges(tick(sensor, later.cursor, instance)) == [], "every file is done"
    again = tick(sensor, seen.cursor, instance)  # a tick evaluated twice (a daemon restart): the same run key
    assert [r.run_key for r in again.run_requests or []] == [r.run_key for r in result.run_requests or []]
    assert (later.run_requests or [])[0].run_key != (result.run_requests or [])[0].run_key
