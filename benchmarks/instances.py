"""The Dagster instances a benchmark home can use: its dagster.yaml, written from the project's own instance files.

- `minimal`: telemetry off, everything else Dagster's default (SQLite, one event per commit).
- `local`: `make dev`'s instance (deploy/local/dagster.yaml): SQLite with the platform's batched event log, pools.
- `local_stock`: the same with Dagster's own SQLite event log (what `local` was before batching).
- `postgres`: production's instance (deploy/dagster.yaml) on the machine's PostgreSQL, minus what needs a cluster
  (the K8s run launcher and the queued coordinator: a benchmark run executes where it is started).
- `postgres_batched`: the same with the platform's batched PostgreSQL event log in place of Dagster's.

`postgres` and `postgres_batched` share one scratch database per home, created empty by `create_database`, so a home
can switch between them (the two event logs store the same records) and a section compares both on the same history.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kernel.paths import PROJECT_ROOT

LOCAL_INSTANCE = PROJECT_ROOT / "deploy" / "local" / "dagster.yaml"
PRODUCTION_INSTANCE = PROJECT_ROOT / "deploy" / "dagster.yaml"
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
KINDS = ("minimal", "local", "local_stock", "postgres", "postgres_batched")
# Each instance's twin with the other event log (batched vs Dagster's own), on the same databases.
OTHER_EVENT_LOG = {"local": "local_stock", "local_stock": "local", "postgres": "postgres_batched"}
OTHER_EVENT_LOG["postgres_batched"] = "postgres"
# Dagster's default event log storage, named explicitly so a home can switch to it and back.
STOCK_SQLITE_EVENT_LOG = {
    "module": "dagster._core.storage.event_log",
    "class": "SqliteEventLogStorage",
}


def database_for(dagster_home: Path) -> str:
    """The scratch database of a home: one per home, named after it and its benchmark run's temp dir."""
    name = f"{dagster_home.parent.parent.name}_{dagster_home.parent.name}".lower()
    return "bench_" + "".join(c if c.isalnum() else "_" for c in name)


def create_database(name: str) -> None:
    """An empty scratch database on the machine's PostgreSQL (trust auth), replacing one of the same name."""
    for statement in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run(
            ["psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-q", "-c", statement],
            check=True,
            capture_output=True,
        )


def instance_config(kind: str, dagster_home: Path) -> dict[str, Any]:
    """The dagster.yaml document of `kind` for the home `dagster_home`."""
    import yaml

    if kind not in KINDS:
        raise ValueError(f"unknown benchmark instance {kind!r}; choose from {', '.join(KINDS)}")
    if kind == "minimal":
        return {"telemetry": {"enabled": False}}
    if kind in ("local", "local_stock"):
        document = yaml.safe_load(LOCAL_INSTANCE.read_text())
        if kind == "local_stock":
            document["event_log_storage"] = STOCK_SQLITE_EVENT_LOG
        # The home's own storage folder, as `make dev` names it (devtools.stack.place_event_log).
        document["event_log_storage"] = {
            **document["event_log_storage"],
            "config": {"base_dir": str(dagster_home / "storage")},
        }
        return document
    document = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
    for cluster_only in ("run_launcher", "run_coordinator"):
        document.pop(cluster_only, None)
    postgres_db = {
        "hostname": PG_HOST,
        "port": PG_PORT,
        "db_name": database_for(dagster_home),
        "username": PG_USER,
        "password": "",
        "scheme": document["storage"]["postgres"]["postgres_db"].get("scheme", "postgresql+psycopg2"),
    }
    if kind == "postgres":
        document["storage"] = {"postgres": {"postgres_db": postgres_db}}
        return document
    del document["storage"]
    config = {"postgres_db": postgres_db}
    document["run_storage"] = {
        "module": "dagster_postgres.run_storage",
        "class": "PostgresRunStorage",
        "config": config,
    }
    document["schedule_storage"] = {
        "module": "dagster_postgres.schedule_storage",
        "class": "PostgresScheduleStorage",
        "config": config,
    }
    document["event_log_storage"] = {
        "module": "resources.event_log",
        "class": "BatchedPostgresEventLogStorage",
        "config": config,
    }
    return document


def write_instance(dagster_home: Path, kind: str, *, new: bool = False) -> None:
    """Write (or switch) the home's dagster.yaml to `kind`; a `new` home on PostgreSQL gets an empty database."""
    import yaml

    if new and kind.startswith("postgres"):
        create_database(database_for(dagster_home))
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance_config(kind, dagster_home), sort_keys=False))


@contextmanager
def switched(dagster_home: Path, kind: str) -> Iterator[None]:
    """The home on instance `kind` for the block, back to what it was after (same databases, other event log)."""
    config = dagster_home / "dagster.yaml"
    before = config.read_text()
    write_instance(dagster_home, kind)
    try:
        yield
    finally:
        config.write_text(before)
