"""Section (g): the platform's Dagster instance at 10, 100, ... pipelines, filled synthetically on real PostgreSQL.

    .venv/bin/python benchmarks/simulation.py                      # sizes 10,30,100 (as `make bench-sim`)
    .venv/bin/python benchmarks/simulation.py --sizes 10,100,300 --keep

One scratch database (`sim_g`, dropped at the end unless --keep) is created with deploy/dagster.yaml's storage block
(dagster-postgres), pointed at 127.0.0.1:5432. It is filled size by size (10 pipelines, then 90 more, ...), each
pipeline a copy of pipelines/bike_demand.yaml under a new name over 1,826 daily partitions (2020-01-02..2024-12-31),
with what a year-long range run per pipeline and year writes: for each daily asset and day an
ASSET_MATERIALIZATION_PLANNED and an ASSET_MATERIALIZATION (the platform's metadata, its fingerprint, the
`dagster/data_version` tag Dagster indexes), for each check one ASSET_CHECK_EVALUATION_PLANNED per run and one
ASSET_CHECK_EVALUATION per day naming the fingerprint it judged (checks/emit.py), a few per cent failing. The events
are Dagster's own objects serialised with its serdes, once per run and kind with placeholder values, then the
placeholders are filled per day and the rows COPY'd into `event_logs`, with the rows Dagster derives from them:
`asset_check_executions` (as the planned event inserts and the evaluation updates it), `asset_event_tags`,
`asset_keys` (through the storage's own `store_asset_event`), and the runs (`add_run`). The partition status cache
is left as a real write leaves it: empty until a reader (the UI, the automation tick) computes it.

After each size it measures, with the platform's own code and Dagster's:

- one automation tick: `evaluate_automation_conditions` over the whole code location (what the automation sensor
  runs), the first (no cursor: every asset and partition evaluated, status caches built) and the next one;
- the verdict lookup of a 365-day window: `resources.verdicts.rejected_days` over the features' blocking checks;
- the champion decision: the instance reads of `newest_candidates` (materialised model days, their gate verdicts,
  the materialising run of the newest passing day) and `ml.promotion.decide`; the store and MLflow reads it also
  makes are per pipeline, not per instance, and are not part of this measure;
- the asset page: the UI's `PartitionHealthQuery` and `AssetViewDefinitionQuery`/checks over GraphQL, through
  Dagster's GraphQL schema on a workspace that loads the code location in a code server, as dagster-webserver does;
- the database size.

Results go into benchmarks/results/latest.json under `figures.g` (other sections carried over).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

_PROJECT_DIR = str(Path(__file__).resolve().parents[1])
if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = _PROJECT_DIR
elif _PROJECT_DIR not in sys.path:
    sys.path.insert(0, _PROJECT_DIR)

import yaml  # noqa: E402

from kernel.paths import PROJECT_ROOT  # noqa: E402

if TYPE_CHECKING:
    import dagster as dg
    import psycopg2.extensions

FIRST_DAY = date(2020, 1, 2)
DAYS = 1826
RUN_DAYS = 365  # one range run per pipeline and year, as a backfill of a year makes
STAGES = ("raw", "features", "model", "predictions", "backtest")
FAIL_EVERY = 37  # one check-day in ~37 fails (a few per cent), so lookups find rejected days
DSN = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
DATABASE = "sim_g"
PASSWORD_ENV = "DAGSTER_PG_PASSWORD"
TARGETS = {
    # The automation sensor ticks every 30 s (sensors/automation.py); a longer tick falls behind its interval.
    "tick_s_max": 30.0,
    # The day gate runs in every range run and every check; a year's lookup must stay well under a step's cost.
    "verdict_lookup_365_s_max": 1.0,
    # The champion asset's instance reads, once per model materialisation.
    "champion_decision_s_max": 5.0,
    # What a user waits for when opening an asset page.
    "graphql_asset_page_s_max": 2.0,
}
TARGET_PIPELINES = 100  # the size the targets are judged at (the middle size)
# The UI's partition bar (dagster-webserver's bundled PartitionHealthQuery, verbatim but for MultiPartition fields).
PARTITION_HEALTH_QUERY = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
        ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
      }
    }
  }
}
"""
# The asset page's header and checks (after the UI's AssetViewDefinitionQuery and its checks tab).
ASSET_VIEW_QUERY = """
query AssetViewDefinitionQuery($assetKey: AssetKeyInput!) {
  assetOrError(assetKey: $assetKey) {
    ... on Asset {
      id
      key { path }
      assetMaterializations(limit: 1) { timestamp runId partition }
      definition {
        id
        groupName
        automationCondition { label expandedLabel }
        partitionDefinition { description }
        assetChecksOrError {
          ... on AssetChecks {
            checks { name blocking executionForLatestMaterialization { status runId timestamp } }
          }
        }
      }
    }
  }
}
"""


