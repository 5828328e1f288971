"""The dev command's instance config and calm terminal: what reaches an existing home, which warnings it hides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import yaml

from devtools.stack import KNOWN_WARNINGS, LOCAL_INSTANCE_CONFIG, prepare_home, quiet_warnings
from kernel.paths import PROJECT_ROOT

# Each known warning raised the way Dagster raises it for our code, then one Dagster has not raised yet.
RAISE_WARNINGS = """
import warnings
import dagster as dg

dg.TimeWindowPartitionMapping(start_offset=-1, allow_nonexistent_upstream_partitions=True)

@dg.asset(partitions_def=dg.DailyPartitionsDefinition("2024-01-01"), backfill_policy=dg.BackfillPolicy.multi_run(2))
def a() -> None: ...

dg.AssetCheckSpec("c", asset="a", partitions_def=dg.DailyPartitionsDefinition("2024-01-01"))
warnings.warn("Parameter `brand_new` of function `asset` is currently in beta", dg.BetaWarning)
"""


def stderr_with(pythonwarnings: str) -> str:
    env = {**os.environ, "PYTHONWARNINGS": pythonwarnings}
    done = subprocess.run(
        [sys.executable, "-c", RAISE_WARNINGS],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stderr


def test_a_new_home_gets_the_local_config_without_the_signup_modal(tmp_path: Path) -> None:
    dagster_home = prepare_home(tmp_path)
    config = yaml.safe_load((dagster_home / "dagster.yaml").read_text())
    template = yaml.safe_load(LOCAL_INSTANCE_CONFIG.read_text())
    # The batched event log is told the home's own storage folder, so the home opens without DAGSTER_HOME.
    template["event_log_storage"]["config"] = {"base_dir": str(dagster_home / "storage")}
    assert config == template
    assert config["nux"] == {"enabled": False}
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.event_log_storage).__name__ == "BatchedSqliteEventLogStorage"
        assert instance.get_runs() == []


def test_an_existing_home_gains_new_settings_and_keeps_its_own(tmp_path: Path) -> None:
    config = tmp_path / "dagster_home" / "dagster.yaml"
    config.parent.mkdir()
    # A home made before `nux` existed, tuned by its developer, with no newline at the end.
    config.write_text("concurrency:\n  runs:\n    max_concurrent_runs: 8\ntelemetry:\n  enabled: true")

    prepare_home(tmp_path)
    updated = yaml.safe_load(config.read_text())
    prepare_home(tmp_path)

    assert updated["nux"] == {"enabled": False}
    assert updated["concurrency"] == {"runs": {"max_concurrent_runs": 8}}
    assert updated["telemetry"] == {"enabled": True}
    assert set(updated) == set(yaml.safe_load(LOCAL_INSTANCE_CONFIG.read_text()))
    assert yaml.safe_load(config.read_text()) == updated, "a second start adds nothing"


def test_known_warnings_are_hidden_and_unknown_ones_still_show() -> None:
    assert all("," not in message and ":" not in message for message in KNOWN_WARNINGS)
    loud = stderr_with("always")
    assert all(message in loud for message in KNOWN_WARNINGS), "Dagster still raises each warning we filter"

    calm = stderr_with(quiet_warnings(None))

    assert "Invalid -W option" not in calm
    assert not [message for message in KNOWN_WARNINGS if message in calm]
    assert "Parameter `brand_new` of function `asset` is currently in beta" in calm


def test_a_developers_own_pythonwarnings_wins() -> None:
    shown = stderr_with(quiet_warnings("always"))
    assert all(message in shown for message in KNOWN_WARNINGS)
