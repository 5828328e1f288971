"""The production Dagster storage (deploy/dagster.yaml's `storage` block) on a real PostgreSQL server.

The block is used as shipped; only its connection target changes (host, port, user, database, and `sslmode`
when the test server offers no TLS). The bike pipeline then runs in-process against that instance, and what
it recorded is read back from a second instance opened from the same file, and straight from the tables.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import yaml
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from support import check_results, run_range

from kernel.paths import PROJECT_ROOT

from .conftest import DAY, FIRST, PgDatabase, PipelineFactory, small_spec

pytestmark = pytest.mark.postgres

NAME = "bike_pg"
PRODUCTION_INSTANCE = PROJECT_ROOT / "deploy" / "dagster.yaml"
# The keys of `postgres_db` that say WHERE the database is; everything else must stay as shipped.
TARGET_KEYS = {"hostname", "port", "username", "db_name"}
PASSWORD_ENV = "DAGSTER_PG_PASSWORD"


def production_storage() -> dict[str, Any]:
    return yaml.safe_load(PRODUCTION_INSTANCE.read_text())["storage"]


def differing(left: dict[str, Any], right: dict[str, Any]) -> set[str]:
    return {k for k in left.keys() | right.keys() if left.get(k) != right.get(k)}


def storage_for(database: PgDatabase, db_name: str) -> dict[str, Any]:
    """deploy/dagster.yaml's storage block, pointed at `db_name` on the test server."""
    production = production_storage()
    storage = copy.deepcopy(production)
    target = storage["postgres"]["postgres_db"]
    target.update(
        hostname=database.server.host, port=database.server.port, username=database.server.user, db_name=db_name
    )
    if database.scalar("SHOW ssl") != "on":
        # The production server requires TLS; a local test server usually has none. libpq's `prefer` still
        # uses TLS whenever the server offers it.
        target["params"] = {**target["params"], "sslmode": "prefer"}
    shipped = production["postgres"]["postgres_db"]
    assert differing(target, shipped) <= TARGET_KEYS | {"params"}, "only the connection target may differ"
    assert differing(target["params"], shipped["params"]) <= {"sslmode"}
    assert target["password"] == {"env": PASSWORD_ENV}
    return storage


def write_instance(home: Path, storage: dict[str, Any]) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": storage}))
    return home


