"""Fixtures for the integration tests on a real PostgreSQL server: the server, throwaway databases, pipelines.

PostgreSQL is expected on 127.0.0.1:5432 with trust auth for `postgres` (override with `PLATFORM_TEST_PG_DSN`).
When it is unreachable the tests skip, except under CI (`CI` set), where a missing server is a failure.

This folder must stay a package (it has an __init__.py, like tests/deploy): pytest imports a conftest.py
outside a package under the bare name `conftest`, which would shadow tests/conftest.py for every later
`from conftest import ...` in the suite. The test modules here import from `.conftest`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
import psycopg2
import psycopg2.extensions
import pytest
import yaml
from support import cannot_run_here

from kernel.paths import PROJECT_ROOT
from kernel.settings import Settings
from platform_assets.definitions import build_definitions

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BIKE_SPEC = PROJECT_ROOT / "pipelines" / "bike_demand.yaml"
BIKE_CSV = PROJECT_ROOT / "data" / "bike_sharing" / "hour.csv"
TODAY = date(2013, 1, 1)  # as in tests/conftest.py: no spec here rebases, so the date only has to be fixed
PipelineFactory = Callable[[dict[str, Any]], dg.Definitions]

# The shapes of tests/platform_assets/test_pipeline_runs.py: ~60 days of features fill the 56-day training
# window of DAY, whose model passes the promotion gates.
FIRST, DAY = "2012-04-25", "2012-06-26"
FAST_TRAINING = {
    "window_days": 56,
    "candidates": [
        {"family": "hist_gradient_boosting", "params": {"max_iter": 100}},
        {"family": "ridge", "params": {"alpha": 1.0}},
    ],
}


def small_spec(name: str) -> dict[str, Any]:
    """The shipped bike spec on the shipped CSV, partitioned Mar..Jul 2012, with fast training and a lenient gate.

    Built here rather than with tests/conftest.py's `bike_spec_document`: next to this file, `from conftest
    import ...` resolves to this conftest for basedpyright (and, without an __init__.py here, for pytest too).
    """
    document: dict[str, Any] = yaml.safe_load(BIKE_SPEC.read_text())
    overrides: dict[str, Any] = {
        "name": name,
        "source": {"uri": str(BIKE_CSV)},
        "partitioning": {"start_date": "2012-03-01", "end_date": "2012-08-01", "rebase_to_yesterday": False},
        "training": FAST_TRAINING,
        "promotion": {"min_improvement_over_baseline": 0.0},
    }
    for section, value in overrides.items():
        current = document.get(section)
        document[section] = {**current, **value} if isinstance(value, dict) and isinstance(current, dict) else value
    return document


@dataclass(frozen=True)
class PgServer:
    """Where the server is, from a libpq DSN; the maintenance database is the DSN's own."""

    host: str
    port: int
    user: str
    password: str
    maintenance_db: str

    @classmethod
    def from_dsn(cls, dsn: str) -> PgServer:
        parts = psycopg2.extensions.parse_dsn(dsn)
        return cls(
            host=parts.get("host", "127.0.0.1"),
            port=int(parts.get("port", 5432)),
            user=parts.get("user", "postgres"),
            password=parts.get("password", ""),
            maintenance_db=parts.get("dbname", "postgres"),
        )

    def describe(self) -> str:
        """host:port/db as user, never the password."""
        return f"{self.user}@{self.host}:{self.port}/{self.maintenance_db}"

    def connect(self, dbname: str | None = None) -> psycopg2.extensions.connection:
        connection = psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password or None,
            dbname=dbname or self.maintenance_db,
            connect_timeout=5,
        )
        connection.autocommit = True
        return connection


@dataclass(frozen=True)
class PgDatabase:
    """One throwaway database on the test server."""

    server: PgServer
    name: str

    @property
    def url(self) -> str:
        """SQLAlchemy/libpq URL of this database (what MLflow's `--backend-store-uri` takes)."""
        userinfo = quote(self.server.user) + (f":{quote(self.server.password)}" if self.server.password else "")
        return f"postgresql://{userinfo}@{self.server.host}:{self.server.port}/{self.name}"

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        connection = self.server.connect(self.name)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
        finally:
            connection.close()

    def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        rows = self.query(sql, params)
        assert len(rows) == 1, rows
        return rows[0][0]

    def tables(self) -> set[str]:
        return {row[0] for row in self.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The server's DSN; skips (fails under CI) when PostgreSQL cannot be reached."""
    dsn = os.environ.get("PLATFORM_TEST_PG_DSN", DEFAULT_DSN)
    server = PgServer.from_dsn(dsn)
    try:
        server.connect().close()
    except psycopg2.Error as exc:
        cannot_run_here(f"PostgreSQL not reachable at {server.describe()}: {' '.join(str(exc).split())}")
    return dsn


@pytest.fixture(scope="session")
def postgres_server(postgres_dsn: str) -> PgServer:
    return PgServer.from_dsn(postgres_dsn)


def _admin(server: PgServer, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the maintenance database (autocommit: CREATE/DROP DATABASE need it)."""
    connection = server.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []
    finally:
        connection.close()


@pytest.fixture(scope="module")
def postgres_database(postgres_server: PgServer) -> Iterator[PgDatabase]:
    """A fresh, uniquely named database for one test module, dropped (connections terminated) afterwards."""
    name = f"platform_test_{uuid.uuid4().hex[:8]}"
    _admin(postgres_server, f'CREATE DATABASE "{name}"')
    try:
        yield PgDatabase(postgres_server, name)
    finally:
        # Pools of the code under test may still hold connections; DROP DATABASE refuses while any are open.
        _admin(
            postgres_server,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        _admin(postgres_server, f'DROP DATABASE IF EXISTS "{name}"')
        assert _admin(postgres_server, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)) == []


@pytest.fixture(scope="module")
def make_module_defs(platform_home: Path, tmp_path_factory: pytest.TempPathFactory) -> PipelineFactory:
    """`make_defs` for module-scoped fixtures: the code location for one spec document."""

    def build(document: dict[str, Any]) -> dg.Definitions:
        specs = tmp_path_factory.mktemp(f"specs_{document['name']}")
        (specs / f"{document['name']}.yaml").write_text(yaml.safe_dump(document))
        settings = Settings(
            env="local", root=PROJECT_ROOT, home=platform_home, specs_dir=specs, mlflow_ui_url="http://127.0.0.1:5000"
        )
        return build_definitions(settings, today=TODAY)

    return build
