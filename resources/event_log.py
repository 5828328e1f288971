"""Dagster's event log storages (SQLite, PostgreSQL) with batches written in one transaction.

Dagster writes every event on its own: a connection (SQLite: a new engine; PostgreSQL: a new connection, the storage
holds none open), a commit, and for an asset or check event a second one to the index. A range run writes thousands
(planned materialisations before it starts, a materialisation and a verdict per day and check), so that, not the
work, was most of its time. Dagster already hands the storage a run's planned events and a step's materialisations
as one batch when `DAGSTER_EVENT_BATCH_SIZE` is set, and the checks hand it each check's verdicts as one
(`checks/emit.py`); these storages write a batch the way Dagster writes each of its events (the same statements,
the same records) over one connection and commit it once. The storage turns batching on for the process that loads
it, so the instance config alone decides.

A batch is stored whole or not at all: if its transaction fails, Dagster stores its events one by one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import Field, StringSource
from dagster._core.events.log import EventLogEntry
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

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        with self._db_lock:  # Dagster's own per-connection lock, held for the whole batch
            _store_in_one_transaction(self, self._local, events)


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

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        _store_in_one_transaction(self, self._local, events)


def _store_in_one_transaction(
    storage: BatchedSqliteEventLogStorage | BatchedPostgresEventLogStorage,
    local: threading.local,
    events: Sequence[EventLogEntry],
) -> None:
    """Each event stored by Dagster's own `store_event`, every connection it opens being the batch's, committed
    together; rolled back (and raised, so Dagster stores the events one by one) if any statement fails."""
    batch = _Batch()
    local.batch = batch
    try:
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
