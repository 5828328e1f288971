"""The batched event logs (resources/event_log.py) record a batch exactly as Dagster records its events one by one.

One run's worth of events (planned materialisations of a range, planned check evaluations, materialisations,
per-day verdicts) is stored twice, by Dagster's own storage event by event and by the batched one in batches, and
everything the platform and the UI read back is compared: the run's records, the materialised and failed partitions,
and each day's check execution record (the verdict the day gate reads). A batch that fails is rolled back whole, so
Dagster's fallback (each event again, one by one) writes it once.
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationPlanned,
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.partitions.subset import DefaultPartitionsSubset
from dagster._core.events import (
    AssetMaterializationPlannedData,
    DagsterEvent,
    DagsterEventType,
    EventSpecificData,
    StepMaterializationData,
)
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.base import EventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster_postgres.event_log import PostgresEventLogStorage
from sqlalchemy.engine import Connection

from resources.event_log import BatchedPostgresEventLogStorage, BatchedSqliteEventLogStorage, NotPlanned

from .conftest import PgDatabase

CHECK_NAME = "passes_expectations"
DAYS = [f"2012-01-{d:02d}" for d in range(1, 11)]
FAILED = {"2012-01-03", "2012-01-07"}


def _entry(run_id: str, event_type: DagsterEventType, data: EventSpecificData) -> EventLogEntry:
    event = DagsterEvent(event_type_value=event_type.value, job_name="job", event_specific_data=data, step_key="s")
    return EventLogEntry(
        error_info=None, level=10, user_message="", run_id=run_id, timestamp=time.time(), dagster_event=event
    )


def asset(run_id: str) -> dg.AssetKey:
    """Each run its own asset: the two storages may share a database (PostgreSQL)."""
    return dg.AssetKey(["batch", run_id])


def run_events(run_id: str) -> list[list[EventLogEntry]]:
    """A range run's events in the batches Dagster hands over before its checks: planned, then materialised."""
    key = asset(run_id)
    planned = [
        _entry(run_id, DagsterEventType.ASSET_MATERIALIZATION_PLANNED, AssetMaterializationPlannedData(key, day))
        for day in DAYS
    ]
    planned.append(
        _entry(
            run_id,
            DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
            AssetCheckEvaluationPlanned(
                asset_key=key, check_name=CHECK_NAME, partitions_subset=DefaultPartitionsSubset(set(DAYS))
            ),
        )
    )
    materialised = [
        _entry(
            run_id,
            DagsterEventType.ASSET_MATERIALIZATION,
            StepMaterializationData(dg.AssetMaterialization(key, partition=day, metadata={"fingerprint": day})),
        )
        for day in DAYS[:-1]  # the last day was planned, never written
    ]
    return [planned, materialised]


def judged_events(storage: EventLogStorage, run_id: str) -> list[EventLogEntry]:
    """The checks' batch: a verdict per written day naming the bytes judged, each targeting its day's
    materialisation as recorded in `storage` but the first (bytes no materialisation recorded)."""
    key = asset(run_id)
    written = storage.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=100).records
    by_day = {record.partition_key: record for record in written}
    return [
        _entry(
            run_id,
            DagsterEventType.ASSET_CHECK_EVALUATION,
            dg.AssetCheckEvaluation(
                asset_key=key,
                check_name=CHECK_NAME,
                passed=day not in FAILED,
                partition=day,
                blocking=False,
                metadata={"fingerprint": day},
                target_materialization_data=None
                if day == DAYS[0]
                else AssetCheckEvaluationTargetMaterializationData(
                    storage_id=by_day[day].storage_id, run_id=run_id, timestamp=by_day[day].timestamp
                ),
            ),
        )
        for day in DAYS[:-1]
    ]


def recorded(storage: EventLogStorage, run_id: str) -> dict[str, object]:
    """What readers see of the run: its events in order, materialised and unfinished days, each day's verdict."""
    records = storage.get_records_for_run(run_id).records
    return {
        "events": [
            (
                r.event_log_entry.dagster_event_type,
                getattr(r.event_log_entry.dagster_event.event_specific_data, "partition", None),
            )
            for r in records
            if r.event_log_entry.dagster_event is not None
        ],
        "materialised": storage.get_materialized_partitions(asset(run_id)),
        "planned_not_written": set(
            storage.get_latest_asset_partition_materialization_attempts_without_materializations(asset(run_id))
        ),
        "verdicts": day_verdicts(storage, run_id),
        "judged": {
            record.partition: (
                type(data := record.event.dagster_event.event_specific_data).__name__,
                getattr(data, "passed", None),
                getattr(data, "metadata", None),
            )
            for record in storage.get_asset_check_execution_history(check_key(run_id), limit=100)
            if record.event is not None and record.event.dagster_event is not None
        },
        "partitions_tab": partitions_tab(storage, run_id),
        "asset_row": asset_row(storage, run_id),
    }


