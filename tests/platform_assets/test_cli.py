"""The `dagster` CLI as the README tells a user to run it: a range of days in one command, and a rollback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from conftest import BIKE_CSV, TODAY, bike_spec_document

from devtools.stack import RAY_LOOPBACK_ENV, place_event_log
from kernel.paths import PROJECT_ROOT
from kernel.records import Rejected
from kernel.settings import Settings
from platform_assets.definitions import build_definitions
from resources.storage import PartitionedParquetIOManager

NAME = "bike_cli"
FIRST, LAST = "2012-03-01", "2012-03-10"
DAGSTER = Path(sys.executable).parent / "dagster"
LOOKBACK_DAYS = 7  # the bike spec's longest look-back (168 hours): earlier days have no raw history in this home


@dataclass(frozen=True)
class Home:
    """A fresh Dagster home, platform home and specs folder, and the environment the CLI runs in."""

    root: Path
    env: dict[str, str]

    def settings(self) -> Settings:
        return Settings(
            env="local",
            root=PROJECT_ROOT,
            home=self.root / "platform",
            specs_dir=self.root / "specs",
            mlflow_ui_url="http://127.0.0.1:5000",
        )

    def dagster(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(DAGSTER), *args],
            cwd=PROJECT_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )


@pytest.fixture(scope="module")
def home(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Home:
    root = tmp_path_factory.mktemp("cli")
    (root / "specs").mkdir()
    (root / "dagster_home").mkdir()
    shutil.copy(PROJECT_ROOT / "deploy" / "local" / "dagster.yaml", root / "dagster_home" / "dagster.yaml")
    place_event_log(root / "dagster_home" / "dagster.yaml", root / "dagster_home" / "storage")  # as `make dev` does
    document = bike_spec_document(
        name=NAME,
        source={"uri": str(BIKE_CSV)},
        partitioning={"start_date": "2012-01-01", "end_date": "2012-04-01", "rebase_to_yesterday": False},
    )
    (root / "specs" / f"{NAME}.yaml").write_text(yaml.safe_dump(document))
    env = {
        **os.environ,
        **RAY_LOOPBACK_ENV,
        "RAY_ADDRESS": ray_address,
        "RAY_AUTH_MODE": "disabled",
        "DAGSTER_HOME": str(root / "dagster_home"),
        "PLATFORM_HOME": str(root / "platform"),
        "PLATFORM_SPECS_DIR": str(root / "specs"),
    }
    return Home(root, env)


def test_materialise_a_range_of_raw_and_features_from_the_cli(home: Home) -> None:
    """`dagster asset materialize --partition-range`: one run for every day of both assets, checks included."""
    result = home.dagster(
        "asset", "materialize", "-m", "platform_assets.definitions",
        "--select", f"{NAME}/raw,{NAME}/features", "--partition-range", f"{FIRST}...{LAST}",
    )  # fmt: skip
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"

    days = pd.date_range(FIRST, LAST).strftime("%Y-%m-%d").tolist()
    store = (build_definitions(home.settings(), today=TODAY).resources or {})["io_manager"]
    assert isinstance(store, PartitionedParquetIOManager)
    raw = store.read_many(dg.AssetKey([NAME, "raw"]), days, allow_missing=False)
    features = store.read_many(dg.AssetKey([NAME, "features"]), days, allow_missing=False)
    assert not [day for day, value in {**raw, **features}.items() if isinstance(value, Rejected)]
    assert all(len(raw[day]) >= 22 for day in days), {day: len(raw[day]) for day in days}
    # Days whose look-back reaches before the range have no history in this home: their rows are dropped.
    assert all(len(features[day]) == 0 for day in days[:LOOKBACK_DAYS])
    assert all(len(features[day]) == 24 for day in days[LOOKBACK_DAYS:])

    with dg.DagsterInstance.from_config(home.env["DAGSTER_HOME"]) as instance:
        runs = instance.get_run_records()
        assert len(runs) == 1, "a range from the CLI is one run"
        assert runs[0].dagster_run.status == dg.DagsterRunStatus.SUCCESS
        for stage in ("raw", "features"):
            assert instance.get_materialized_partitions(dg.AssetKey([NAME, stage])) == set(days)
        verdicts = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey([NAME, "raw"]), "passes_expectations")]
        )
        assert verdicts, "the blocking check of raw ran in the same run"
        evaluations = instance.get_records_for_run(
            runs[0].dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, limit=1000
        ).records
        events = [r.event_log_entry.dagster_event for r in evaluations]
        data = [event.event_specific_data for event in events if event is not None]
        judged = {(d.asset_check_key, d.partition) for d in data if isinstance(d, dg.AssetCheckEvaluation)}
        checks_per_day = 5  # raw: passes_expectations, complete_days; features: finite, schema, drift
        assert len(evaluations) == len(judged) == len(days) * checks_per_day, "one recorded verdict per day per check"

    # The terminal (local dagster.yaml: python_log_level INFO) has each check's summary, not a line per evaluation.
    output = result.stdout + result.stderr
    assert "ASSET_CHECK_EVALUATION" not in output, output[-3000:]
    assert f"passes_expectations on {NAME}/raw: {len(days)} day(s) judged, 0 failed" in output, output[-3000:]


def test_the_rollback_job_accepts_the_documented_command_and_config(home: Home, tmp_path: Path) -> None:
    """`dagster job execute -j <p>_rollback -c rollback.yaml` with the README's config: a home with no champion yet
    has nothing to roll back to, and says so (a config the job did not accept would fail before the op runs)."""
    config = tmp_path / "rollback.yaml"
    op_config = {"reason": "forecasts too high since Monday", "requested_by": "jane@example.com"}
    config.write_text(yaml.safe_dump({"ops": {f"{NAME}_rollback_champion": {"config": op_config}}}))
    job = f"{NAME}_rollback"
    result = home.dagster("job", "execute", "-m", "platform_assets.definitions", "-j", job, "-c", str(config))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{NAME}: nothing to roll back to (no 'previous_champion' alias)" in output, output[-5000:]
    assert "DagsterInvalidConfigError" not in output