def pipeline_names(count: int, start: int = 0) -> list[str]:
    return [f"sim_{index:04d}" for index in range(start, count)]


def write_specs(specs_dir: Path, names: Sequence[str]) -> None:
    """Copies of the bike spec under `names`, over the simulated 1,826 days (no rebase: the dates are fixed)."""
    document: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "pipelines" / "bike_demand.yaml").read_text())
    last = FIRST_DAY + timedelta(days=DAYS)
    document["partitioning"] = {"start_date": str(FIRST_DAY), "end_date": str(last), "rebase_to_yesterday": False}
    specs_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (specs_dir / f"{name}.yaml").write_text(yaml.safe_dump({**document, "name": name}))


def all_days() -> list[str]:
    return [str(FIRST_DAY + timedelta(days=i)) for i in range(DAYS)]


def fingerprint(pipeline: str, stage: str, day: str) -> str:
    """The simulated bytes' fingerprint (the form the asset store records: `sha256:<hex>`)."""
    return "sha256:" + hashlib.sha256(f"{pipeline}/{stage}/{day}".encode()).hexdigest()


def verdict_passes(check: str, day: str) -> bool:
    """Whether the simulated verdict passes: deterministic, about one check-day in FAIL_EVERY fails (the same days in
    every pipeline, so two pipelines' histories differ only by their names, run ids and fingerprints)."""
    return int(hashlib.md5(f"{check}/{day}".encode()).hexdigest()[:8], 16) % FAIL_EVERY != 0


# --- the instance -------------------------------------------------------------------------------------------


def connect(dbname: str = "postgres") -> psycopg2.extensions.connection:
    import psycopg2

    connection = psycopg2.connect(dbname=dbname, connect_timeout=5, **DSN)
    connection.autocommit = True
    return connection


def create_database(name: str) -> None:
    with contextlib.closing(connect()) as connection, connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with contextlib.closing(connect()) as connection, connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def instance_home(home: Path, database: str) -> Path:
    """A $DAGSTER_HOME whose dagster.yaml is deploy/dagster.yaml's storage block aimed at the local server."""
    storage = copy.deepcopy(yaml.safe_load((PROJECT_ROOT / "deploy" / "dagster.yaml").read_text())["storage"])
    target = storage["postgres"]["postgres_db"]
    target.update(hostname=DSN["host"], port=DSN["port"], username=DSN["user"], db_name=database)
    target["params"] = {**target["params"], "sslmode": "prefer"}  # the local server offers no TLS
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": storage, "telemetry": {"enabled": False}}))
    os.environ.setdefault(PASSWORD_ENV, "unused-under-trust-auth")
    return home


# --- the events -----------------------------------------------------------------------------------------------

DAY_MARK = "@@DAY@@"
FP_MARK = "@@FINGERPRINT@@"
VERSION_MARK = "@@DATAVERSION@@"
STORAGE_MARK = 987654321012345  # an int sentinel: serdes writes it bare
TIME_MARK = 4102444800.25  # a float sentinel: serdes writes its repr


