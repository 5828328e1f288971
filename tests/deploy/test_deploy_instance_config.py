"""deploy/dagster.yaml is a valid production instance for the installed Dagster, dagster-k8s and
dagster-postgres, and says the same as the Helm values the chart renders its instance from."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from . import schemas

INSTANCE_FILE = schemas.DEPLOY_DIR / "dagster.yaml"
Values = dict[str, Any]


@pytest.fixture(scope="module")
def instance() -> dict[str, Any]:
    return schemas.load_yaml_file(INSTANCE_FILE)


def test_instance_file_loads_with_dagsters_own_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._core.instance.config import dagster_instance_config

    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-a-real-password")
    shutil.copy(INSTANCE_FILE, tmp_path / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    assert {
        "storage",
        "run_launcher",
        "run_coordinator",
        "run_monitoring",
        "run_retries",
        "concurrency",
    } <= set(config)


def test_instance_rejects_a_misspelled_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import dagster_instance_config

    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-a-real-password")
    text = INSTANCE_FILE.read_text(encoding="utf-8").replace("max_retries:", "max_retrys:")
    (tmp_path / "dagster.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(DagsterInvalidConfigError, match="max_retrys"):
        dagster_instance_config(str(tmp_path))


def test_run_launcher_config_is_valid_for_k8s_run_launcher(instance: dict[str, Any]) -> None:
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher

    launcher = instance["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    result = process_config(K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors


def test_storage_config_is_valid_for_dagster_postgres(
    instance: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster._config import process_config
    from dagster_postgres import DagsterPostgresStorage

    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-a-real-password")
    storage = instance["storage"]["postgres"]
    assert storage["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    result = process_config(DagsterPostgresStorage.config_type(), storage)
    assert result.success, result.errors


def test_instance_agrees_with_the_helm_values(instance: dict[str, Any], helm_effective: Values) -> None:
    postgres = instance["storage"]["postgres"]["postgres_db"]
    chart_pg = helm_effective["postgresql"]
    assert postgres["hostname"] == chart_pg["postgresqlHost"]
    assert postgres["db_name"] == chart_pg["postgresqlDatabase"]
    assert postgres["username"] == chart_pg["postgresqlUsername"]
    assert postgres["port"] == chart_pg["service"]["port"]
    assert postgres["params"] == chart_pg["postgresqlParams"]
    assert postgres["scheme"] == chart_pg["postgresqlScheme"]

    launcher = instance["run_launcher"]["config"]
    chart_launcher = helm_effective["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["service_account_name"] == helm_effective["global"]["serviceAccountName"]
    assert launcher["postgres_password_secret"] == helm_effective["global"]["postgresqlSecretName"]
    assert launcher["dagster_home"] == helm_effective["global"]["dagsterHome"]
    assert launcher["instance_config_map"] == "dagster-instance"  # what the chart names it for release "dagster"
    assert launcher["resources"] == chart_launcher["resources"]
    assert launcher["security_context"] == chart_launcher["securityContext"]
    assert launcher["volumes"] == chart_launcher["volumes"]
    assert launcher["volume_mounts"] == chart_launcher["volumeMounts"]
    assert launcher["labels"] == chart_launcher["labels"]
    assert launcher["image_pull_policy"] == chart_launcher["imagePullPolicy"]
    run_k8s = chart_launcher["runK8sConfig"]
    assert (
        launcher["run_k8s_config"]["pod_spec_config"]["security_context"] == run_k8s["podSpecConfig"]["securityContext"]
    )
    assert launcher["run_k8s_config"]["job_spec_config"] == run_k8s["jobSpecConfig"]

    monitoring = helm_effective["dagsterDaemon"]["runMonitoring"]
    assert instance["run_monitoring"] == {
        "enabled": monitoring["enabled"],
        "start_timeout_seconds": monitoring["startTimeoutSeconds"],
        "poll_interval_seconds": monitoring["pollIntervalSeconds"],
        "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
        "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
    }
    retries = helm_effective["dagsterDaemon"]["runRetries"]
    assert instance["run_retries"] == {
        "enabled": retries["enabled"],
        "max_retries": retries["maxRetries"],
        "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"],
    }
    concurrency = helm_effective["concurrency"]
    assert instance["concurrency"] == {
        "pools": {
            "default_limit": concurrency["pools"]["defaultLimit"],
            "granularity": concurrency["pools"]["granularity"],
        },
        "runs": {"max_concurrent_runs": concurrency["runs"]["maxConcurrentRuns"]},
    }
    assert instance["telemetry"] == {"enabled": helm_effective["telemetry"]["enabled"]}
