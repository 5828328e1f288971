"""The Dagster daemon is killed mid-backfill and started again: the backfill completes, each day built by exactly one
run, none lost.

Real processes: `dagster-daemon run` on the project's workspace.yaml with a DAGSTER_HOME made as `make dev` makes it
(SQLite, the queued run coordinator, run workers launched by the default run launcher), a backfill of `raw` over
two separate ranges of days (the single-run policy makes that two runs), and SIGKILL to the daemon as soon as
its first run exists, while it is still submitting the others.

Nothing else competes for the two run slots: the instance has automation off (`auto_materialize: enabled: false,
use_sensors: false`: Dagster 1.13 then starts no asset daemon, so the automation sensor is never evaluated) and the
landing sensor is stopped with `dagster sensor stop` before the daemon starts; otherwise they launch a raw+features
run of the whole landing file and a model run beside the backfill (150 s alone, ~600 s on a busy machine), and the
landing run's materialisations of the same days could hide a day the backfill lost. The test checks that every run
of the instance is one of the backfill's.

The backfill is submitted with `instance.add_backfill`, the call the UI's GraphQL mutation ends in: `dagster` has no
public Python or CLI command for an asset backfill (API_NOTES §2), and the webserver is not what is under test.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import psutil
import pytest
import yaml
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.utils import make_new_backfill_id

from devtools.stack import BIN, prepare_home, stop
from kernel.names import RANGE_END, RANGE_START
from kernel.paths import PROJECT_ROOT, StatePaths
from kernel.settings import Settings
from platform_assets.definitions import build_definitions

from .conftest import BIKE_CSV, TODAY, FaultRow, bike_spec_document, wait_until

NAME = "backfilled_bikes"
RANGES = [("2012-05-01", "2012-05-03"), ("2012-05-08", "2012-05-10")]
BACKFILL_TAG = "dagster/backfill"


def days_of(first: str, last: str) -> list[str]:
    return [str(d.date()) for d in pd.date_range(first, last)]


class Daemon:
    """`dagster-daemon run` on the project's workspace, which can be killed and started again."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
                cwd=PROJECT_ROOT, env=self.env, stdout=output, stderr=output, start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL to the daemon process alone: the runs it launched are processes of their own."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and psutil.pid_exists(self.process.pid):
            daemon = psutil.Process(self.process.pid)
            stop([daemon, *daemon.children(recursive=True)])


@pytest.fixture
def daemon_home(tmp_path: Path) -> Iterator[tuple[Settings, Daemon]]:
    landing, specs = tmp_path / "landing", tmp_path / "specs"
    landing.mkdir()
    specs.mkdir()
    source = pd.read_csv(BIKE_CSV)
    source[(source["yr"] == 1) & (source["mnth"] == 5)].to_csv(landing / "hour.csv", index=False)
    document = bike_spec_document(
        name=NAME,
        source={"uri": str(landing / "*.csv")},
        partitioning={"start_date": "2012-05-01", "end_date": "2012-06-01", "rebase_to_yesterday": False},
    )
    (specs / f"{NAME}.yaml").write_text(yaml.safe_dump(document))
    settings = Settings(env="local", root=PROJECT_ROOT, home=tmp_path / "home", specs_dir=specs, mlflow_ui_url="x")
    dagster_home = prepare_home(settings.home)
    with (dagster_home / "dagster.yaml").open("a") as config:
        config.write(yaml.safe_dump({"auto_materialize": {"enabled": False, "use_sensors": False}}))
    env = {
        **os.environ,
        "PLATFORM_ENV": "local",
        "PLATFORM_HOME": str(settings.home),
        "PLATFORM_SPECS_DIR": str(specs),
        "DAGSTER_HOME": str(dagster_home),
    }
    subprocess.run(
        [str(BIN / "dagster"), "sensor", "stop", f"{NAME}_landing_sensor", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        cwd=PROJECT_ROOT, env=env, check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    daemon = Daemon(env, tmp_path / "daemon.log")
    try:
        yield settings, daemon
    finally:
        daemon.stop()
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:  # runs still going when the test ends
            for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
                for event in instance.get_records_for_run(run.run_id, limit=1).records:
                    pid = event.event_log_entry.dagster_event.pid if event.event_log_entry.dagster_event else None
                    if pid is not None and psutil.pid_exists(pid):
                        stop([psutil.Process(pid)])


@pytest.mark.faults
@pytest.mark.timeout(900)
def test_a_backfill_survives_a_daemon_killed_mid_submission_without_duplicate_or_lost_days(
    daemon_home: tuple[Settings, Daemon], fault: FaultRow
) -> None:
    settings, daemon = daemon_home
    fault.scenario = "daemon killed mid-backfill"
    fault.injected = "kill -9 of dagster-daemon when the first of 2 backfill runs exists; daemon started again"
    defs = build_definitions(settings, today=TODAY)
    key = dg.AssetKey([NAME, "raw"])
    wanted = [day for first, last in RANGES for day in days_of(first, last)]
    with dg.DagsterInstance.from_config(str(settings.state.dagster_home)) as instance:
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id=make_new_backfill_id(),
            asset_graph=defs.resolve_asset_graph(),
            partition_names=wanted,
            asset_selection=[key],
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title="fault: daemon restart",
            description=None,
            run_config=None,
        )
        instance.add_backfill(backfill)
        runs = lambda: instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_TAG: backfill.backfill_id}))  # noqa: E731

        daemon.start()
        wait_until("the backfill's first run", lambda: len(runs()) >= 1, 180, daemon.log)
        daemon.kill()
        at_kill = len(runs())
        daemon.start()

        def finished() -> bool:
            status = instance.get_backfill(backfill.backfill_id).status  # pyright: ignore[reportOptionalMemberAccess]
            return status not in (BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING)

        wait_until("the backfill to finish", finished, 600, daemon.log, poll=1)
        status = instance.get_backfill(backfill.backfill_id).status  # pyright: ignore[reportOptionalMemberAccess]
        final = runs()
        per_day = Counter(day for run in final for day in days_of(run.tags[RANGE_START], run.tags[RANGE_END]))
        materialised = instance.get_materialized_partitions(key)
        others = [r.run_id for r in instance.get_runs() if r.tags.get(BACKFILL_TAG) != backfill.backfill_id]
    stored = {p.stem for p in (StatePaths(settings.home).assets / NAME / "raw").glob("*.parquet")}
    fault.duplicates = sum(count - 1 for count in per_day.values() if count > 1)
    fault.lost = sum(1 for day in wanted if day not in materialised or day not in stored)
    assert status == BulkActionStatus.COMPLETED_SUCCESS, [(r.run_id, r.status) for r in final]
    assert fault.duplicates == 0, per_day
    assert fault.lost == 0, (sorted(materialised), sorted(stored))
    assert sorted(per_day) == sorted(wanted) and len(final) == len(RANGES)
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in final)
    assert not others, f"runs other than the backfill's competed for the slots: {others}"
    fault.result = (
        f"{at_kill} of {len(RANGES)} runs existed at the kill; after the restart the backfill COMPLETED_SUCCESS with "
        f"{len(final)} runs, one per range, {len(wanted)} days built once each"
    )
