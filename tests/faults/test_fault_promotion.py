"""A run killed with SIGKILL in the middle of a promotion: between the MLflow alias moving and the champion's stored
record, the one window where registry and store disagree. The next run converges: the alias, the stored record and
the champion asset's materialisation name the same version, and rollback still has the previous champion.

Real processes and stores: models trained in-process on a real Ray head into a SQLite MLflow store and a Dagster
instance on disk (made as `make dev` makes it); the promotion runs in a child process on the same stores, its disk
slow (2 s) only at the rename that publishes the champion's record, and it is killed as soon as the test sees the
`champion` alias move in the MLflow store.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dagster as dg
import pytest
from support import run_range, run_unpartitioned

from devtools.stack import prepare_home, recover_interrupted
from kernel.names import CHAMPION, PREVIOUS_CHAMPION
from kernel.paths import PROJECT_ROOT
from platform_assets.definitions import build_definitions
from resources.storage import PartitionedParquetIOManager
from resources.tracking import MlflowTracking

from .conftest import TODAY, FaultRow, promotable_bikes, run_and_kill_when

NAME = "promoted_bikes"
FIRST, BEFORE, DAY = "2012-04-25", "2012-06-25", "2012-06-26"  # the 56-day window of the gates that pass

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
    tmp_path: Path, ray_address: str, fault: FaultRow
) -> None:
    fault.scenario = "run killed mid-promotion"
    fault.injected = "kill -9 of the champion run right after the MLflow alias moved, before its stored record"
    settings = promotable_bikes(tmp_path, NAME)
    dagster_home = prepare_home(settings.home)
    defs = build_definitions(settings, today=TODAY)
    resources = defs.resources or {}
    tracking, store = resources["mlflow"], resources["io_manager"]
    assert isinstance(tracking, MlflowTracking) and isinstance(store, PartitionedParquetIOManager)
    champion_key = dg.AssetKey([NAME, "champion"])

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert run_range(defs, ["raw", "features"], NAME, (FIRST, DAY), instance).success
        assert run_range(defs, ["model", "champion"], NAME, (BEFORE, BEFORE), instance).success
        first = tracking.alias_version(NAME, CHAMPION)
        assert run_range(defs, ["model"], NAME, (DAY, DAY), instance).success
    second = str(store.read(dg.AssetKey([NAME, "model"]), DAY)["version"])
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
    fault.lost = 0
    fault.result = (
        f"at the kill: alias v{second}, stored record v{first}; re-run: alias = record = materialisation = "
        f"v{second}, previous_champion v{first}"
    )