def asset_row(storage: EventLogStorage, run_id: str) -> tuple[object, ...]:
    """The asset's own row, which a batch writes once per kind of event: its latest materialisation (the day and
    the bytes it names), the run that last touched it, whether the asset shows in the catalogue."""
    [record] = storage.get_asset_records([asset(run_id)])
    entry = record.asset_entry
    latest = entry.last_materialization_record
    materialisation = latest.asset_materialization if latest is not None else None
    return (
        latest.partition_key if latest is not None else None,
        materialisation.metadata if materialisation is not None else None,
        entry.last_run_id == run_id,
        storage.has_asset_key(asset(run_id)),
    )


def partitions_tab(storage: EventLogStorage, run_id: str) -> dict[str | None, tuple[object, bool, bool, bool]]:
    """What the UI's Partitions tab shows of each day: its latest verdict, whether it names its check event, whether
    it judged the day's latest materialisation, and whether this run planned it."""
    return {
        info.partition_key: (
            info.latest_execution_status,
            info.latest_check_event_storage_id is not None,
            info.latest_target_materialization_storage_id == info.latest_materialization_storage_id,
            info.latest_planned_run_id == run_id,
        )
        for info in storage.get_asset_check_partition_info([check_key(run_id)])
    }


def check_key(run_id: str) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(asset(run_id), CHECK_NAME)


def day_verdicts(storage: EventLogStorage, run_id: str) -> dict[str | None, AssetCheckExecutionRecordStatus]:
    """Each day's check execution record, as the day gate reads it."""
    history = storage.get_asset_check_execution_history(check_key(run_id), limit=100)
    return {record.partition: record.status for record in history}


def compare(stock: EventLogStorage, batched: BatchedSqliteEventLogStorage | BatchedPostgresEventLogStorage) -> None:
    for batch in run_events("stock"):
        for event in batch:
            stock.store_event(event)
    for event in judged_events(stock, "stock"):
        stock.store_event(event)
    for batch in run_events("batched"):
        batched.store_event_batch(batch)
    batched.store_event_batch(judged_events(batched, "batched"))
    expected, got = recorded(stock, "stock"), recorded(batched, "batched")
    assert got["events"] and got == expected
    tab = partitions_tab(batched, "batched")
    assert [day for day, (_, _, targets_latest, _) in sorted(tab.items()) if not targets_latest] == [DAYS[0]]
    assert got["planned_not_written"] == {DAYS[-1]}
    verdicts = day_verdicts(batched, "batched")
    assert {d for d, s in verdicts.items() if s == AssetCheckExecutionRecordStatus.FAILED} == FAILED
    assert verdicts[DAYS[-1]] == AssetCheckExecutionRecordStatus.PLANNED


def failing_batch_leaves_nothing(
    batched: BatchedSqliteEventLogStorage | BatchedPostgresEventLogStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement that fails mid-batch (the asset's row, after every event of the batch was inserted) rolls back
    what the batch wrote before it."""
    planned = run_events("broken")[0]

    def fail(conn: Connection, event: EventLogEntry, event_id: int) -> None:
        raise RuntimeError("injected")

    with monkeypatch.context() as patched:
        patched.setattr(batched, "_store_asset_event", fail)
        with pytest.raises(RuntimeError, match="injected"):
            batched.store_event_batch(planned)
    assert batched.get_records_for_run("broken").records == []
    batched.store_event_batch(planned)  # Dagster's fallback stores them again: once
    assert len(batched.get_records_for_run("broken").records) == len(planned)


def unplanned_verdicts_fall_back(batched: BatchedSqliteEventLogStorage) -> None:
    """Verdicts that complete no planned execution (a run without planned events) are not written as a batch:
    nothing is left of it, and Dagster's fallback (each event through `store_event`) records them."""
    for batch in run_events("unplanned"):
        batched.store_event_batch(
            [e for e in batch if e.dagster_event_type != DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED]
        )
    judged = judged_events(batched, "unplanned")
    written = len(batched.get_records_for_run("unplanned").records)
    with pytest.raises(NotPlanned):
        batched.store_event_batch(judged)
    assert len(batched.get_records_for_run("unplanned").records) == written
    for event in judged:
        batched.store_event(event)
    assert set(day_verdicts(batched, "unplanned")) == set(DAYS[:-1])


def test_sqlite_batches_record_what_single_events_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stock = SqliteEventLogStorage(str(tmp_path / "stock"))
    batched = BatchedSqliteEventLogStorage(str(tmp_path / "batched"))
    compare(stock, batched)
    failing_batch_leaves_nothing(batched, monkeypatch)
    unplanned_verdicts_fall_back(batched)


@pytest.mark.postgres
def test_postgres_batches_record_what_single_events_record(
    postgres_database: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres_database.url.replace("postgresql://", "postgresql+psycopg2://")
    stock = PostgresEventLogStorage(url)
    batched = BatchedPostgresEventLogStorage(url)
    compare(stock, batched)
    failing_batch_leaves_nothing(batched, monkeypatch)
