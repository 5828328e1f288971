"""The landing sensor on messy real-derived files (issue 16): an empty file, offsets that do not parse and a column
with no number are each quarantined with the reason once stable, and the good file beside them still runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from conftest import BIKE_CSV, PipelineFactory, bike_spec_document

NAME = "bike_messy_landing"


def sensor_for(make_defs: PipelineFactory, zone: Path, **source: Any) -> dg.SensorDefinition:
    document = bike_spec_document(
        name=NAME,
        source={"uri": str(zone / "*.csv"), **source},
        partitioning={"start_date": "2012-01-01", "end_date": "2013-01-01", "rebase_to_yesterday": False},
    )
    return make_defs(document).resolve_sensor_def(f"{NAME}_landing_sensor")


def tick(sensor: dg.SensorDefinition, cursor: str | None, instance: dg.DagsterInstance) -> dg.SensorResult:
    result = sensor(dg.build_sensor_context(cursor=cursor, instance=instance))
    assert isinstance(result, dg.SensorResult)
    return result


def reasons(zone: Path) -> dict[str, str]:
    """Quarantined file stem -> its reason."""
    folder = zone / "_quarantine" / NAME
    return {p.name.split(".")[0]: p.read_text() for p in folder.glob("*.reason.txt")} if folder.exists() else {}


def requested(result: dg.SensorResult) -> list[tuple[list[str], str, str]]:
    return [
        (
            [Path(p).name for p in json.loads(r.tags["platform/source_files"])],
            r.tags["dagster/asset_partition_range_start"],
            r.tags["dagster/asset_partition_range_end"],
        )
        for r in result.run_requests or []
    ]


def bike_days(days: list[str]) -> pd.DataFrame:
    bike = pd.read_csv(BIKE_CSV)
    dates = pd.to_datetime(bike["dteday"], format="%m/%d/%y").dt.strftime("%Y-%m-%d")
    return bike[dates.isin(days)].reset_index(drop=True)


def test_an_empty_file_is_quarantined_once_it_stays_empty(make_defs: PipelineFactory, tmp_path: Path) -> None:
    zone = tmp_path / "landing"
    zone.mkdir()
    (zone / "empty.csv").write_bytes(b"")
    bike_days(["2012-05-01"]).to_csv(zone / "good.csv", index=False)
    sensor = sensor_for(make_defs, zone)
    instance = dg.DagsterInstance.ephemeral()

    first = tick(sensor, None, instance)
    assert first.run_requests == [] and reasons(zone) == {}, "an empty file may be an upload that has not started"
    second = tick(sensor, first.cursor, instance)

    assert requested(second) == [(["good.csv"], "2012-05-01", "2012-05-01")]
    assert sorted(p.name for p in zone.iterdir()) == ["_quarantine", "good.csv"]
    assert "file is empty (0 bytes)" in reasons(zone)["empty"]
    assert json.loads(second.cursor or "{}")["pending"] == {}, "judged, not waited on forever"


def test_offsets_and_dead_columns_are_quarantined_with_the_reason(make_defs: PipelineFactory, tmp_path: Path) -> None:
    zone = tmp_path / "landing"
    zone.mkdir()
    day = bike_days(["2012-05-02"])
    iso = pd.to_datetime(day["dteday"], format="%m/%d/%y") + pd.to_timedelta(day["hr"], unit="h")
    written = iso.dt.strftime("%Y-%m-%dT%H:%M:%S-04:00")
    day.assign(when=written).to_csv(zone / "good.csv", index=False)
    day.assign(when=written.where(day.index != 5, "2012-05-02T05:00:00-04:xx")).to_csv(zone / "offset.csv", index=False)
    comma = day["temp"].map(lambda v: f"{v}".replace(".", ","))
    day.assign(when=written, temp=comma).to_csv(zone / "comma.csv", index=False)
    sensor = sensor_for(make_defs, zone, timestamp={"column": "when", "format": "ISO8601"})
    instance = dg.DagsterInstance.ephemeral()

    result = tick(sensor, tick(sensor, None, instance).cursor, instance)

    assert requested(result) == [(["good.csv"], "2012-05-02", "2012-05-03")], "-04:00 runs into the next UTC day"
    found = reasons(zone)
    assert set(found) == {"offset", "comma"}
    assert "1 value(s) in timestamp column 'when' do not match format 'ISO8601'" in found["offset"]
    assert "2012-05-02T05:00:00-04:xx" in found["offset"]
    assert "column 'temp' has no number in any of its 24 value(s)" in found["comma"]