def _stage_metadata(stage: str, run_days: Sequence[str]) -> dict[str, Any]:
    """The metadata the platform records on one day's materialisation in a range run (labels and kinds as a real
    run writes them: the run's output metadata, then the day's own entries and fingerprint; see
    resources/storage.py)."""
    import dagster as dg

    columns = ["timestamp", "cnt", "temp", "atemp", "hum", "windspeed", "holiday", "workingday", "weathersit"]
    if stage != "raw":
        columns += ["hour", "day_of_week", "month", "lag_24h", "lag_48h", "lag_168h", "roll_mean_24h"]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, "float64") for c in columns])
    span = f"{run_days[0]} 00:00:00 .. {run_days[-1]} 23:00:00"
    common: dict[str, Any] = {
        "dagster/row_count": 24 * len(run_days),
        "dagster/column_schema": schema,
        "time_range": span,
    }
    per_stage: dict[str, dict[str, Any]] = {
        "raw": {
            "sources": dg.MetadataValue.json([{"source": "data/bike_sharing/hour.csv", "entry": "0"}]),
            "rows_this_day": 24,
            "empty_partitions": 0,
            "source_files": dg.MetadataValue.json(["data/bike_sharing/hour.csv"]),
            "coercion_errors": dg.MetadataValue.json({}),
            "duplicates_policy": "keep_last",
            "duplicate_rows_collapsed": 0,
            "rebase_shift_days": 0,
        },
        "features": {"days_built": len(run_days), "days_rejected": 0, "rejected_days": dg.MetadataValue.json({})},
        "model": {"model_version": "1", "holdout_mae": 41.2, "baseline_mae": 55.0, "family": "hist_gradient_boosting"},
        "predictions": {"model_version": "1", "champion_partition": run_days[-1]},
        "backtest": {"mae": 42.0, "baseline_mae": 55.0, "days_scored": len(run_days)},
    }
    return {**common, **per_stage[stage], "partitions_written": len(run_days), "fingerprint": FP_MARK}


@dataclass
class Templates:
    """One run's serialised events of each kind with placeholders, filled per day by plain string replacement."""

    materialisation: dict[str, str]
    planned: dict[str, str]
    evaluation: dict[tuple[str, str, bool], str]
    check_planned: dict[tuple[str, str], str]


def _entry(run_id: str, step_key: str, event: Any) -> Any:
    from dagster._core.events.log import EventLogEntry

    return EventLogEntry(
        error_info=None,
        level=10,
        user_message="",
        run_id=run_id,
        timestamp=TIME_MARK,
        step_key=step_key,
        job_name="__ASSET_JOB",
        dagster_event=event,
    )


def templates(
    pipeline: str, run_id: str, run_days: Sequence[str], checks: dict[str, list[tuple[str, bool]]]
) -> Templates:
    """A run's event templates: Dagster's own event objects, serialised once with placeholder values."""
    import dagster as dg
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationPlanned,
        AssetCheckEvaluationTargetMaterializationData,
    )
    from dagster._core.definitions.partitions.definition import DailyPartitionsDefinition
    from dagster._core.events import AssetMaterializationPlannedData, DagsterEvent, StepMaterializationData
    from dagster_shared.serdes import serialize_value

    result = Templates({}, {}, {}, {})
    partitions = DailyPartitionsDefinition(start_date=str(FIRST_DAY), end_date=str(FIRST_DAY + timedelta(days=DAYS)))
    subset = partitions.subset_with_partition_keys(run_days).to_serializable_subset()
    for stage in STAGES:
        key = dg.AssetKey([pipeline, stage])
        step = f"{pipeline}__{stage}"
        materialisation = dg.AssetMaterialization(
            asset_key=key,
            partition=DAY_MARK,
            metadata=_stage_metadata(stage, run_days),
            tags={"dagster/code_version": run_id, "dagster/data_version": VERSION_MARK},
        )
        event = DagsterEvent(
            event_type_value="ASSET_MATERIALIZATION",
            job_name="__ASSET_JOB",
            step_key=step,
            event_specific_data=StepMaterializationData(materialisation),
            message=f"Materialized value {pipeline} {stage}.",
        )
        result.materialisation[stage] = serialize_value(_entry(run_id, step, event))
        planned = DagsterEvent(
            event_type_value="ASSET_MATERIALIZATION_PLANNED",
            job_name="__ASSET_JOB",
            step_key=step,
            event_specific_data=AssetMaterializationPlannedData(asset_key=key, partition=DAY_MARK),
            message=f'__ASSET_JOB intends to materialize asset ["{pipeline}", "{stage}"]',
        )
        result.planned[stage] = serialize_value(_entry(run_id, step, planned))
        check_step = f"{pipeline}_{stage}_checks"
        for name, blocking in checks.get(stage, []):
            check_planned = DagsterEvent(
                event_type_value="ASSET_CHECK_EVALUATION_PLANNED",
                job_name="__ASSET_JOB",
                step_key=check_step,
                event_specific_data=AssetCheckEvaluationPlanned(
                    asset_key=key, check_name=name, partitions_subset=subset
                ),
                message=f"__ASSET_JOB intends to execute asset check {name} on asset {key.to_string()}",
            )
            result.check_planned[(stage, name)] = serialize_value(_entry(run_id, check_step, check_planned))
            for passed in (True, False):
                reason = "" if passed else f"{name}: simulated failure"
                evaluation = dg.AssetCheckEvaluation(
                    asset_key=key,
                    check_name=name,
                    passed=passed,
                    partition=DAY_MARK,
                    severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
                    blocking=False,
                    description=reason or "passed",
                    metadata={**({"reason": reason} if reason else {}), "rows": 24, "fingerprint": FP_MARK},
                    target_materialization_data=AssetCheckEvaluationTargetMaterializationData(
                        storage_id=STORAGE_MARK, run_id=run_id, timestamp=TIME_MARK
                    ),
                )
                outcome = "passed" if passed else "failed"
                event = DagsterEvent(
                    event_type_value="ASSET_CHECK_EVALUATION",
                    job_name="__ASSET_JOB",
                    step_key=check_step,
                    event_specific_data=evaluation,
                    message=f"Asset check '{name}' on '{key.to_user_string()}' {outcome}.",
                )
                result.evaluation[(stage, name, passed)] = serialize_value(_entry(run_id, check_step, event))
    return result


