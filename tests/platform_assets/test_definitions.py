"""The code location: it loads, its graph is what the snapshot says, bad specs fail loudly, imports stay cheap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
from conftest import TODAY, PipelineFactory, bike_spec_document

from kernel.names import GATES, PROMOTION_POOL
from kernel.paths import PROJECT_ROOT
from kernel.settings import Settings
from kernel.spec import SpecError
from platform_assets.definitions import build_definitions

SNAPSHOT = Path(__file__).parent / "asset_specs.snapshot.json"
# The platform's heavy libraries, and what its load used to pay for before a step reads or writes data.
HEAVY = (
    "ray",
    "mlflow",
    "great_expectations",
    "sklearn",
    "kubernetes",
    "matplotlib",
    "pandas",
    "pyarrow",
    "sqlalchemy",
)


def shipped_defs(tmp_path: Path) -> dg.Definitions:
    settings = Settings(
        env="local",
        root=PROJECT_ROOT,
        home=tmp_path,
        specs_dir=PROJECT_ROOT / "pipelines",
        mlflow_ui_url="http://127.0.0.1:5000",
    )
    return build_definitions(settings, today=TODAY)


def describe(defs: dg.Definitions) -> dict[str, dict[str, object]]:
    """Everything about each asset a reviewer should see change: deps, group, kinds, policies, checks."""
    checks: dict[str, list[str]] = {}
    for definition in defs.asset_checks or []:
        assert isinstance(definition, dg.AssetChecksDefinition)
        for spec in definition.check_specs:
            label = f"{spec.name} (blocking)" if spec.blocking else spec.name
            checks.setdefault(spec.asset_key.to_user_string(), []).append(label)
    graph = defs.resolve_asset_graph()
    out: dict[str, dict[str, object]] = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        name = key.to_user_string()
        out[name] = {
            "deps": sorted(dep.to_user_string() for dep in node.parent_keys),
            "group": node.group_name,
            "owners": list(node.owners),
            "kinds": sorted(node.kinds),
            "tags": dict(node.tags),
            "partitioned": node.partitions_def is not None,
            "backfill_policy": str(node.backfill_policy) if node.backfill_policy else None,
            "automation": node.automation_condition.get_label() if node.automation_condition else None,
            "freshness": str(node.freshness_policy) if node.freshness_policy else None,
            "checks": sorted(checks.get(name, [])),
            "description": node.description,
        }
    return out


def test_definitions_load_and_validate(tmp_path: Path) -> None:
    defs = shipped_defs(tmp_path)
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    stages = {"raw", "features", "model", "champion", "predictions", "backtest", "backtest_report"}
    pipelines = ("bike_demand", "air_quality")  # every pipelines/*.yaml, each its own group
    assert keys == {f"{p}/{stage}" for p in pipelines for stage in stages}
    sensors = {sensor.name for sensor in defs.sensors or []}
    assert sensors == {
        "automation_sensor",
        "run_failure_alert",
        "mlflow_runs_of_failed_runs",
        "unfinished_writes_sensor",
        *(f"{p}_landing_sensor" for p in pipelines),
        *(f"{p}_retire_sensor" for p in pipelines),
    }


def test_asset_graph_matches_the_snapshot(tmp_path: Path) -> None:
    """A change to the graph must be a visible diff: regenerate with UPDATE_SNAPSHOT=1 and review it."""
    current = describe(shipped_defs(tmp_path))
    if os.environ.get("UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_every_writer_and_judge_of_an_asset_takes_that_assets_pool(tmp_path: Path) -> None:
    """One writer per asset: the step that materialises a stage and the step that judges it share the stage's pool
    (limit 1 in every instance), so no two runs write or judge the same partitions at once; the champion's writer is
    in `promotion`, the pool of every writer of the champion alias."""
    defs = shipped_defs(tmp_path)
    pools: dict[str, str | None] = {}
    for assets_def in defs.assets or []:
        assert isinstance(assets_def, dg.AssetsDefinition)
        (key,) = assets_def.keys
        pools[key.to_user_string()] = assets_def.op.pool
    judged: dict[str, str | None] = {}
    for checks_def in defs.asset_checks or []:
        assert isinstance(checks_def, dg.AssetChecksDefinition)
        (key,) = {spec.asset_key for spec in checks_def.check_specs}
        judged[key.to_user_string()] = checks_def.op.pool
    expected = {key: PROMOTION_POOL if key.endswith("/champion") else key.replace("/", ".") for key in pools}
    assert pools == expected
    assert judged == {key: expected[key] for key in judged}
    assert set(judged) == {f"{p}/{stage}" for p in ("bike_demand", "air_quality") for stage in GATES}


def test_every_asset_check_and_sensor_has_a_description(tmp_path: Path) -> None:
    defs = shipped_defs(tmp_path)
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, key
    for checks in defs.asset_checks or []:
        assert isinstance(checks, dg.AssetChecksDefinition)
        for spec in checks.check_specs:
            assert spec.description, spec.key
    for sensor in defs.sensors or []:
        assert sensor.description, sensor.name


def test_a_bad_spec_fails_at_load_naming_file_field_and_reason(make_defs: PipelineFactory) -> None:
    document = bike_spec_document(name="bike_bad")
    document["training"]["window_days"] = 1  # type: ignore[index]
    with pytest.raises(SpecError) as error:
        make_defs(document)
    message = str(error.value)
    assert "bike_bad.yaml" in message
    assert "training.window_days" in message
    assert "greater than 1" in message


def test_loading_the_code_location_imports_no_heavy_library(tmp_path: Path) -> None:
    """Each run process and each `dagster dev` reload pays for module-level imports."""
    code = (
        "import sys, json\n"
        "from platform_assets.definitions import defs\n"
        "loaded = defs()\n"
        "loaded.resolve_asset_graph()\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    env = {**os.environ, "PLATFORM_HOME": str(tmp_path), "PLATFORM_ENV": "local"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def _raw_partitions(settings: Settings, today: date, pipeline: str = "bike_demand") -> list[str]:
    graph = build_definitions(settings, today=today).resolve_asset_graph()
    partitions = graph.get(dg.AssetKey([pipeline, "raw"])).partitions_def
    assert partitions is not None
    return list(partitions.get_partition_keys())


def test_sample_data_is_rebased_by_whole_weeks_and_pinned_locally_only(tmp_path: Path) -> None:
    local = Settings(
        env="local", root=PROJECT_ROOT, home=tmp_path, specs_dir=PROJECT_ROOT / "pipelines", mlflow_ui_url="http://x"
    )
    today = date(2026, 11, 23)
    keys = _raw_partitions(local, today)
    last = date.fromisoformat(keys[-1])
    assert today - timedelta(days=7) <= last < today
    assert (last - date(2012, 12, 31)).days % 7 == 0, "whole weeks keep weekdays true"
    assert len(keys) == 731

    assert _raw_partitions(local, today + timedelta(days=30)) == keys, "the shift is pinned, keys do not move"

    prod = Settings(
        env="prod", root=PROJECT_ROOT, home=tmp_path / "prod", specs_dir=PROJECT_ROOT / "pipelines", mlflow_ui_url="x"
    )
    assert _raw_partitions(prod, today)[0] == "2011-01-01"

    # The air-quality sample (2010..2014) is rebased the same way, pinned on its own.
    air = _raw_partitions(local, today, "air_quality")
    assert len(air) == 1_826
    assert today - timedelta(days=7) <= date.fromisoformat(air[-1]) < today
    assert (date.fromisoformat(air[-1]) - date(2014, 12, 31)).days % 7 == 0
    assert _raw_partitions(prod, today, "air_quality")[0] == "2010-01-01"
