"""Dagster's event log storages (SQLite, PostgreSQL) with batches written in one transaction.

Dagster writes every event on its own: a connection (SQLite: a new engine; PostgreSQL: a new connection, the storage
holds none open), a commit, and for an asset or check event a second one to the index. A range run writes thousands
(planned materialisations before it starts, a materialisation and a verdict per day and check), so that, not the
work, was most of its time. Dagster already hands the storage a run's planned events and a step's materialisations
as one batch when `DAGSTER_EVENT_BATCH_SIZE` is set, and the checks hand it each check's verdicts as one
(`checks/emit.py`); these storages write a batch the way Dagster writes each of its events (the same statements,
the same records) over one connection and commit it once. The storage turns batching on for the process that loads
it, so the instance config alone decides.

Three kinds of events are written with fewer statements than Dagster's, into the same rows: a run of one run's asset
events within a batch (a range's planned or written materialisations: a statement per table for the run, not a few
per event, and the asset's row written once per kind of event, not once per event; both storages, PostgreSQL without
the per-event NOTIFY that Dagster's own batches skip too), and on SQLite, which `make dev` and the benchmarks run, a
batch of one run's partitioned verdicts (three statements for the batch, not three per verdict: its run's records,
their copies in the index, the planned executions they complete) and a planned partitioned check (its event
serialised once, not once per day). `tests/integration/test_event_log_batches.py` compares what readers see against
Dagster's own storage.

A batch is stored whole or not at all: if its transaction fails, Dagster stores its events one by one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import Any

from dagster import Field, StringSource
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluation,
    AssetCheckEvaluationPlanned,
)
from dagster._core.events import ASSET_EVENTS, DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sql import create_engine
from dagster._serdes import ConfigurableClassData
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

# Dagster's switch for batched event writes, read at each write.
BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
# Events per batch: a year of one asset's days in one commit; a batch is held in memory until it is written.
BATCH_SIZE = 1000
# The wait for a SQLite database another process is writing (Dagster's own: SQLITE_BUSY_TIMEOUT_SECONDS).
SQLITE_BUSY_TIMEOUT_S = 30


def enable_batches() -> None:
    """Turn on Dagster's batched event writes in this process (and the ones it starts) unless already configured."""
    os.environ.setdefault(BATCH_SIZE_ENV, str(BATCH_SIZE))


