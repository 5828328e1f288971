"""The dev command's instance config: what a new home gets and what reaches an existing one."""

from __future__ import annotations

from pathlib import Path

import yaml

from devtools.stack import LOCAL_INSTANCE_CONFIG, prepare_home


def test_a_new_home_gets_the_local_config_without_the_signup_modal(tmp_path: Path) -> None:
    config = yaml.safe_load((prepare_home(tmp_path) / "dagster.yaml").read_text())
    assert config == yaml.safe_load(LOCAL_INSTANCE_CONFIG.read_text())
    assert config["nux"] == {"enabled": False}


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