@pytest.fixture(scope="module")
def instance_home(postgres_database: PgDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A $DAGSTER_HOME whose dagster.yaml holds the production storage block; the password comes from the env."""
    home = write_instance(
        tmp_path_factory.mktemp("dagster_home"), storage_for(postgres_database, postgres_database.name)
    )
    with pytest.MonkeyPatch.context() as patch:
        # Trust auth accepts any password; a DSN from PLATFORM_TEST_PG_DSN may carry a real one.
        patch.setenv(PASSWORD_ENV, postgres_database.server.password or "unused-under-trust-auth")
        yield home


@pytest.fixture(scope="module")
def instance(instance_home: Path) -> Iterator[dg.DagsterInstance]:
    instance = dg.DagsterInstance.from_config(str(instance_home))
    try:
        yield instance
    finally:
        instance.dispose()


@dataclass
class PgRuns:
    defs: dg.Definitions
    features: dg.ExecuteInProcessResult
    model: dg.ExecuteInProcessResult
    predictions: dg.ExecuteInProcessResult

    @property
    def all(self) -> list[dg.ExecuteInProcessResult]:
        return [self.features, self.model, self.predictions]


@pytest.fixture(scope="module")
def runs(instance: dg.DagsterInstance, make_module_defs: PipelineFactory, ray_address: str) -> PgRuns:
    """Raw and features over ~60 days, model and champion for the last day, then its predictions."""
    defs = make_module_defs(small_spec(NAME))
    features = run_range(defs, ["raw", "features"], NAME, (FIRST, DAY), instance)
    assert features.success
    model = run_range(defs, ["model", "champion"], NAME, (DAY, DAY), instance)
    assert model.success
    predictions = run_range(defs, ["predictions"], NAME, (DAY, DAY), instance)
    assert predictions.success
    return PgRuns(defs, features, model, predictions)


@pytest.fixture(scope="module")
def reopened(instance_home: Path, runs: PgRuns) -> Iterator[dg.DagsterInstance]:
    """A second instance from the same dagster.yaml: whatever it reads came from PostgreSQL, not process memory."""
    instance = dg.DagsterInstance.from_config(str(instance_home))
    try:
        yield instance
    finally:
        instance.dispose()


def key(stage: str) -> dg.AssetKey:
    return dg.AssetKey([NAME, stage])


def days() -> set[str]:
    return set(pd.date_range(FIRST, DAY).strftime("%Y-%m-%d"))


def test_the_instance_uses_the_production_postgres_storage(
    instance: dg.DagsterInstance, postgres_database: PgDatabase
) -> None:
    from dagster_postgres import DagsterPostgresStorage
    from dagster_postgres.event_log import PostgresEventLogStorage
    from dagster_postgres.run_storage import PostgresRunStorage
    from dagster_postgres.schedule_storage import PostgresScheduleStorage

    assert isinstance(instance.get_ref().storage, DagsterPostgresStorage)
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    # Creating the instance created Dagster's schema in the fresh database.
    assert {"runs", "event_logs", "asset_keys", "asset_check_executions", "jobs"} <= postgres_database.tables()


def test_runs_are_stored_as_successful(runs: PgRuns, reopened: dg.DagsterInstance) -> None:
    records = reopened.get_run_records(dg.RunsFilter(run_ids=[r.run_id for r in runs.all]))
    assert {r.dagster_run.run_id: r.dagster_run.status for r in records} == {
        r.run_id: dg.DagsterRunStatus.SUCCESS for r in runs.all
    }
    features_run = next(r.dagster_run for r in records if r.dagster_run.run_id == runs.features.run_id)
    assert features_run.tags["dagster/asset_partition_range_start"] == FIRST
    assert features_run.tags["dagster/asset_partition_range_end"] == DAY
    assert features_run.asset_selection == {key("raw"), key("features")}


def test_materialisations_are_stored_per_partition(runs: PgRuns, reopened: dg.DagsterInstance) -> None:
    assert reopened.get_materialized_partitions(key("raw")) == days()
    assert reopened.get_materialized_partitions(key("features")) == days()
    assert reopened.get_materialized_partitions(key("model")) == {DAY}
    assert reopened.get_materialized_partitions(key("predictions")) == {DAY}

    records = reopened.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key("features"), asset_partitions=[DAY]), limit=10
    ).records
    assert [(r.run_id, r.partition_key) for r in records] == [(runs.features.run_id, DAY)]
    stored = records[0].asset_materialization
    assert stored is not None
    produced = next(
        event.event_specific_data.materialization  # type: ignore[union-attr]
        for event in runs.features.get_asset_materialization_events()
        if event.asset_key == key("features") and event.partition == DAY
    )
    assert stored.metadata == produced.metadata  # the whole metadata made the round trip

    champion = reopened.get_latest_materialization_event(key("champion"))
    assert champion is not None
    assert champion.run_id == runs.model.run_id
    model = reopened.get_latest_materialization_event(key("model"))
    assert model is not None
    assert model.run_id == runs.model.run_id


def test_asset_check_results_are_stored(runs: PgRuns, reopened: dg.DagsterInstance) -> None:
    specs = [spec for checks in runs.defs.asset_checks or [] for spec in checks.check_specs]
    ours = [spec for spec in specs if spec.asset_key.path[0] == NAME]
    assert ours
    records = reopened.event_log_storage.get_latest_asset_check_execution_by_key([spec.key for spec in ours])
    assert set(records) == {spec.key for spec in ours}, "every check of the materialised assets was recorded"

    # What each run produced, in process memory, against what the reopened instance read from PostgreSQL.
    expected = {result.run_id: check_results(result) for result in runs.all}
    for spec in ours:
        record = records[spec.key]
        evaluation = record.evaluation
        assert evaluation is not None, spec.key
        assert record.run_id in expected, spec.key
        assert evaluation.passed == expected[record.run_id][spec.name].passed, spec.key
        assert record.status is (
            AssetCheckExecutionRecordStatus.SUCCEEDED if evaluation.passed else AssetCheckExecutionRecordStatus.FAILED
        )
        if spec.blocking:
            assert evaluation.passed, f"blocking check {spec.key.to_user_string()} failed"


def test_the_rows_really_are_in_postgres(runs: PgRuns, postgres_database: PgDatabase) -> None:
    stored_runs = dict(postgres_database.query("SELECT run_id, status FROM runs"))
    assert stored_runs == {r.run_id: "SUCCESS" for r in runs.all}

    def materialisations(stage: str) -> set[str]:
        rows = postgres_database.query(
            "SELECT partition FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND asset_key = %s",
            (key(stage).to_string(),),
        )
        return {row[0] for row in rows}

    assert materialisations("features") == days()
    assert materialisations("model") == {DAY}
    events = postgres_database.scalar("SELECT count(*) FROM event_logs WHERE run_id = %s", (runs.features.run_id,))
    assert events >= 2 * len(days())
    checks = postgres_database.scalar(
        "SELECT count(*) FROM asset_check_executions WHERE run_id = ANY(%s)", ([r.run_id for r in runs.all],)
    )
    assert checks >= 8


def test_a_wrong_database_name_fails_clearly(
    postgres_database: PgDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster_postgres.utils import DagsterPostgresException

    missing = f"{postgres_database.name}_missing"
    home = write_instance(tmp_path / "dagster_home", storage_for(postgres_database, missing))
    monkeypatch.setenv(PASSWORD_ENV, postgres_database.server.password or "unused-under-trust-auth")
    # dagster-postgres retries a failed connection 5 times with exponential backoff (~12 s); the same
    # attempts without the sleeps.
    monkeypatch.setattr("dagster_postgres.utils.calculate_delay", lambda **_: 0.0)
    with pytest.raises(DagsterPostgresException, match="too many retries for DB connection") as raised:
        dg.DagsterInstance.from_config(str(home))
    assert f'database "{missing}" does not exist' in str(raised.value.__cause__)