def _fill(template: str, day: str, fp: str, timestamp: float, storage_id: int | None = None) -> str:
    text = template.replace(DAY_MARK, day).replace(FP_MARK, fp).replace(VERSION_MARK, fp.removeprefix("sha256:"))
    text = text.replace(repr(TIME_MARK), repr(timestamp))
    return text.replace(str(STORAGE_MARK), str(storage_id)) if storage_id is not None else text


def _csv(value: Any) -> str:
    if value is None:
        return "\\N"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _stamp(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None).isoformat(sep=" ")


@dataclass(frozen=True)
class Row:
    """One event_logs row: the serialised event and the columns Dagster fills from it."""

    run_id: str
    text: str
    kind: str
    step: str
    key: str | None
    day: str | None
    clock: float


class Filler:
    """Writes pipelines' histories into Dagster's tables: by COPY with the derived rows computed here (`copy=True`,
    the fast path), or event by event through Dagster's own `store_event` (the reference the fast path is checked
    against: tests/integration/test_simulation_fill.py)."""

    def __init__(self, instance: dg.DagsterInstance, connection: psycopg2.extensions.connection) -> None:
        self.instance = instance
        self.connection = connection
        self.events = 0
        self.bytes = 0
        self.event_id = self.check_id = self.tag_id = 0
        self.clock = 1.7e9

    def _sync(self) -> None:
        """Continue after what the tables hold: ids past their largest, the clock a minute after the last event."""
        with self.connection.cursor() as cursor:
            found = []
            for table in ("event_logs", "asset_check_executions", "asset_event_tags"):
                cursor.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
                found.append(int(cursor.fetchone()[0]))  # type: ignore[index]
            self.event_id, self.check_id, self.tag_id = found
            cursor.execute("SELECT extract(epoch FROM max(timestamp)) FROM event_logs")
            last = cursor.fetchone()[0]  # type: ignore[index]
        self.clock = float(last) + 60 if last is not None else 1.7e9

    def pipeline(
        self, name: str, checks: dict[str, list[tuple[str, bool]]], days: Sequence[str] | None = None, *, copy: bool
    ) -> None:
        """Every run of one pipeline over `days` (default: all 1,826): a range run per year, each writing every daily
        asset per day, then each check's verdict per day naming the fingerprint it judged."""
        self._sync()
        days = list(days) if days is not None else all_days()
        rows: list[Row] = []
        executions, tags = io.StringIO(), io.StringIO()
        latest: dict[str, tuple[str, int]] = {}
        for first in range(0, len(days), RUN_DAYS):
            run_days = days[first : first + RUN_DAYS]
            run_id = self._add_run(name, run_days)
            shapes = templates(name, run_id, run_days, checks)
            for stage in STAGES:
                key, step = json.dumps([name, stage]), f"{name}__{stage}"
                for day in run_days:
                    fp = fingerprint(name, stage, day)
                    rows.append(
                        Row(
                            run_id,
                            self._fill(shapes.planned[stage], day, fp),
                            MATERIALIZATION_PLANNED,
                            step,
                            key,
                            day,
                            self.clock,
                        )
                    )
                materialised: dict[str, int] = {}
                for day in run_days:
                    fp = fingerprint(name, stage, day)
                    text = self._fill(shapes.materialisation[stage], day, fp)
                    rows.append(Row(run_id, text, MATERIALIZATION, step, key, day, self.clock))
                    materialised[day] = latest_id = self.event_id + len(rows)
                    latest[stage] = (text, latest_id)
                    self.tag_id += 1
                    tags.write(f"{self.tag_id}\t{latest_id}\t{_csv(key)}\t{DATA_VERSION}\t")
                    tags.write(f"{fp.removeprefix('sha256:')}\t{_stamp(self.clock)}\n")
                for check, _ in checks.get(stage, []):
                    text = self._fill(shapes.check_planned[(stage, check)], "", "")
                    planned_at = self.clock
                    rows.append(Row(run_id, text, CHECK_PLANNED, f"{name}_{stage}_checks", None, None, planned_at))
                    for day in run_days:
                        passed = verdict_passes(check, day)
                        fp = fingerprint(name, stage, day)
                        template = shapes.evaluation[(stage, check, passed)]
                        text = self._fill(template, day, fp, materialised[day])
                        rows.append(
                            Row(run_id, text, CHECK_EVALUATION, f"{name}_{stage}_checks", None, None, self.clock)
                        )
                        self.check_id += 1
                        status = "SUCCEEDED" if passed else "FAILED"
                        executions.write(
                            f"{self.check_id}\t{_csv(key)}\t{check}\t{day}\t{run_id}\t{status}\t{_csv(text)}\t"
                            f"{_stamp(self.clock)}\t{self.event_id + len(rows)}\t{materialised[day]}\t"
                            f"{_stamp(planned_at)}\n"
                        )
        self.events += len(rows)
        self.bytes += sum(len(row.text) for row in rows)
        if copy:
            self._copy_all(rows, executions, tags, latest)
        else:
            self._store_all(rows)
        self.clock += 60

    def _fill(self, template: str, day: str, fp: str, storage_id: int | None = None) -> str:
        """A template with its placeholders filled; each event one millisecond after the one before."""
        self.clock += 0.001
        return _fill(template, day, fp, self.clock, storage_id)

    def _add_run(self, name: str, run_days: Sequence[str]) -> str:
        import dagster as dg

        from kernel.names import RANGE_END, RANGE_START

        run_id = str(uuid.uuid4())
        self.instance.add_run(
            dg.DagsterRun(
                job_name="__ASSET_JOB",
                run_id=run_id,
                status=dg.DagsterRunStatus.SUCCESS,
                tags={RANGE_START: run_days[0], RANGE_END: run_days[-1]},
                asset_selection=frozenset(dg.AssetKey([name, stage]) for stage in STAGES),
            )
        )
        return run_id

    def _copy_all(
        self, rows: Sequence[Row], executions: io.StringIO, tags: io.StringIO, latest: dict[str, tuple[str, int]]
    ) -> None:
        from dagster._core.events.log import EventLogEntry
        from dagster_shared.serdes import deserialize_value

        events = io.StringIO()
        for index, row in enumerate(rows, start=self.event_id + 1):
            events.write(
                f"{index}\t{row.run_id}\t{_csv(row.text)}\t{row.kind}\t{_stamp(row.clock)}\t{row.step}\t"
                f"{_csv(row.key)}\t{_csv(row.day)}\n"
            )
        self._copy("event_logs", events, EVENT_COLUMNS)
        self._copy("asset_check_executions", executions, EXECUTION_COLUMNS)
        self._copy("asset_event_tags", tags, TAG_COLUMNS)
        self._move_sequences()
        storage = self.instance.event_log_storage
        for text, event_id in latest.values():  # asset_keys as Dagster's own writer derives it from the latest event
            storage.store_asset_event(deserialize_value(text, EventLogEntry), event_id)  # type: ignore[attr-defined]

    def _store_all(self, rows: Sequence[Row]) -> None:
        from dagster._core.events.log import EventLogEntry
        from dagster_shared.serdes import deserialize_value

        self._move_sequences()
        for row in rows:
            self.instance.event_log_storage.store_event(deserialize_value(row.text, EventLogEntry))

    def _copy(self, table: str, buffer: io.StringIO, columns: str) -> None:
        buffer.seek(0)
        with self.connection.cursor() as cursor:
            cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buffer)

    def _move_sequences(self) -> None:
        """Move the id sequences to the largest ids stored, so Dagster's own writes continue after them."""
        with self.connection.cursor() as cursor:
            for table in ("event_logs", "asset_check_executions", "asset_event_tags"):
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT greatest(coalesce(max(id), 0), 1) FROM {table}))"
                )

    def analyse(self) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute("ANALYZE")


