"""Benchmark (g)'s synthetic fill (benchmarks/simulation.py) on real PostgreSQL, at 2 pipelines x 10 days.

One pipeline is filled by COPY (the fast path the benchmark uses), the other event by event through Dagster's own
`store_event` (what a run's writes do). The tables Dagster derives from events must come out the same for both, and
Dagster and the platform's own readers must read the COPY'd history back as it was generated.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from benchmarks import simulation as sim
from kernel.names import FINGERPRINT, RANGE_END, RANGE_START
from kernel.paths import PROJECT_ROOT
from kernel.settings import Settings
from platform_assets.definitions import build_definitions
from resources.verdicts import judgements, rejected_days

from .conftest import PgDatabase

pytestmark = pytest.mark.postgres

COPIED, STORED = "sim_0000", "sim_0001"
DAYS = sim.all_days()[:10]


@pytest.fixture(scope="module")
def checks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[str, bool]]]:
    specs = tmp_path_factory.mktemp("sim_specs")
    sim.write_specs(specs, [COPIED])
    settings = Settings(env="local", root=PROJECT_ROOT, home=specs / "home", specs_dir=specs, mlflow_ui_url="-")
    return sim.location_checks(build_definitions(settings), COPIED)


@pytest.fixture(scope="module")
def filled(
    postgres_database: PgDatabase, checks: dict[str, list[tuple[str, bool]]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dg.DagsterInstance]:
    """The production storage on a fresh database: one pipeline COPY'd, one stored through Dagster."""
    home = sim.instance_home(tmp_path_factory.mktemp("sim_dagster_home"), postgres_database.name)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        with contextlib.closing(sim.connect(postgres_database.name)) as connection:
            filler = sim.Filler(instance, connection)
            filler.pipeline(COPIED, checks, DAYS, copy=True)
            filler.pipeline(STORED, checks, DAYS, copy=False)
        yield instance
    finally:
        instance.dispose()


def _normalised(database: PgDatabase, sql: str, pipeline: str) -> list[str]:
    """The rows of one pipeline with what differs between pipelines made neutral: names, run ids, ids (relative to
    the pipeline's first event), times, fingerprints."""
    rows = database.query(sql, (f'%"{pipeline}"%',))
    first = database.scalar(
        "SELECT min(id) FROM event_logs WHERE run_id IN (SELECT run_id FROM runs WHERE run_body LIKE %s)",
        (f"%{pipeline}%",),
    )
    run_ids: dict[str, str] = {}
    out = []
    for row in rows:
        text = json.dumps([str(value) for value in row]).replace(pipeline, "P")
        for run_id in re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text):
            text = text.replace(run_id, run_ids.setdefault(run_id, f"run{len(run_ids)}"))
        text = re.sub(r"[0-9a-f]{64}", "HEX", text)  # fingerprints are per pipeline (read back in the tests below)
        text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?", "TIME", text)
        text = re.sub(r"\b1[6-9]\d{8}\.\d+\b", "TIME", text)
        text = re.sub(r'(storage_id\\": |@)(\d+)', lambda m: f"{m.group(1)}{int(m.group(2)) - first}", text)
        out.append(text)
    return out


def test_the_copy_derives_the_rows_dagster_writes(filled: dg.DagsterInstance, postgres_database: PgDatabase) -> None:
    queries = {
        "event_logs": "SELECT '@' || id, dagster_event_type, step_key, asset_key, partition, event FROM event_logs "
        "WHERE event LIKE %s ORDER BY id",
        "asset_check_executions": "SELECT asset_key, check_name, partition, execution_status, '@' || "
        "evaluation_event_storage_id, '@' || materialization_event_storage_id, evaluation_event FROM "
        "asset_check_executions WHERE asset_key LIKE %s ORDER BY id",
        "asset_event_tags": "SELECT '@' || event_id, asset_key, key, value FROM asset_event_tags WHERE asset_key "
        "LIKE %s ORDER BY id",
        "asset_keys": "SELECT asset_key, last_materialization, last_run_id, wipe_timestamp, cached_status_data, "
        "last_materialization_timestamp IS NOT NULL FROM asset_keys WHERE asset_key LIKE %s ORDER BY asset_key",
    }
    for table, sql in queries.items():
        copied = _normalised(postgres_database, sql, COPIED)
        stored = _normalised(postgres_database, sql, STORED)
        assert copied, table
        assert copied == stored, f"{table}: the COPY path differs from Dagster's own writes"


def test_dagster_reads_the_history_back(filled: dg.DagsterInstance) -> None:
    for stage in sim.STAGES:
        key = dg.AssetKey([COPIED, stage])
        assert filled.get_materialized_partitions(key) == set(DAYS)
        record = filled.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[DAYS[3]]), 1)
        materialisation = record.records[0].asset_materialization
        assert materialisation is not None
        assert materialisation.metadata[FINGERPRINT].value == sim.fingerprint(COPIED, stage, DAYS[3])
    runs = filled.get_run_records(dg.RunsFilter(tags={RANGE_START: DAYS[0], RANGE_END: DAYS[-1]}))
    assert len(runs) == 2
    latest = filled.get_latest_materialization_event(dg.AssetKey([COPIED, "model"]))  # asset_keys, as COPY left it
    assert latest is not None
    assert latest.asset_materialization is not None
    assert latest.asset_materialization.partition == DAYS[-1]


def test_the_day_gate_reads_the_generated_verdicts(
    filled: dg.DagsterInstance, checks: dict[str, list[tuple[str, bool]]]
) -> None:
    for stage in ("raw", "features", "model"):
        key = dg.AssetKey([COPIED, stage])
        blocking = [name for name, is_blocking in checks[stage] if is_blocking]
        stored: dict[str, str | None] = {day: sim.fingerprint(COPIED, stage, day) for day in DAYS}
        expected = {day for day in DAYS for name in blocking if not sim.verdict_passes(name, day)}
        assert set(rejected_days(filled, key, blocking, stored)) == expected
        for name in blocking:
            history = judgements(filled, dg.AssetCheckKey(key, name), DAYS)
            assert {day: [j.passed for j in found] for day, found in history.items()} == {
                day: [sim.verdict_passes(name, day)] for day in DAYS
            }
            assert {found[0].fingerprint for found in history.values()} == {stored[day] for day in DAYS}


def test_other_bytes_are_not_judged(filled: dg.DagsterInstance, checks: dict[str, Any]) -> None:
    """A day whose stored fingerprint no verdict named is rejected: the generated verdicts name their bytes."""
    key = dg.AssetKey([COPIED, "features"])
    blocking = [name for name, is_blocking in checks["features"] if is_blocking]
    reasons = rejected_days(filled, key, blocking, {DAYS[0]: "sha256:" + "0" * 64})
    assert "were never judged" in reasons[DAYS[0]]
