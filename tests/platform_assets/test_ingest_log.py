"""The ingest log through real runs: landed once, built from the log, lineage to the byte, corrections, retirement.

Real daily CSV files cut from the bike sample land in a landing zone; the real landing and retire sensors are
evaluated tick by tick and the runs they request execute on a real (ephemeral) Dagster instance with the real asset
store and GX checks. Only `raw` runs (features would need Ray and add nothing here).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from conftest import BIKE_CSV, PipelineFactory, bike_spec_document

from kernel.names import RANGE_END, RANGE_START, SOURCE_FILES_TAG
from kernel.pipeline import Pipeline
from kernel.spec import PipelineSpec
from ml import ingest
from resources.ingest_log import IngestLog
from resources.storage import PartitionedParquetIOManager

BIKE = pd.read_csv(BIKE_CSV)
DATES = pd.to_datetime(BIKE["dteday"], format="%m/%d/%y").dt.strftime("%Y-%m-%d")


def csv_days(*days: str, cnt: int | None = None) -> bytes:
    """The sample's rows of `days` as CSV bytes; `cnt` overwrites the target (a corrected delivery)."""
    rows = BIKE[DATES.isin(days)].copy()
    if cnt is not None:
        rows["cnt"] = cnt
    return rows.to_csv(index=False).encode()