MATERIALIZATION_PLANNED = "ASSET_MATERIALIZATION_PLANNED"
MATERIALIZATION = "ASSET_MATERIALIZATION"
CHECK_PLANNED = "ASSET_CHECK_EVALUATION_PLANNED"
CHECK_EVALUATION = "ASSET_CHECK_EVALUATION"
DATA_VERSION = "dagster/data_version"
EVENT_COLUMNS = "id, run_id, event, dagster_event_type, timestamp, step_key, asset_key, partition"
EXECUTION_COLUMNS = (
    "id, asset_key, check_name, partition, run_id, execution_status, evaluation_event, evaluation_event_timestamp, "
    "evaluation_event_storage_id, materialization_event_storage_id, create_timestamp"
)
TAG_COLUMNS = "id, event_id, asset_key, key, value, event_timestamp"


# --- the code location and the measures -----------------------------------------------------------------------


def settings(specs_dir: Path, home: Path) -> Any:
    from kernel.settings import Settings

    return Settings(
        env="local", root=PROJECT_ROOT, home=home, specs_dir=specs_dir, mlflow_ui_url="http://127.0.0.1:5000"
    )


def location_checks(defs: dg.Definitions, pipeline: str) -> dict[str, list[tuple[str, bool]]]:
    """stage -> (check name, blocking) of one pipeline, as the code location defines them."""
    graph = defs.resolve_asset_graph()
    found: dict[str, list[tuple[str, bool]]] = {}
    for check in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_string(), k.name)):
        if check.asset_key.path[0] == pipeline:
            found.setdefault(check.asset_key.path[-1], []).append((check.name, graph.get(check).blocking))
    return found


