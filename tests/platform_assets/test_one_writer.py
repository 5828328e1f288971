"""One writer per asset: two runs over overlapping days of the same asset never execute together, whoever launched
them (README, *One writer per asset*).

A real local instance (`prepare_home`: the `make dev` dagster.yaml, SQLite) and real run processes: the CLI a user
types (`dagster asset materialize`, in-process, never queued), and `dagster api execute_run`, the run worker the
daemon's run launcher starts for a queued run (a UI backfill's or a sensor's). Each stage's pool has one slot; the
test holds the `raw` pool's slot until both runs are waiting for it ("Step blocked by limit for pool ..."), so the two
runs are ready at the same moment and must take turns, then reads each step's start and end from the event log: no
step of one run in a pool overlaps a step of the other in that pool. Runs execute in-process (run config): step
subprocesses would each import the code location again, and claim slots the same way (`InstanceConcurrencyContext`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from conftest import BIKE_CSV, TODAY, bike_spec_document
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import serialize_value

from devtools.stack import RAY_LOOPBACK_ENV, prepare_home
from kernel.names import RANGE_END, RANGE_START
from kernel.paths import PROJECT_ROOT
from kernel.settings import Settings
from platform_assets.definitions import build_definitions

NAME = "one_writer"
BIN = Path(sys.executable).parent
HOLDER = "test-holds-the-slot"
BLOCKED = "Step blocked by limit for pool"
Interval = tuple[float, float]


@dataclass(frozen=True)
class Home:
    """A fresh platform home whose Dagster home is made as `make dev` makes it, and the environment runs see."""

    settings: Settings
    env: dict[str, str]

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"])

    def defs(self) -> dg.Definitions:
        return build_definitions(self.settings, today=TODAY)

    def pool(self, stage: str) -> str:
        return f"{NAME}.{stage}"


@pytest.fixture
def home(tmp_path: Path, ray_address: str) -> Home:
    landing, specs = tmp_path / "landing", tmp_path / "specs"
    landing.mkdir()
    specs.mkdir()
    source = pd.read_csv(BIKE_CSV)
    day = pd.to_datetime(source["dteday"], format="%m/%d/%y")
    source[day.between("2012-05-01", "2012-05-08")].to_csv(landing / "may.csv", index=False)  # as landed: 8 days
    document = bike_spec_document(
        name=NAME,
        source={"uri": str(landing / "*.csv")},
        partitioning={"start_date": "2012-05-01", "end_date": "2012-06-01", "rebase_to_yesterday": False},
    )
    (specs / f"{NAME}.yaml").write_text(yaml.safe_dump(document))
    settings = Settings(env="local", root=PROJECT_ROOT, home=tmp_path / "home", specs_dir=specs, mlflow_ui_url="x")
    dagster_home = prepare_home(settings.home)
    env = {
        **os.environ,
        **RAY_LOOPBACK_ENV,
        "RAY_ADDRESS": ray_address,
        "RAY_AUTH_MODE": "disabled",
        "PLATFORM_ENV": "local",
        "PLATFORM_HOME": str(settings.home),
        "PLATFORM_SPECS_DIR": str(specs),
        "DAGSTER_HOME": str(dagster_home),
    }
    return Home(settings, env)


@contextmanager
def holding(instance: dg.DagsterInstance, pool: str) -> Iterator[None]:
    """Take the pool's only slot, as a step of another run would, and give it back on leaving."""
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(pool)
    assert storage.get_concurrency_info(pool).slot_count == 1, "the instance's default pool limit is not 1"
    assert storage.claim_concurrency_slot(pool, HOLDER, HOLDER).is_claimed
    try:
        yield
    finally:
        storage.free_concurrency_slots_for_run(HOLDER)