@dataclass
class Zone:
    """A landing zone, the real code location over it, its sensors' cursors and the runs executed."""

    path: Path
    defs: dg.Definitions
    name: str
    instance: dg.DagsterInstance = field(default_factory=dg.DagsterInstance.ephemeral)
    cursors: dict[str, str | None] = field(default_factory=dict)

    @property
    def store(self) -> PartitionedParquetIOManager:
        store = (self.defs.resources or {})["io_manager"]
        assert isinstance(store, PartitionedParquetIOManager)
        return store

    @property
    def log(self) -> IngestLog:
        return IngestLog.of(self.store, self.name)

    def deliver(self, name: str, data: bytes) -> Path:
        path = self.path / name
        path.write_bytes(data)
        # A later delivery always looks changed, even within the filesystem's timestamp granularity.
        os.utime(path, ns=(time.time_ns(), time.time_ns()))
        return path

    def tick(self, sensor: str) -> list[dg.RunRequest]:
        definition = self.defs.resolve_sensor_def(f"{self.name}_{sensor}_sensor")
        result = definition(dg.build_sensor_context(cursor=self.cursors.get(sensor), instance=self.instance))
        assert isinstance(result, dg.SensorResult)
        self.cursors[sensor] = result.cursor
        return list(result.run_requests or [])

    def settle(self) -> list[dg.RunRequest]:
        """Two landing ticks: the first sees the files, the second finds them stable and requests their run."""
        assert self.tick("landing") == [], "nothing is requested on the tick that first sees a file"
        return self.tick("landing")

    def run(self, tags: dict[str, str]) -> dg.ExecuteInProcessResult:
        """Materialise raw (with its checks) as a requested run would, with the request's tags."""
        job = self.defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(
            instance=self.instance, asset_selection=[dg.AssetKey([self.name, "raw"])], tags=tags, raise_on_error=False
        )
        assert result.success
        return result

    def run_request(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        return self.run(dict(request.tags))

    def run_days(self, first: str, last: str) -> dg.ExecuteInProcessResult:
        """An untagged run (UI, CLI, backfill, automation) over first..last."""
        return self.run({RANGE_START: first, RANGE_END: last})

    def stored(self, day: str) -> tuple[pd.DataFrame, str | None]:
        stored = self.store.read_stored(dg.AssetKey([self.name, "raw"]), day)
        assert isinstance(stored.value, pd.DataFrame)
        return stored.value, stored.fingerprint

    def sources(self) -> list[str]:
        """The source file name of each manifest entry, in landing order."""
        return [Path(self.log.read_entry(name).source).name for name in self.log.names() if name.kind == "entry"]


def materialised(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    """Day -> metadata of each raw partition the run materialised."""
    days = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key.path[-1] == "raw":
            days[str(materialization.partition)] = {k: v.value for k, v in materialization.metadata.items()}
    return days


@pytest.fixture
def zone(make_defs: PipelineFactory, tmp_path: Path, request: pytest.FixtureRequest) -> Zone:
    landing = tmp_path / "landing"
    landing.mkdir()
    name = f"ingest_{request.node.name.removeprefix('test_')[:24]}"
    document = bike_spec_document(
        name=name,
        source={"uri": str(landing / "*.csv")},
        partitioning={"start_date": "2012-03-01", "end_date": "2012-04-01", "rebase_to_yesterday": False},
    )
    return Zone(landing, make_defs(document), name)


def test_a_removed_landing_file_changes_nothing_stored(zone: Zone) -> None:
    zone.deliver("a.csv", csv_days("2012-03-01", "2012-03-02", "2012-03-03"))
    zone.run_days("2012-03-01", "2012-03-03")  # the first run of an empty log lands what is there
    assert zone.sources() == ["a.csv"]
    before = {day: zone.stored(day) for day in ("2012-03-01", "2012-03-02", "2012-03-03")}
    assert all(len(frame) == 24 for frame, _ in before.values())

    (zone.path / "a.csv").unlink()
    rebuilt = zone.run_days("2012-03-01", "2012-03-03")

    assert {day: zone.stored(day)[1] for day in before} == {day: fp for day, (_, fp) in before.items()}
    for day, (frame, _) in before.items():
        pd.testing.assert_frame_equal(zone.stored(day)[0], frame)
    assert materialised(rebuilt)["2012-03-02"]["sources"][0]["source"].endswith("a.csv")  # type: ignore[index]


def test_a_file_still_uploading_is_never_read_by_a_run(zone: Zone) -> None:
    zone.deliver("a.csv", csv_days("2012-03-01"))
    (request,) = zone.settle()
    data = csv_days("2012-03-05", "2012-03-06")
    upload = zone.path / "b.csv"
    upload.write_bytes(data[: len(data) // 2])  # b.csv is being uploaded when the run for a.csv starts

    zone.run_request(request)
    assert zone.sources() == ["a.csv"], "the run lands the file it names, never the one still growing"

    # The sensor saw b.csv at one size, then it grew before its run started: the run does not read it.
    seen = ingest.SourceFile(str(upload), upload.stat().st_size, upload.stat().st_mtime_ns)
    with upload.open("ab") as out:
        out.write(data[len(data) // 2 :])
    tags = {
        RANGE_START: "2012-03-05",
        RANGE_END: "2012-03-06",
        SOURCE_FILES_TAG: json.dumps({seen.path: seen.fingerprint}),
    }
    result = zone.run(tags)
    landed = next(iter(materialised(result).values()))["landed"]
    assert "changed since it was seen" in landed[str(upload)]  # type: ignore[index]
    assert zone.sources() == ["a.csv"]
    assert len(zone.stored("2012-03-05")[0]) == 0

    (request,) = zone.settle()  # once stable, the sensor requests it and its run lands it
    zone.run_request(request)
    assert zone.sources() == ["a.csv", "b.csv"]
    assert len(zone.stored("2012-03-05")[0]) == 24


def test_the_same_content_twice_is_one_entry(zone: Zone) -> None:
    data = csv_days("2012-03-01", "2012-03-02")
    zone.deliver("a.csv", data)
    zone.run_request(*zone.settle())
    zone.deliver("a.csv", data)  # written again, same bytes: a new mtime
    zone.deliver("copy.csv", data)  # the same bytes under another name
    (request,) = zone.settle()

    result = zone.run_request(request)

    assert zone.sources() == ["a.csv"]
    landed = materialised(result)["2012-03-01"]["landed"]
    assert all("same bytes as live entry" in note for note in landed.values()), landed  # type: ignore[union-attr]
    assert len(zone.stored("2012-03-01")[0]) == 24, "no row counted twice"


def test_a_corrected_file_rebuilds_exactly_its_days_and_names_the_new_bytes(zone: Zone) -> None:
    for day in ("2012-03-01", "2012-03-02", "2012-03-03"):
        zone.deliver(f"{day}.csv", csv_days(day))
    zone.deliver("span.csv", csv_days("2012-03-10", "2012-03-11"))
    zone.run_request(*zone.settle())
    untouched = zone.stored("2012-03-01")[1]

    corrected = csv_days("2012-03-02", cnt=7)
    zone.deliver("2012-03-02.csv", corrected)
    (request,) = zone.settle()
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("2012-03-02", "2012-03-02")
    result = zone.run_request(request)

    assert set(materialised(result)) == {"2012-03-02"}
    (source,) = materialised(result)["2012-03-02"]["sources"]  # type: ignore[misc]
    assert source["sha256"] == hashlib.sha256(corrected).hexdigest()
    assert set(zone.stored("2012-03-02")[0]["cnt"]) == {7.0}
    assert zone.stored("2012-03-01")[1] == untouched

    # A correction that no longer holds a day: the day it drops is rebuilt too, without the superseded rows.
    zone.deliver("span.csv", csv_days("2012-03-10"))
    (request,) = zone.settle()
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("2012-03-10", "2012-03-11")
    zone.run_request(request)
    assert len(zone.stored("2012-03-10")[0]) == 24
    assert len(zone.stored("2012-03-11")[0]) == 0


def test_retiring_a_source_records_it_and_rebuilds_its_days(zone: Zone) -> None:
    zone.deliver("a.csv", csv_days("2012-03-01"))
    zone.deliver("b.csv", csv_days("2012-03-03", "2012-03-04"))
    zone.run_request(*zone.settle())
    assert zone.tick("retire") == []

    job = zone.defs.resolve_job_def(f"{zone.name}_retire")
    op = f"{zone.name}_retire_source"
    config = {"source": str(zone.path / "b.csv"), "reason": "sensor fault", "requested_by": "ana@example.com"}
    retired = job.execute_in_process(instance=zone.instance, run_config={"ops": {op: {"config": config}}})
    assert retired.success
    (observation,) = [e.asset_observation_data.asset_observation for e in retired.get_asset_observation_events()]
    assert observation.metadata["days"].value == ["2012-03-03", "2012-03-04"]
    assert observation.metadata["reason"].value == "sensor fault"
    tombstone = zone.log.read_entry(next(n for n in zone.log.names() if n.kind == "retire"))
    assert (tombstone.requested_by, len(tombstone.retired)) == ("ana@example.com", 1)

    (request,) = zone.tick("retire")
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("2012-03-03", "2012-03-04")
    assert zone.tick("retire") == [], "one request per tombstone"
    zone.run_request(request)
    assert len(zone.stored("2012-03-03")[0]) == 0 and len(zone.stored("2012-03-01")[0]) == 24
    assert (zone.path / "b.csv").exists(), "retiring takes the rows out of raw, not the file out of the landing zone"

    again = job.execute_in_process(
        instance=zone.instance, run_config={"ops": {op: {"config": config}}}, raise_on_error=False
    )
    assert not again.success, "nothing live is left to retire"


def history(zone: Zone, pipeline: Pipeline, days: list[str]) -> None:
    """Land one daily file per day straight into the log (what each day's landing run does first), from a folder the
    landing sensor does not watch (it would otherwise name them all in its next request)."""
    archive = zone.path.parent / "archive"
    archive.mkdir(exist_ok=True)
    for day in days:
        path = archive / f"{day}.csv"
        path.write_bytes(csv_days(day))
        stat = path.stat()
        assert zone.log.land(pipeline, ingest.SourceFile(str(path), stat.st_size, stat.st_mtime_ns)).entry


def test_a_run_reads_the_entries_of_its_days_whatever_the_history(zone: Zone) -> None:
    spec = PipelineSpec.model_validate(bike_spec_document(name=zone.name, source={"uri": str(zone.path / "*.csv")}))
    pipeline = Pipeline(spec=spec, root=zone.path)
    reads = []
    for start, count in (("2012-03-01", 2), ("2012-03-04", 20)):
        history(zone, pipeline, pd.date_range(start, periods=count).strftime("%Y-%m-%d").tolist())
        day = (pd.Timestamp(start) + pd.Timedelta(days=count)).strftime("%Y-%m-%d")
        zone.deliver(f"{day}.csv", csv_days(day))
        (request,) = zone.settle()
        assert (request.tags[RANGE_START], request.tags[RANGE_END]) == (day, day)
        metadata = materialised(zone.run_request(request))[day]
        reads.append(metadata["ingest_log_reads"])
    small, large = reads
    assert small["names_listed"] < large["names_listed"]  # type: ignore[index]
    assert small["entries_read"] == large["entries_read"] == 1  # type: ignore[index]
    assert small["copies_read"] == large["copies_read"] == 1  # type: ignore[index]