def timed(figures: dict[str, Any], name: str, fn: Any, repeats: int = 1) -> Any:
    """Run `fn` `repeats` times; record the median wall time as `<name>_s` and this process's CPU time as
    `<name>_cpu_s` (on a shared machine wall time moves with the load, CPU time much less), return the last result."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    figures[f"{name}_s"] = round(statistics.median(walls), 3)
    figures[f"{name}_cpu_s"] = round(statistics.median(cpus), 3)
    return result


def verdict_lookup(instance: dg.DagsterInstance, pipeline: str, checks: dict[str, list[tuple[str, bool]]]) -> Any:
    """The day gate of a 365-day features window: `rejected_days` over the blocking checks, as the store asks it."""
    import dagster as dg

    from resources.verdicts import rejected_days

    window = all_days()[-365:]
    blocking = [name for name, is_blocking in checks["features"] if is_blocking]
    stored = {day: fingerprint(pipeline, "features", day) for day in window}
    return rejected_days(instance, dg.AssetKey([pipeline, "features"]), blocking, stored)


def champion_decision(instance: dg.DagsterInstance, pipeline: str) -> Any:
    """The instance side of the champion's `newest_candidates` and the decision: the materialised model days, their
    gate verdicts, the newest passing day's materialising run, then `ml.promotion.decide`."""
    import dagster as dg

    from kernel.names import MODEL_GATES
    from ml.promotion import Aliases, Automatic, Candidate, Check, Evidence, decide
    from resources.verdicts import materialising_run, rejected_days

    key = dg.AssetKey([pipeline, "model"])
    days = sorted(instance.get_materialized_partitions(key), reverse=True)
    rejected = rejected_days(instance, key, MODEL_GATES, {day: fingerprint(pipeline, "model", day) for day in days})
    candidates = []
    for day in days:
        run_id = materialising_run(instance, key, day) if day not in rejected else None
        gates = Check(run_id is not None, rejected.get(day, ""))
        candidates.append(Candidate("1", day, gates, Check(True), None, Check(True)))
        if gates.passed:
            break
    return decide(Evidence(model_name=pipeline, aliases=Aliases(None, None), candidates=candidates), Automatic())