@dataclass
class _Batch:
    """The connections (by shard) of the batch being written, each in an open transaction."""

    connections: dict[str, tuple[Engine | None, Connection]] = field(default_factory=dict)


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log (one database per run plus the index), a batch of events in one commit per shard."""

    writes_check_batches = True  # checks/emit.py hands it each check's verdicts as one batch

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._local = threading.local()
        self._tables: set[str] = set()
        super().__init__(base_dir, inst_data)
        enable_batches()

    @classmethod
    def config_type(cls) -> Any:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(  # ty: ignore[invalid-method-override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> BatchedSqliteEventLogStorage:
        base_dir = config_value.get("base_dir")
        if base_dir is None:
            home = os.environ.get("DAGSTER_HOME")
            if not home:
                raise ValueError(
                    "event_log_storage (resources.event_log.BatchedSqliteEventLogStorage): no base_dir in the config "
                    "and DAGSTER_HOME is not set; give base_dir or set DAGSTER_HOME"
                )
            base_dir = Path(home) / "storage"  # where Dagster's default SQLite event log lives
        return cls(base_dir=str(base_dir), inst_data=inst_data)

    def has_table(self, table_name: str) -> bool:
        """Dagster asks for every asset event (a new engine each time); a table, once there, stays."""
        if table_name not in self._tables and super().has_table(table_name):
            self._tables.add(table_name)
        return table_name in self._tables

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        batch: _Batch | None = getattr(self._local, "batch", None)
        if batch is None:
            with super()._connect(shard) as connection:
                yield connection
            return
        if shard not in batch.connections:
            engine = create_engine(
                self.conn_string_for_shard(shard),
                poolclass=NullPool,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S},
            )
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            connection = engine.connect()
            connection.begin()
            batch.connections[shard] = (engine, connection)
        yield batch.connections[shard][1]

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        _store_planned_check(self, event, event_id)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        write = self._store_verdicts if _verdicts_of_one_run(events) else partial(_store_in_runs_of_kind, self)
        with self._db_lock:  # Dagster's own per-connection lock, held for the whole batch
            _store_in_one_transaction(self, self._local, events, write)

    def _store_verdicts(self, events: Sequence[EventLogEntry]) -> None:
        """One run's partitioned check evaluations as Dagster records each (its run's record, the copy in the index
        whose id the verdict names, and the planned execution it completes) in three statements for the whole batch
        rather than three per event: a year of verdicts was most of a check step's time. Each must complete exactly
        one planned execution of its run (one query finds them), else `NotPlanned` (rolled back, and Dagster stores
        them one by one)."""
        import sqlalchemy as db
        from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable

        executions = AssetCheckExecutionsTable
        rows = [self._event_to_row(event) for event in events]
        evaluations = [evaluation for event in events if (evaluation := _evaluation(event)) is not None]
        run_id = events[0].run_id
        with self.run_connection(run_id) as connection:
            connection.execute(SqlEventLogStorageTable.insert(), rows)
        with self.index_connection() as connection:
            keys = {(e.asset_key.to_string(), e.check_name, e.partition) for e in evaluations}
            planned = connection.execute(
                db.select(executions.c.asset_key, executions.c.check_name, executions.c.partition).where(
                    executions.c.run_id == run_id,
                    executions.c.check_name.in_({name for _, name, _ in keys}),
                    executions.c.partition.in_({partition for _, _, partition in keys}),
                )
            ).all()
            found = [tuple(row) for row in planned if tuple(row) in keys]
            if len(keys) != len(evaluations) or len(found) != len(keys) or set(found) != keys:
                raise NotPlanned(f"run {run_id}: {len(evaluations)} verdicts, {len(found)} planned executions")
            inserted = SqlEventLogStorageTable.insert().returning(
                SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
            )
            ids = connection.execute(inserted, rows).scalars().all()
            completed = (
                executions.update()
                .where(
                    executions.c.asset_key == db.bindparam("key"),
                    executions.c.check_name == db.bindparam("check"),
                    executions.c.run_id == run_id,
                    executions.c.partition == db.bindparam("day"),
                )
                .values(
                    execution_status=db.bindparam("status"),
                    evaluation_event=db.bindparam("event"),
                    evaluation_event_timestamp=db.bindparam("timestamp"),
                    evaluation_event_storage_id=db.bindparam("event_id"),
                    materialization_event_storage_id=db.bindparam("materialization_id"),
                )
            )
            connection.execute(
                completed,
                [
                    {
                        "key": evaluation.asset_key.to_string(),
                        "check": evaluation.check_name,
                        "day": evaluation.partition,
                        "status": (
                            AssetCheckExecutionRecordStatus.SUCCEEDED
                            if evaluation.passed
                            else AssetCheckExecutionRecordStatus.FAILED
                        ).value,
                        "event": row["event"],
                        "timestamp": row["timestamp"],
                        "event_id": event_id,
                        "materialization_id": (
                            evaluation.target_materialization_data.storage_id
                            if evaluation.target_materialization_data
                            else None
                        ),
                    }
                    for evaluation, row, event_id in zip(evaluations, rows, ids, strict=True)
                ],
            )


class NotPlanned(RuntimeError):
    """A batch of verdicts that does not complete exactly one planned check execution each."""


def _evaluation(event: EventLogEntry) -> AssetCheckEvaluation | None:
    data = event.dagster_event.event_specific_data if event.dagster_event else None
    return data if isinstance(data, AssetCheckEvaluation) else None


def _asset_event(event: EventLogEntry) -> bool:
    return event.dagster_event_type in ASSET_EVENTS and _asset_key(event) is not None


def _asset_key(event: EventLogEntry) -> str | None:
    key = event.dagster_event.asset_key if event.dagster_event else None
    return key.to_string() if key is not None else None


def _verdicts_of_one_run(events: Sequence[EventLogEntry]) -> bool:
    """A batch of check evaluations of one run, each of one partition (what `checks/emit.py` hands over)."""
    if not events or not events[0].run_id:
        return False
    evaluations = [_evaluation(event) for event in events]
    return all(
        event.run_id == events[0].run_id and event.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        for event in events
    ) and all(evaluation is not None and evaluation.partition is not None for evaluation in evaluations)


class BatchedPostgresEventLogStorage(PostgresEventLogStorage):
    """Dagster's PostgreSQL event log, a batch of events over one connection in one transaction."""

    writes_check_batches = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._local = threading.local()
        super().__init__(*args, **kwargs)
        enable_batches()

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> BatchedPostgresEventLogStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    @contextmanager
    def _connect(self) -> Iterator[Connection]:  # ty: ignore[invalid-method-override]
        batch: _Batch | None = getattr(self._local, "batch", None)
        if batch is None:
            with super()._connect() as connection:
                yield connection
            return
        if "" not in batch.connections:
            # The storage's engine autocommits each statement; a batch is one transaction.
            connection = self._engine.connect().execution_options(isolation_level="READ COMMITTED")
            connection.begin()
            batch.connections[""] = (None, connection)
        yield batch.connections[""][1]

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        _store_planned_check(self, event, event_id)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        _store_in_one_transaction(self, self._local, events, partial(_store_in_runs_of_kind, self))


