"""A run killed with SIGKILL in the middle of a promotion: between the MLflow alias moving and the champion's stored
record, the one window where registry and store disagree. The next run converges: the alias, the stored record and
the champion asset's materialisation name the same version, and rollback still has the previous champion.

Real processes and stores: models trained in-process on a real Ray head into a SQLite MLflow store and a Dagster
instance on disk (made as `make dev` makes it), once per session, and each scenario on its own copy of that home
(conftest's `trained_template`, `copy_state`); the promotion runs in a child process on the same stores, its disk
slow (2 s) only at the rename that publishes the champion's record, and it is killed as soon as the test sees the
`champion` alias move in the MLflow store.

Then the rows of issue 15 about promotion: a rollback sticks through a model backfill and the next champion run
(row 5); a rollback launched while a champion run is between its decision and its alias write waits for the
`promotion` pool and the three records agree; a rollback killed between its two alias writes converges on re-run
(row 6); and an alias moved by hand outside the pool between a champion run's decision and its write fails that
run instead of being overwritten (compare-and-set). The child processes pause only at the MLflow client's alias
write, the code under test runs as it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from support import run_range, run_unpartitioned

from devtools.stack import recover_interrupted
from kernel.names import CHAMPION, MODEL_GATES, PREVIOUS_CHAMPION
from kernel.paths import PROJECT_ROOT
from resources.verdicts import rejected_days

from .conftest import DAY, LATER, TRAINED, FaultRow, TrainedHome, copy_state, run_and_kill_when, wait_until

NAME = TRAINED

SLOW_PROMOTION = """
import sys, time
from datetime import date
from pathlib import Path
import dagster as dg
import pyarrow.fs as pafs
from support import run_unpartitioned
from kernel.paths import PROJECT_ROOT
from kernel.settings import Settings
from platform_assets.definitions import build_definitions

class SlowChampionRecord(pafs.LocalFileSystem):
    def move(self, src, dest):
        if "/champion/" in dest:
            time.sleep(2)
        return super().move(src, dest)

pafs.LocalFileSystem = SlowChampionRecord
home, specs = sys.argv[1:3]
settings = Settings(env="local", root=PROJECT_ROOT, home=Path(home), specs_dir=Path(specs), mlflow_ui_url="http://x")
with dg.DagsterInstance.get() as instance:
    run_unpartitioned(build_definitions(settings, today=date(2013, 1, 1)), ["champion"], "promoted_bikes", instance)
"""


@pytest.mark.faults
@pytest.mark.timeout(420)
def test_a_promotion_killed_between_alias_and_record_converges_on_the_next_run(
    trained_home: TrainedHome, fault: FaultRow
) -> None:
    fault.scenario = "run killed mid-promotion"
    fault.injected = "kill -9 of the champion run right after the MLflow alias moved, before its stored record"
    settings, dagster_home, defs = trained_home.settings, trained_home.dagster_home, trained_home.defs
    tracking, store = trained_home.tracking, trained_home.store
    champion_key = dg.AssetKey([NAME, "champion"])
    first, second = tracking.alias_version(NAME, CHAMPION), trained_home.model_version(DAY)
    assert first is not None and second != first

    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "PYTHONPATH": f"{PROJECT_ROOT}/tests"}
    command = [sys.executable, "-c", SLOW_PROMOTION, str(settings.home), str(settings.specs_dir)]
    run_and_kill_when(command, env, lambda: tracking.alias_version(NAME, CHAMPION) == second, "the alias moved")

    # The window: the registry says `second`, the stored record (what the UI shows) still says `first`.
    assert store.read(champion_key, None)["version"] == first
    assert tracking.alias_version(NAME, PREVIOUS_CHAMPION) == first
    settled = recover_interrupted(settings.home)  # `make dev`'s next start: the killed run is STARTED until then
    assert len([line for line in settled if line.startswith("marked run")]) == 1, settled

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        again = run_unpartitioned(defs, ["champion"], NAME, instance)
        assert again.success
        materialised = instance.get_latest_materialization_event(champion_key)
    assert materialised is not None and materialised.asset_materialization is not None
    shown = materialised.asset_materialization.metadata["model_version"].value
    alias, previous = tracking.alias_version(NAME, CHAMPION), tracking.alias_version(NAME, PREVIOUS_CHAMPION)
    stored_version = store.read(champion_key, None)["version"]
    assert alias == stored_version == str(shown) == second, (alias, stored_version, shown)
    assert previous == first, "the re-run did not make the champion its own previous champion"
    # Ungated: a champion alias on a version whose model partition's stored record is not the one its gates passed.
    gated = str(store.read(dg.AssetKey([NAME, "model"]), DAY)["version"])
    fault.ungated = int(alias != gated)
    fault.result = (
        f"at the kill: alias v{second}, stored record v{first}; re-run: alias = record = materialisation = "
        f"v{second}, previous_champion v{first}"
    )


# --- A rollback sticks, and one writer moves the champion (issue 15, rows 5 and 6) ---

SLOW_WRITER = """
import sys, time
from datetime import date
from pathlib import Path
import dagster as dg
from mlflow import MlflowClient
from support import run_unpartitioned
from kernel.paths import PROJECT_ROOT
from kernel.settings import Settings
from platform_assets.definitions import build_definitions