def automation_tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: Any) -> Any:
    """One evaluation of every automation condition of the code location, as the automation sensor's tick does."""
    import dagster as dg

    at = datetime.combine(FIRST_DAY + timedelta(days=DAYS), datetime.min.time(), UTC) + timedelta(hours=6)
    return dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at, cursor=cursor)


@contextlib.contextmanager
def graphql_context(instance: dg.DagsterInstance) -> Iterator[Any]:
    """A workspace that loads platform_assets.definitions in a code server, as dagster-webserver does."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import ModuleTarget

    target = ModuleTarget(
        module_name="platform_assets.definitions",
        attribute=None,
        working_directory=str(PROJECT_ROOT),
        location_name="platform",
    )
    with WorkspaceProcessContext(instance, target, version="", read_only=True) as process:
        errors = process.create_request_context().code_location_errors()
        if errors:
            raise RuntimeError(f"the code location did not load: {errors[0].to_string()}")
        yield process


def asset_page(process: Any, pipeline: str) -> dict[str, Any]:
    """The asset page's queries for `<pipeline>/features`; fails loudly on a GraphQL error."""
    from dagster_graphql.cli import execute_query

    variables = {"assetKey": {"path": [pipeline, "features"]}}
    answers: dict[str, Any] = {}
    for name, query in (("health", PARTITION_HEALTH_QUERY), ("view", ASSET_VIEW_QUERY)):
        answer: dict[str, Any] = dict(execute_query(process, query, variables))
        if answer.get("errors") or not answer.get("data"):
            raise RuntimeError(f"GraphQL error in {name}: {answer.get('errors')}")
        answers[name] = answer["data"]
    return answers