def _store_in_runs_of_kind(
    storage: BatchedSqliteEventLogStorage | BatchedPostgresEventLogStorage, events: Sequence[EventLogEntry]
) -> None:
    """The batch in its order: each run of consecutive asset events of one run (a range's planned or written
    materialisations) by `_store_asset_events`, any other event by Dagster's `store_event`."""
    for (bulk, _), group in groupby(events, key=lambda event: (_asset_event(event), event.run_id)):
        if bulk:
            _store_asset_events(storage, list(group))
        else:
            for event in group:
                storage.store_event(event)


def _store_asset_events(
    storage: BatchedSqliteEventLogStorage | BatchedPostgresEventLogStorage, events: Sequence[EventLogEntry]
) -> None:
    """One run's asset events as Dagster's `store_event` records each (its run's record, on SQLite also its copy in
    the index, the event's tags, the asset's row), serialised once and in one statement per table rather than a few
    per event. The asset's row is written by the last event of each kind (materialisation, planned, observation) of
    each asset: each kind sets the same columns every time, so that leaves the row as writing every event would."""
    from dagster._core.storage.event_log.schema import SqlEventLogStorageTable

    rows = [storage._event_to_row(event) for event in events]
    if isinstance(storage, SqliteEventLogStorage):  # a database per run, asset events copied into the index
        with storage.run_connection(events[0].run_id) as connection:
            connection.execute(SqlEventLogStorageTable.insert(), rows)
    with storage.index_transaction() as connection:
        inserted = SqlEventLogStorageTable.insert().returning(
            SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
        )
        ids = connection.execute(inserted, rows).scalars().all()
        storage._store_asset_event_tags(connection, events, ids)
        last = {(event.dagster_event_type, _asset_key(event)): index for index, event in enumerate(events)}
        for index in sorted(last.values()):
            storage._store_asset_event(connection, events[index], ids[index])


def _store_in_one_transaction(
    storage: BatchedSqliteEventLogStorage | BatchedPostgresEventLogStorage,
    local: threading.local,
    events: Sequence[EventLogEntry],
    write: Callable[[Sequence[EventLogEntry]], None] | None = None,
) -> None:
    """The events stored by `write` (by default each by Dagster's own `store_event`), every connection it opens being
    the batch's, committed together; rolled back (and raised, so Dagster stores the events one by one) if any
    statement fails."""
    batch = _Batch()
    local.batch = batch
    try:
        if write is not None:
            write(events)
        else:
            for event in events:
                storage.store_event(event)
        for _, connection in batch.connections.values():
            connection.commit()
    except BaseException:
        for _, connection in batch.connections.values():
            connection.rollback()
        raise
    finally:
        local.batch = None
        for engine, connection in batch.connections.values():
            connection.close()
            if engine is not None:
                engine.dispose()


def _store_planned_check(
    storage: BatchedSqliteEventLogStorage | BatchedPostgresEventLogStorage, event: EventLogEntry, event_id: int | None
) -> None:
    """A planned check's execution row per planned partition, as Dagster writes them, with the planned event serialised
    once and the rows sent as one parameter list: Dagster serialises the event (its whole partition set) again for
    every row, quadratic in a range's days, into one statement as long as the range."""
    from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
    from dagster_shared.serdes import serialize_value

    planned = event.dagster_event.event_specific_data if event.dagster_event else None
    if not isinstance(planned, AssetCheckEvaluationPlanned):
        raise TypeError(f"not a planned check evaluation: {event.dagster_event_type}")
    partitions = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
    serialised = serialize_value(event)
    with storage.index_connection() as connection:
        connection.execute(
            AssetCheckExecutionsTable.insert(),
            [
                {
                    "asset_key": planned.asset_key.to_string(),
                    "check_name": planned.check_name,
                    "partition": partition,
                    "run_id": event.run_id,
                    "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
                    "evaluation_event": serialised,
                    "evaluation_event_timestamp": storage._event_insert_timestamp(event),
                    "evaluation_event_storage_id": event_id,
                }
                for partition in partitions
            ],
        )
