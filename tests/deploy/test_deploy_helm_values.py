"""deploy/helm/values.yaml and values-prod.yaml: valid for the official chart, and what the platform needs."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest

from kernel.names import PROMOTION_POOL

from . import schemas

Values = dict[str, Any]


def _deployment(values: Values) -> Values:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def _env(deployment: Values) -> dict[str, Values]:
    return {item["name"]: item for item in deployment["env"]}


# ---------------------------------------------------------------------------------------------------
# Schema validity
# ---------------------------------------------------------------------------------------------------


def test_base_values_validate(helm_base: Values) -> None:
    schemas.validate_helm_values(helm_base)


def test_prod_overlay_validates_on_its_own(helm_prod: Values) -> None:
    schemas.validate_helm_values(helm_prod)


def test_base_plus_overlay_validates(helm_base: Values, helm_prod: Values) -> None:
    schemas.validate_helm_values(schemas.helm_merge(helm_base, helm_prod))


def test_chart_defaults_alone_validate_in_strict_mode() -> None:
    # Guards the validator itself: strict mode must not reject what the chart ships.
    schemas.validate_helm_values({})


def test_overlay_is_thin_and_never_replaces_the_deployments_list(helm_prod: Values) -> None:
    assert "dagster-user-deployments" not in helm_prod
    assert set(helm_prod) <= {"dagsterWebserver", "dagsterDaemon", "retention", "pythonLogs", "postgresql"}


# ---------------------------------------------------------------------------------------------------
# Each validator proves it can fail: broken copies of our values are rejected
# ---------------------------------------------------------------------------------------------------


def _break_port_type(values: Values) -> None:
    _deployment(values)["port"] = "4000"


def _misspell_deployment_key(values: Values) -> None:
    _deployment(values)["envSecret"] = _deployment(values).pop("envSecrets")


def _misspell_k8s_resources(values: Values) -> None:
    values["dagsterWebserver"]["resources"]["limit"] = values["dagsterWebserver"]["resources"].pop("limits")


def _misspell_security_context(values: Values) -> None:
    values["dagsterDaemon"]["securityContext"] = {"runAsNonroot": True}


def _misspell_run_retries(values: Values) -> None:
    values["dagsterDaemon"]["runRetries"]["maxRetry"] = values["dagsterDaemon"]["runRetries"].pop("maxRetries")


def _drop_required_image(values: Values) -> None:
    del _deployment(values)["image"]


def _bad_run_launcher_type(values: Values) -> None:
    values["runLauncher"]["type"] = "KubernetesRunLauncher"


def _bad_pool_limit_type(values: Values) -> None:
    values["concurrency"]["pools"]["defaultLimit"] = "two"


def _bad_probe_wrapper_key(values: Values) -> None:
    _deployment(values)["startupProbe"]["periodSecond"] = 10


def _unknown_container_field_in_env(values: Values) -> None:
    _deployment(values)["env"][0]["valueFromm"] = {}


BREAKAGES: dict[str, tuple[Callable[[Values], None], str]] = {
    "wrong type: port as string": (_break_port_type, "is not of type 'integer'"),
    "misspelled: envSecret": (_misspell_deployment_key, "'envSecret' was unexpected"),
    "misspelled: resources.limit": (_misspell_k8s_resources, "'limit' was unexpected"),
    "misspelled: securityContext.runAsNonroot": (_misspell_security_context, "'runAsNonroot' was unexpected"),
    "misspelled: runRetries.maxRetry": (_misspell_run_retries, "'maxRetry' was unexpected"),
    "missing required: deployment image": (_drop_required_image, "'image' is a required property"),
    "bad enum: runLauncher.type": (_bad_run_launcher_type, "is not one of"),
    "wrong type: concurrency.pools.defaultLimit": (_bad_pool_limit_type, "is not of type 'integer'"),
    "misspelled inside a chart probe wrapper": (_bad_probe_wrapper_key, "'periodSecond' was unexpected"),
    "misspelled: env[].valueFromm": (_unknown_container_field_in_env, "'valueFromm' was unexpected"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES), ids=list(BREAKAGES))
def test_broken_copy_of_base_values_is_rejected(helm_base: Values, breakage: str) -> None:
    broken = copy.deepcopy(helm_base)
    corrupt, expected = BREAKAGES[breakage]
    corrupt(broken)
    with pytest.raises(schemas.SchemaValidationError) as raised:
        schemas.validate_helm_values(broken)
    assert expected in str(raised.value)


def test_non_strict_mode_still_rejects_schema_violations(helm_base: Values) -> None:
    broken = copy.deepcopy(helm_base)
    _break_port_type(broken)
    with pytest.raises(schemas.SchemaValidationError, match="port"):
        schemas.validate_helm_values(broken, strict=False)


def test_helm_merge_follows_helm_semantics() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    merged = schemas.helm_merge(base, {"a": {"c": [3]}, "d": None, "e": {"f": 2}})
    assert merged == {"a": {"b": 1, "c": [3]}, "e": {"f": 2}}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


# ---------------------------------------------------------------------------------------------------
# What the platform needs from the chart
# ---------------------------------------------------------------------------------------------------


def test_user_code_deployment_serves_our_code_location(helm_effective: Values) -> None:
    deployment = _deployment(helm_effective)
    assert deployment["port"] == 4000
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("-m") + 1] == "platform_assets.definitions"
    assert args[args.index("-a") + 1] == "defs"
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert deployment["image"]["repository"] == "ml-asset-platform"
    # A placeholder replaced by `--set ...image.tag=$(git rev-parse --short HEAD)`, never latest.
    assert deployment["image"]["tag"] == "GIT_SHA"


def test_user_code_environment_selects_production_and_reads_secrets_by_reference(
    helm_effective: Values,
) -> None:
    deployment = _deployment(helm_effective)
    env = _env(deployment)
    assert env["PLATFORM_ENV"] == {"name": "PLATFORM_ENV", "value": "prod"}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "ray-auth-token", "key": "auth_token"}}
    assert {item["name"] for item in deployment["envSecrets"]} == {
        "mlflow-client-credentials",
        "platform-object-store-sensors",
    }
    assert {item["name"] for item in deployment["envConfigMaps"]} == {"platform-env"}


def test_runs_use_the_k8s_run_launcher_with_defaults(helm_effective: Values) -> None:
    launcher = helm_effective["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    config = launcher["config"]["k8sRunLauncher"]
    assert config["resources"]["requests"] and config["resources"]["limits"]
    run_k8s = config["runK8sConfig"]
    assert run_k8s["podSpecConfig"]["securityContext"]["runAsNonRoot"] is True
    assert run_k8s["jobSpecConfig"]["backoffLimit"] == 0
    # The user deployment's resources become the run pods' (includeConfigInLaunchedRuns): keep them equal.
    assert _deployment(helm_effective)["resources"] == config["resources"]


def test_external_postgres_with_password_from_an_existing_secret(helm_effective: Values) -> None:
    postgresql = helm_effective["postgresql"]
    assert postgresql["enabled"] is False
    assert postgresql["postgresqlHost"] and postgresql["postgresqlDatabase"] and postgresql["postgresqlUsername"]
    assert postgresql["postgresqlPassword"] == ""
    assert helm_effective["generatePostgresqlPasswordSecret"] is False
    assert helm_effective["global"]["postgresqlSecretName"] == "dagster-postgresql-secret"
    assert postgresql["postgresqlParams"]["sslmode"] == "require"  # production overlay


def test_daemon_monitors_and_retries_runs(helm_effective: Values) -> None:
    daemon = helm_effective["dagsterDaemon"]
    assert daemon["enabled"] is True
    assert daemon["runMonitoring"]["enabled"] is True
    assert daemon["runMonitoring"]["startTimeoutSeconds"] > 0
    assert daemon["runRetries"]["enabled"] is True
    assert daemon["runRetries"]["maxRetries"] >= 1


def test_concurrency_pools_keep_every_asset_and_promotion_to_one_writer(helm_effective: Values) -> None:
    concurrency = helm_effective["concurrency"]
    assert concurrency["enabled"] is True
    # Claimed by each step as it starts, in whatever process runs it (queued or in-process CLI runs alike).
    assert concurrency["pools"]["granularity"] == "op"
    # Every stage pool has no explicit limit and `promotion` none before pool-limits-job.yaml runs: one at a time.
    assert concurrency["pools"]["defaultLimit"] == 1
    assert concurrency["runs"]["maxConcurrentRuns"] >= 1
    # The chart refuses both run-level limit styles at once.
    queued = helm_effective["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued.get("maxConcurrentRuns") is None and not queued.get("tagConcurrencyLimits")
    job = (schemas.DEPLOY_DIR / "k8s" / "pool-limits-job.yaml").read_text(encoding="utf-8")
    assert set(re.findall(r"dagster instance concurrency set (\S+) (\d+)", job)) == {(PROMOTION_POOL, "1")}


def test_read_only_webserver_in_production(helm_base: Values, helm_effective: Values) -> None:
    assert helm_base["dagsterWebserver"]["enableReadOnly"] is False
    assert helm_effective["dagsterWebserver"]["enableReadOnly"] is True


def test_webserver_listens_on_an_unprivileged_port_with_matching_probes(helm_effective: Values) -> None:
    webserver = helm_effective["dagsterWebserver"]
    port = webserver["service"]["port"]
    assert port >= 1024, "non-root cannot bind below 1024"
    assert webserver["readinessProbe"]["httpGet"]["port"] == port
    assert webserver["livenessProbe"]["httpGet"]["port"] == port
    assert webserver["service"]["type"] == "ClusterIP"


def test_dagster_images_match_the_locked_dagster_version(helm_effective: Values) -> None:
    lock = (schemas.REPO_ROOT / "uv.lock").read_text(encoding="utf-8")
    match = re.search(r'^name = "dagster"\nversion = "([^"]+)"', lock, flags=re.M)
    assert match, "dagster not found in uv.lock"
    assert helm_effective["dagsterDaemon"]["image"]["tag"] == match.group(1)
    # The webserver runs our image (the cross-site guard), which installs exactly the locked dagster.
    assert helm_effective["dagsterWebserver"]["image"] == {**_deployment(helm_effective)["image"]}
    readme = (schemas.DEPLOY_DIR / "README.md").read_text(encoding="utf-8")
    assert f"--version {match.group(1)}" in readme


def test_one_service_account_for_all_dagster_pods(helm_effective: Values) -> None:
    assert helm_effective["global"]["serviceAccountName"] == "dagster"
    assert helm_effective["serviceAccount"] == {"create": True, "name": "dagster", "annotations": {}}