def database_size_mb(database: str) -> float:
    with contextlib.closing(connect()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(%s)", (database,))
        return round(int(cursor.fetchone()[0]) / 2**20, 1)  # type: ignore[index]


def measure(size: int, specs_dir: Path, home: Path, instance: dg.DagsterInstance, database: str) -> dict[str, Any]:
    """Every measure of section (g) at the instance's current size."""
    from platform_assets.definitions import build_definitions

    pipeline = "sim_0000"
    figures: dict[str, Any] = {"pipelines": size, "db_size_mb": database_size_mb(database)}
    figures["loadavg_1m_before"] = round(os.getloadavg()[0], 1)
    defs = timed(figures, "code_location_load", lambda: build_definitions(settings(specs_dir, home)))
    defs.resolve_asset_graph()
    checks = location_checks(defs, pipeline)

    rejected = timed(figures, "verdict_lookup_365", lambda: verdict_lookup(instance, pipeline, checks), repeats=3)
    expected = {
        day
        for day in all_days()[-365:]
        for name, blocking in checks["features"]
        if blocking and not verdict_passes(name, day)
    }
    if set(rejected) != expected:
        raise RuntimeError(f"the verdict lookup read {len(rejected)} rejected days, the fill wrote {len(expected)}")
    figures["verdict_lookup_rejected_days"] = len(rejected)

    decision = timed(figures, "champion_decision", lambda: champion_decision(instance, pipeline), repeats=3)
    figures["champion_decision"] = {"outcome": decision.outcome, "partition": decision.candidate.partition}

    first = timed(figures, "tick_first", lambda: automation_tick(defs, instance, None))
    timed(figures, "tick_next", lambda: automation_tick(defs, instance, first.cursor))
    figures["tick_requested"] = first.total_requested

    os.environ["PLATFORM_SPECS_DIR"] = str(specs_dir)
    os.environ["PLATFORM_HOME"] = str(home)
    with graphql_context(instance) as process:
        # The first answer builds the status cache the next ones read.
        timed(figures, "graphql_asset_page_first", lambda: asset_page(process, pipeline))
        page = timed(figures, "graphql_asset_page", lambda: asset_page(process, pipeline), repeats=3)
    ranges = page["health"]["assetNodeOrError"]["assetPartitionStatuses"]["ranges"]
    figures["graphql_materialized_days"] = sum(
        (date.fromisoformat(r["endKey"]) - date.fromisoformat(r["startKey"])).days + 1
        for r in ranges
        if r["status"] == "MATERIALIZED"
    )
    figures["loadavg_1m_after"] = round(os.getloadavg()[0], 1)
    return figures


def judged(curve: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target against the curve's point at TARGET_PIPELINES (or its largest size below it), PASS or MISS."""
    at = max((p for p in curve if p["pipelines"] <= TARGET_PIPELINES), key=lambda p: p["pipelines"])
    rows = []
    for figure, key, target in (
        ("automation tick (first, no cursor)", "tick_first_s", TARGETS["tick_s_max"]),
        ("automation tick (next)", "tick_next_s", TARGETS["tick_s_max"]),
        ("verdict lookup, 365 days", "verdict_lookup_365_s", TARGETS["verdict_lookup_365_s_max"]),
        ("champion decision", "champion_decision_s", TARGETS["champion_decision_s_max"]),
        ("GraphQL asset page", "graphql_asset_page_s", TARGETS["graphql_asset_page_s_max"]),
    ):
        value = at[key]
        rows.append(
            {
                "figure": f"{figure} at {at['pipelines']} pipelines (s)",
                "value": value,
                "target": target,
                "meets_target": value <= target,
            }
        )
    return rows


def run(sizes: Sequence[int], keep: bool, database: str = DATABASE) -> dict[str, Any]:
    """Fill the scratch database size by size and measure after each; the curve and the fill rate."""
    import dagster as dg

    from platform_assets.definitions import build_definitions

    tmp = Path(tempfile.mkdtemp(prefix="sim-g-"))
    specs_dir, home = tmp / "specs", tmp / "platform"
    create_database(database)
    curve: list[dict[str, Any]] = []
    fill = {"seconds": 0.0, "pipelines": 0, "events": 0, "event_bytes": 0}
    try:
        instance = dg.DagsterInstance.from_config(str(instance_home(tmp / "dagster_home", database)))
        write_specs(specs_dir, pipeline_names(1))
        checks = location_checks(build_definitions(settings(specs_dir, home)), "sim_0000")
        done = 0
        with contextlib.closing(connect(database)) as connection:
            for size in sorted(sizes):
                names = pipeline_names(size, done)
                write_specs(specs_dir, names)
                filler = Filler(instance, connection)
                started = time.perf_counter()
                for name in names:
                    filler.pipeline(name, checks, copy=True)
                filler.analyse()
                seconds = time.perf_counter() - started
                fill["seconds"] += seconds
                fill["pipelines"] += len(names)
                fill["events"] += filler.events
                fill["event_bytes"] += filler.bytes
                done = size
                print(
                    f"(g) {size} pipelines: filled {len(names)} in {seconds:.0f}s ({filler.events} events); measuring"
                )
                figures = measure(size, specs_dir, home, instance, database)
                figures["fill_s"] = round(seconds, 1)
                curve.append(figures)
                print("    " + json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict)}))
        instance.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not keep:
            drop_database(database)
    per_pipeline = fill["seconds"] / max(fill["pipelines"], 1)
    return {
        "days": DAYS,
        "run_days": RUN_DAYS,
        "events_per_pipeline": fill["events"] // max(fill["pipelines"], 1),
        "fill": {
            "pipelines_per_minute": round(60 / per_pipeline, 1) if per_pipeline else None,
            "events_per_second": round(fill["events"] / fill["seconds"]) if fill["seconds"] else None,
            "mb_of_events_per_pipeline": round(fill["event_bytes"] / max(fill["pipelines"], 1) / 2**20, 1),
            "extrapolated_1000_pipelines_fill_min": round(1000 * per_pipeline / 60, 1),
        },
        "curve": curve,
        "figures": judged(curve),
        "targets": TARGETS,
    }


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.common import RESULTS
    from benchmarks.report import carry_over, new_report, write_report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,30,100", help="comma-separated pipeline counts (default 10,30,100)")
    parser.add_argument("--database", default=DATABASE, help=f"the scratch database (default {DATABASE}; replaced)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if not sizes or sizes[0] < 1:
        parser.error("--sizes must list positive pipeline counts")
    started = time.perf_counter()
    report = new_report(["g"], DAYS)
    report["figures"]["g"] = run(sizes, args.keep, args.database)
    report["duration_s"] = round(time.perf_counter() - started, 1)
    for row in report["figures"]["g"]["figures"]:
        result = "PASS" if row["meets_target"] else "MISS"
        print(f"  {row['figure']}: {row['value']} (target <= {row['target']}) {result}")
    write_report(carry_over(report, args.output), args.output)
    print(f"wrote {args.output} ({report['duration_s']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
