"""A run killed with SIGKILL in the middle of writing a range of days: no day is torn, the next `make dev` settles
the run as FAILED and removes the cut-short temp files, and a re-run completes the range.

The run is a real Dagster run of the real code location in a child process on a real instance (SQLite under a
DAGSTER_HOME made as `make dev` makes it). Its disk is slow only at the rename that publishes a day (0.3 s before
each `move`), so the kill lands after some days were replaced, while the next is in its temp file, every time.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from support import run_range

from devtools.stack import prepare_home, recover_interrupted
from kernel.names import UNFINISHED_DIR
from kernel.paths import PROJECT_ROOT, StatePaths
from kernel.settings import Settings
from platform_assets.definitions import build_definitions

from .conftest import BIKE_CSV, TODAY, FaultRow, bike_spec_document, run_and_kill_when

NAME = "killed_bikes"
FIRST, LAST = "2012-05-01", "2012-05-30"
BUMP = 1000  # the re-delivered source: every count raised by this, so a day's old and new values differ

# The run of `raw` for the range, in its own process, each rename of a finished day 0.3 s slow.
SLOW_RUN = """
import sys, time
from datetime import date
from pathlib import Path
import dagster as dg
import pyarrow.fs as pafs
from support import landed, run_range
from kernel.paths import PROJECT_ROOT
from kernel.settings import Settings
from platform_assets.definitions import build_definitions

class SlowRenames(pafs.LocalFileSystem):
    def move(self, src, dest):
        time.sleep(0.3)
        return super().move(src, dest)

pafs.LocalFileSystem = SlowRenames
home, specs, first, last, source = sys.argv[1:6]
settings = Settings(env="local", root=PROJECT_ROOT, home=Path(home), specs_dir=Path(specs), mlflow_ui_url="http://x")
defs = build_definitions(settings, today=date(2013, 1, 1))
with dg.DagsterInstance.get() as instance:
    run_range(defs, ["raw"], "killed_bikes", (first, last), instance, tags=landed(Path(source)))
"""


def days() -> list[str]:
    return [str(d.date()) for d in pd.date_range(FIRST, LAST)]


def stored(store: Path) -> dict[str, pd.DataFrame]:
    return {day: pd.read_parquet(store / f"{day}.parquet") for day in days()}


@pytest.mark.faults
@pytest.mark.timeout(300)
def test_a_run_killed_mid_range_leaves_no_torn_day_is_failed_on_restart_and_reruns(
    tmp_path: Path, fault: FaultRow
) -> None:
    fault.scenario = "run killed mid-write"
    fault.injected = f"kill -9 of a run's process group after 5 of {len(days())} days were replaced"
    home, landing, specs = tmp_path / "home", tmp_path / "landing", tmp_path / "specs"
    landing.mkdir()
    specs.mkdir()
    source = pd.read_csv(BIKE_CSV)
    source = source[(source["yr"] == 1) & (source["mnth"] == 5)]
    source.to_csv(landing / "hour.csv", index=False)
    document = bike_spec_document(
        name=NAME,
        source={"uri": str(landing / "*.csv")},
        partitioning={"start_date": FIRST, "end_date": "2012-06-01", "rebase_to_yesterday": False},
    )
    (specs / f"{NAME}.yaml").write_text(yaml.safe_dump(document))
    settings = Settings(env="local", root=PROJECT_ROOT, home=home, specs_dir=specs, mlflow_ui_url="http://x")
    dagster_home = prepare_home(home)
    defs = build_definitions(settings, today=TODAY)
    store = StatePaths(home).assets / NAME / "raw"
    unfinished = StatePaths(home).assets / UNFINISHED_DIR  # where every write goes before its rename
    day_temp = "????-??-??.parquet.tmp-*"  # a raw day's temp file there (the ingest log's writes go there too)

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert run_range(defs, ["raw"], NAME, (FIRST, LAST), instance).success
    old = stored(store)

    source.assign(cnt=source["cnt"] + BUMP).to_csv(landing / "hour.csv", index=False)
    started = time.time()
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "PYTHONPATH": f"{PROJECT_ROOT}/tests"}

    def mid_range() -> bool:  # five days replaced and the sixth written to its temp file, not yet renamed
        return sum(p.stat().st_mtime > started for p in store.glob("*.parquet")) >= 5 and any(unfinished.glob(day_temp))

    command = [sys.executable, "-c", SLOW_RUN, str(home), str(specs), FIRST, LAST, str(landing / "hour.csv")]
    run_and_kill_when(command, env, mid_range, "5 days replaced")

    # Every day reads whole and is exactly its old value or its new one: never torn, never a mix.
    after_kill = stored(store)
    replaced = [d for d in days() if after_kill[d]["cnt"].tolist() == (old[d]["cnt"] + BUMP).tolist()]
    kept = [d for d in days() if after_kill[d].equals(old[d])]
    torn = sorted(set(days()) - set(replaced) - set(kept))
    assert not torn, f"days neither old nor new: {torn}"
    assert replaced and kept, f"the kill was not mid-range: {len(replaced)} replaced, {len(kept)} kept"
    leftovers = list(unfinished.glob(day_temp))
    assert leftovers, "the day being written when the run died left its temp file"

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        killed = instance.get_runs(limit=1)[0]
        assert killed.status == dg.DagsterRunStatus.STARTED, "a killed run stays STARTED until something settles it"
    report = recover_interrupted(home)  # what `make dev` does first on its next start
    assert f"marked run {killed.run_id} FAILED (was STARTED, no live process)" in report
    assert len([line for line in report if ".tmp-" in line]) == len(leftovers), report
    assert not list(unfinished.glob("*.tmp-*"))

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        status = instance.get_run_by_id(killed.run_id).status  # pyright: ignore[reportOptionalMemberAccess]
        assert status == dg.DagsterRunStatus.FAILURE
        assert run_range(defs, ["raw"], NAME, (FIRST, LAST), instance).success
    rerun = stored(store)
    lost = [d for d in days() if rerun[d]["cnt"].tolist() != (old[d]["cnt"] + BUMP).tolist()]
    fault.lost = len(lost)
    assert not lost, f"days not rebuilt by the re-run: {lost}"
    fault.result = (
        f"at the kill {len(replaced)} days new, {len(kept)} old, 0 torn, {len(leftovers)} .tmp left; "
        f"restart: run STARTED->FAILURE, .tmp removed; re-run SUCCESS, all {len(days())} days new"
    )