def start(home: Home, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(args, cwd=PROJECT_ROOT, env=home.env, stdout=output, stderr=subprocess.STDOUT)


def messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [record.event_log_entry.user_message for record in instance.get_records_for_run(run_id).records]


def wait_blocked(
    instance: dg.DagsterInstance, processes: list[subprocess.Popen[bytes]], logs: list[Path], count: int
) -> list[str]:
    """The ids of the runs, once `count` runs each logged that a step waits for a pool slot."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        runs = [run.run_id for run in instance.get_runs()]
        if len(runs) == count and all(any(BLOCKED in m for m in messages(instance, run)) for run in runs):
            return runs
        for process, log in zip(processes, logs, strict=True):
            assert process.poll() is None, f"a run ended without waiting for the held slot:\n{log.read_text()[-4000:]}"
        time.sleep(0.5)
    raise AssertionError(f"no run waited for the held slot within 240 s: {logs}")


def finish(processes: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    for process, log in zip(processes, logs, strict=True):
        assert process.wait(timeout=300) == 0, log.read_text()[-4000:]


def step_intervals(instance: dg.DagsterInstance, run_id: str) -> dict[str, Interval]:
    """Step key -> (start, end) timestamps from the run's event log."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for record in instance.get_records_for_run(run_id).records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[entry.step_key] = entry.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            ends[entry.step_key] = entry.timestamp
    assert set(starts) == set(ends), (starts, ends)
    return {step: (starts[step], ends[step]) for step in starts}


def assert_took_turns(home: Home, instance: dg.DagsterInstance, runs: list[str], stages: list[str]) -> None:
    """Every run succeeded, every stage's writer and checks ran in each, and within a stage's pool no step of one run
    overlaps a step of the other."""
    job = home.defs().resolve_implicit_global_asset_job_def()
    pools = {
        node.name: node.definition.pool for node in job.graph.nodes if isinstance(node.definition, dg.OpDefinition)
    }
    first, second = runs
    for run in runs:
        assert instance.get_run_by_id(run).status == dg.DagsterRunStatus.SUCCESS  # pyright: ignore[reportOptionalMemberAccess]
    by_run = {run: step_intervals(instance, run) for run in runs}
    for stage in stages:
        pool = home.pool(stage)
        mine = {run: [span for step, span in steps.items() if pools[step] == pool] for run, steps in by_run.items()}
        assert all(len(spans) == 2 for spans in mine.values()), f"{pool}: the writer and its checks in each run {mine}"
        overlapping = [(a, b) for a in mine[first] for b in mine[second] if a[0] < b[1] and b[0] < a[1]]
        assert not overlapping, f"{pool}: steps of the two runs executed together: {overlapping}"


def test_two_cli_runs_over_overlapping_days_take_turns(home: Home, tmp_path: Path) -> None:
    """Two `dagster asset materialize --partition-range` commands over overlapping days, started together: the CLI
    runs in-process, bypassing the run queue, and still takes the asset's pool slot step by step."""
    ranges = ["2012-05-01...2012-05-05", "2012-05-03...2012-05-08"]
    logs = [tmp_path / f"cli-{index}.log" for index in range(len(ranges))]
    with home.instance() as instance:
        with holding(instance, home.pool("raw")):
            processes = [
                start(home, [str(BIN / "dagster"), "asset", "materialize", "-m", "platform_assets.definitions",
                             "--select", f"{NAME}/raw", "--partition-range", days], log)
                for days, log in zip(ranges, logs, strict=True)
            ]  # fmt: skip
            runs = wait_blocked(instance, processes, logs, count=2)
        finish(processes, logs)
        assert_took_turns(home, instance, runs, ["raw"])
        days = set(pd.date_range("2012-05-01", "2012-05-08").strftime("%Y-%m-%d"))
        assert instance.get_materialized_partitions(dg.AssetKey([NAME, "raw"])) == days


def test_a_ui_backfill_and_a_landing_run_over_the_same_days_take_turns(home: Home, tmp_path: Path) -> None:
    """A landing-sensor run (its own request: raw and features over the landed file's days, with its tags) and a
    backfill run as the backfill daemon makes one from the UI (raw and features over a range, Dagster's backfill tag
    only: no tag of ours, so tag limits could not see it), both launched as the daemon launches queued runs."""
    defs = home.defs()
    job = defs.resolve_implicit_global_asset_job_def()
    sensor = next(s for s in defs.sensors or [] if s.name == f"{NAME}_landing_sensor")
    origin = ReconstructableJob(
        ReconstructableRepository.for_module("platform_assets.definitions", "defs", str(PROJECT_ROOT)), job.name
    ).get_python_origin()
    targets = {dg.AssetKey([NAME, "raw"]), dg.AssetKey([NAME, "features"])}
    with home.instance() as instance:
        first = sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(first, dg.SensorResult) and not first.run_requests
        landed = sensor(dg.build_sensor_context(cursor=first.cursor, instance=instance))
        assert isinstance(landed, dg.SensorResult)
        (request,) = landed.run_requests or []
        assert isinstance(request, dg.RunRequest)
        assert set(request.asset_selection or []) == targets
        sensor_tags = {**request.tags, "dagster/sensor_name": sensor.name}
        backfill_tags = {"dagster/backfill": "ui-backfill", RANGE_START: "2012-05-05", RANGE_END: "2012-05-08"}
        assert request.tags[RANGE_START] <= backfill_tags[RANGE_START] <= request.tags[RANGE_END], "days overlap"
        runs = [
            instance.create_run_for_job(job, asset_selection=targets, tags=tags, job_code_origin=origin).run_id
            for tags in (sensor_tags, backfill_tags)
        ]
        logs = [tmp_path / f"run-{index}.log" for index in range(len(runs))]
        with holding(instance, home.pool("raw")):
            processes = [
                start(
                    home,
                    [
                        str(BIN / "dagster"),
                        "api",
                        "execute_run",
                        serialize_value(ExecuteRunArgs(job_origin=origin, run_id=run, instance_ref=instance.get_ref())),
                    ],
                    log,
                )
                for run, log in zip(runs, logs, strict=True)
            ]
            assert sorted(wait_blocked(instance, processes, logs, count=2)) == sorted(runs)
        finish(processes, logs)
        assert_took_turns(home, instance, runs, ["raw", "features"])
        # Each wait was for a stage's pool (raw's, which the test held; features' too when one run's features step
        # comes up while the other's still runs), never for anything else.
        blocked = [json.dumps(m) for run in runs for m in messages(instance, run) if BLOCKED in m]
        pools = [home.pool(stage) for stage in ("raw", "features")]
        assert all(any(pool in m for pool in pools) for m in blocked), blocked