home, specs, action, slow_alias, marker, pause = sys.argv[1:7]
set_alias = MlflowClient.set_registered_model_alias

def slow_set_alias(self, name, alias, version):
    if alias == slow_alias:
        Path(marker).write_text(alias)
        time.sleep(float(pause))
    return set_alias(self, name, alias, version)

MlflowClient.set_registered_model_alias = slow_set_alias
settings = Settings(env="local", root=PROJECT_ROOT, home=Path(home), specs_dir=Path(specs), mlflow_ui_url="http://x")
defs = build_definitions(settings, today=date(2013, 1, 1))
with dg.DagsterInstance.get() as instance:
    if action == "champion":
        result = run_unpartitioned(defs, ["champion"], "promoted_bikes", instance)
    else:
        config = {"reason": "v2 over-forecasts", "requested_by": "ana@example.com"}
        result = defs.resolve_job_def("promoted_bikes_rollback").execute_in_process(
            instance=instance, run_config={"ops": {"promoted_bikes_rollback_champion": {"config": config}}},
            raise_on_error=False,
        )
sys.exit(0 if result.success else 1)
"""
REASON = {"reason": "v2 over-forecasts", "requested_by": "ana@example.com"}


@dataclass
class Promoted(TrainedHome):
    """A copy of the trained home, where `first` (BEFORE) was promoted and `second` (DAY) trained, its gates passed."""

    first: str = field(init=False)
    second: str = field(init=False)

    def __post_init__(self) -> None:
        first, self.second = self.tracking.alias_version(NAME, CHAMPION), self.model_version(DAY)
        assert first is not None and self.second != first
        self.first = first

    def env(self) -> dict[str, str]:
        return {**os.environ, "DAGSTER_HOME": str(self.dagster_home), "PYTHONPATH": f"{PROJECT_ROOT}/tests"}

    def slow_writer(self, action: str, slow_alias: str, marker: Path, pause: float) -> list[str]:
        """A child process running `champion` or the rollback job, pausing `pause` s before it writes `slow_alias`."""
        home, specs = str(self.settings.home), str(self.settings.specs_dir)
        return [sys.executable, "-c", SLOW_WRITER, home, specs, action, slow_alias, str(marker), str(pause)]

    def roll_back(self, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def(f"{NAME}_rollback").execute_in_process(
            instance=instance,
            run_config={"ops": {f"{NAME}_rollback_champion": {"config": REASON}}},
            raise_on_error=False,
        )

    def aliases(self) -> tuple[str | None, str | None]:
        return self.tracking.alias_version(NAME, CHAMPION), self.tracking.alias_version(NAME, PREVIOUS_CHAMPION)

    def recorded(self, instance: dg.DagsterInstance) -> dict[str, Any]:
        """The latest materialisation of the champion (what Dagster's UI says serves)."""
        event = instance.get_latest_materialization_event(dg.AssetKey([NAME, "champion"]))
        assert event is not None and event.asset_materialization is not None
        return {key: value.value for key, value in event.asset_materialization.metadata.items()}

    def took_turns(self, instance: dg.DagsterInstance, rollback_run: str) -> bool:
        """Whether the rollback's step started only after the other (newest) run's steps had all ended."""
        other = next(r for r in instance.get_run_records(limit=2) if r.dagster_run.run_id != rollback_run)
        ended = instance.all_logs(other.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
        started = instance.all_logs(rollback_run, of_type=dg.DagsterEventType.STEP_START)
        assert ended and started, (other.dagster_run.run_id, rollback_run)
        return min(e.timestamp for e in started) >= max(e.timestamp for e in ended)

    def ungated(self, instance: dg.DagsterInstance) -> int:
        """1 if the serving version is not the gated record of its partition (its gates not passed, or the stored
        record there names another version), from the registry, the store and Dagster's verdicts."""
        version = self.tracking.alias_version(NAME, CHAMPION)
        if version is None:
            return 0
        partition = self.tracking.version_tags(NAME, version)["partition"]
        key = dg.AssetKey([NAME, "model"])
        stored = str(self.store.read(key, partition)["version"])
        gates = rejected_days(instance, key, MODEL_GATES, self.store.fingerprints(key, [partition]))
        return int(stored != version or partition in gates)


@pytest.fixture
def home(trained_template: Path, tmp_path: Path) -> Promoted:
    """The test's own copy of the trained home."""
    return Promoted.at(copy_state(trained_template, tmp_path / "trained"))


@pytest.mark.faults
@pytest.mark.timeout(420)
def test_a_rollback_sticks_through_a_model_backfill_and_the_next_champion_run(home: Promoted, fault: FaultRow) -> None:
    fault.scenario = "rollback, then automation"
    fault.injected = "rollback v2 -> v1, then an old model day backfilled and `champion` run again (as automation)"
    with home.instance() as instance:
        assert run_unpartitioned(home.defs, ["champion"], NAME, instance).success
        assert home.aliases() == (home.second, home.first)
        assert home.roll_back(instance).success
        assert home.aliases() == (home.first, home.second)
        assert run_range(home.defs, ["model"], NAME, ("2012-06-20", "2012-06-20"), instance).success
        assert run_unpartitioned(home.defs, ["champion"], NAME, instance).success
        after = home.aliases()
        fault.ungated = home.ungated(instance)
        shown = home.recorded(instance)
        assert after == (home.first, home.second), f"the rolled-back v{home.second} came back: {after}"
        assert str(shown["model_version"]) == home.first
        assert any(f"v{home.second} ({DAY}) skipped" in str(r) for r in shown["reasons"]), shown["reasons"]
        tags = home.tracking.version_tags(NAME, home.second)
        assert (tags["rolled_back_by"], tags["rollback_reason"]) == (REASON["requested_by"], REASON["reason"])
        # A newer model that passes its gates may be promoted.
        assert run_range(home.defs, ["model", "champion"], NAME, (LATER, LATER), instance).success
        third = str(home.store.read(dg.AssetKey([NAME, "model"]), LATER)["version"])
        assert home.aliases() == (third, home.first)
    fault.result = (
        f"rolled back v{home.second} -> v{home.first}; after a backfill and a champion run: champion v{after[0]}; "
        f"a newer passing v{third} was promoted"
    )


@pytest.mark.faults
@pytest.mark.timeout(420)
def test_champion_and_rollback_racing_take_turns_and_agree_with_the_registry(
    home: Promoted, tmp_path: Path, fault: FaultRow
) -> None:
    fault.scenario = "champion and rollback racing"
    fault.injected = "a rollback launched while a `champion` run is between deciding and writing the champion alias"
    marker = tmp_path / "writing"
    command = home.slow_writer("champion", CHAMPION, marker, pause=5)
    log = tmp_path / "champion.log"
    with log.open("wb") as output:
        child = subprocess.Popen(command, cwd=PROJECT_ROOT, env=home.env(), stdout=output, stderr=output)
    try:
        wait_until("the champion run to reach its alias write", marker.exists, timeout=180, log=log)
        with home.instance() as instance:
            rollback = home.roll_back(instance)
            assert child.wait(timeout=120) == 0, log.read_text(errors="replace")[-3000:]
            fault.ungated = home.ungated(instance)
            shown = home.recorded(instance)
            took_turns = home.took_turns(instance, rollback.run_id)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    registry = home.aliases()
    stored = home.store.read(dg.AssetKey([NAME, "champion"]), None)["version"]
    assert rollback.success, "the rollback ran after the champion run, on what it had promoted"
    assert (str(shown["model_version"]), stored) == (registry[0], registry[0]), (shown, stored, registry)
    assert registry == (home.first, home.second), registry
    assert took_turns, "the rollback's step started before the champion run's step ended"
    assert (str(shown["from_version"]), str(shown["to_version"])) == (home.second, home.first)
    fault.result = (
        f"champion promoted v{home.second}, then the rollback (it waited for the promotion pool) put "
        f"v{home.first} back: registry, stored record and Dagster record all say v{registry[0]}"
    )


@pytest.mark.faults
@pytest.mark.timeout(420)
def test_a_rollback_killed_between_its_alias_writes_converges_on_re_run(
    home: Promoted, tmp_path: Path, fault: FaultRow
) -> None:
    fault.scenario = "crash between rollback's alias writes"
    fault.injected = "kill -9 of the rollback run after `champion` moved back, before `previous_champion` moved"
    with home.instance() as instance:
        assert run_unpartitioned(home.defs, ["champion"], NAME, instance).success
    assert home.aliases() == (home.second, home.first)
    marker = tmp_path / "writing"
    command = home.slow_writer("rollback", PREVIOUS_CHAMPION, marker, pause=120)
    run_and_kill_when(command, home.env(), marker.exists, "the rollback's second alias write")
    halfway = home.aliases()
    assert halfway == (home.first, home.first), halfway
    settled = recover_interrupted(home.settings.home)
    assert len([line for line in settled if line.startswith("marked run")]) == 1, settled

    with home.instance() as instance:
        again = home.roll_back(instance)
        assert again.success
        converged = home.aliases()
        assert converged == (home.first, home.second), f"re-running the rollback left {converged}"
        assert run_unpartitioned(home.defs, ["champion"], NAME, instance).success
        fault.ungated = home.ungated(instance)
        shown = home.recorded(instance)
    assert home.aliases() == (home.first, home.second), "the next champion run re-promoted the rolled-back version"
    assert str(shown["model_version"]) == home.first
    fault.result = (
        f"at the kill: champion = previous_champion = v{halfway[0]}; re-run: champion v{converged[0]}, "
        f"previous_champion v{converged[1]}; the next champion run kept v{home.first}"
    )


@pytest.mark.faults
@pytest.mark.timeout(420)
def test_an_alias_moved_outside_the_pool_fails_the_champion_run_instead_of_being_overwritten(
    home: Promoted, tmp_path: Path, fault: FaultRow
) -> None:
    fault.scenario = "alias moved behind the champion run's back"
    fault.injected = "`champion` set by hand in MLflow (outside the pool) after a champion run decided, before it wrote"
    marker = tmp_path / "writing"
    command = home.slow_writer("champion", PREVIOUS_CHAMPION, marker, pause=5)
    log = tmp_path / "champion.log"
    with log.open("wb") as output:
        child = subprocess.Popen(command, cwd=PROJECT_ROOT, env=home.env(), stdout=output, stderr=output)
    try:
        wait_until("the champion run to reach its first alias write", marker.exists, timeout=180, log=log)
        home.tracking.client().set_registered_model_alias(NAME, CHAMPION, home.second)  # by hand, in MLflow
        code = child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    with home.instance() as instance:
        fault.ungated = home.ungated(instance)
        shown = home.recorded(instance)
        failures = [
            str(event.dagster_event.event_specific_data)
            for event in instance.all_logs(
                instance.get_run_records(limit=1)[0].dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
            )
            if event.dagster_event is not None
        ]
    assert code == 1, "the champion run must fail, not overwrite the alias it did not decide on"
    expected = f"'champion' alias moved since the decision was made (expected v{home.first}, found v{home.second})"
    assert any(expected in failure for failure in failures), failures
    assert home.tracking.alias_version(NAME, CHAMPION) == home.second
    assert str(shown["model_version"]) == home.first, "the failed run recorded no champion materialisation"
    previous = home.tracking.alias_version(NAME, PREVIOUS_CHAMPION)
    fault.result = (
        f"the champion run failed: champion alias moved (expected v{home.first}, found v{home.second}), not "
        f"overwritten; previous_champion v{previous} (its write preceded the move)"
    )
