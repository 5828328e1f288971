"""The production code location loads the way the code server loads it, offline.

A fresh interpreter imports `platform_assets.definitions` and calls its `defs` entry point with only
PLATFORM_ENV=prod set: no endpoint variables (dagster EnvVars resolve when a run starts), no kubeconfig, no
in-cluster service account, and every socket connection or DNS lookup refused. It reports what it loaded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from kernel.names import PROMOTION_POOL

from . import schemas

PIPELINES = ("bike_demand", "air_quality")  # every shipped pipelines/*.yaml
LOADER = textwrap.dedent(
    """
    import json, socket, sys, warnings

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network disabled while loading the code location")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse
    warnings.simplefilter("ignore")

    import dagster as dg
    from dagster_k8s import k8s_job_executor
    from dagster_ray.kuberay import KubeRayCluster, KubeRayClusterClientResource

    from platform_assets.definitions import defs as entry_point

    defs = entry_point()
    repository = defs.get_repository_def()
    ray_cluster = defs.resources["ray_cluster"]
    print(json.dumps({
        "assets": sorted(key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()),
        "executor": defs.executor.name if defs.executor else None,
        # Configured with the step pods' ServiceAccounts (platform_assets/wiring.py STEP_K8S_CONFIG).
        "executor_is_k8s_job_executor": getattr(getattr(defs.executor, "config_schema", None), "parent_def", None)
        is k8s_job_executor,
        "jobs": {job.name: job.executor_def.name for job in repository.get_all_jobs()},
        "pools": sorted({
            node.definition.pool
            for job in repository.get_all_jobs()
            for node in job.graph.nodes
            if isinstance(node.definition, dg.OpDefinition) and node.definition.pool
        }),
        "sensors": {s.name: s.default_status.value for s in repository.sensor_defs},
        "resources": {k: f"{type(v).__module__}.{type(v).__name__}" for k, v in defs.resources.items()},
        "ray_cluster_is_kuberay": isinstance(ray_cluster, KubeRayCluster),
        "ray_cluster_namespace": ray_cluster.namespace if isinstance(ray_cluster, KubeRayCluster) else None,
        "raycluster_client_ok": isinstance(defs.resources["raycluster_client"], KubeRayClusterClientResource),
        "network_attempts": attempts,
    }))
    """
)

# What a developer's shell or CI might carry that would change (or fake) what loading sees.
_STRIPPED = (
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "KUBECONFIG",
    "RAY_ADDRESS",
    "MLFLOW_TRACKING_URI",
    "PLATFORM_STORAGE_URI",
    "PLATFORM_MLFLOW_UI_URL",
    "PLATFORM_SPECS_DIR",
    "PLATFORM_ROOT",
    "DAGSTER_HOME",
    "DAGSTER_RAY_NAMESPACES",
    "HTTP_PROXY",
    "HTTPS_PROXY",
)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("home")
    env = {key: value for key, value in os.environ.items() if key not in _STRIPPED}
    env.update(
        PLATFORM_ENV="prod",
        PLATFORM_HOME=str(home / "platform"),
        HOME=str(home),  # no ~/.kube/config
        KUBECONFIG=str(home / "no-such-kubeconfig"),
        DAGSTER_HOME=str(home / "dagster"),
        PYTHONPATH=str(schemas.REPO_ROOT),
    )
    Path(env["DAGSTER_HOME"]).mkdir()
    result = subprocess.run(
        [sys.executable, "-c", LOADER],
        cwd=schemas.REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_loads_without_any_network_access(loaded: dict[str, Any]) -> None:
    assert loaded["network_attempts"] == []


def test_asset_keys(loaded: dict[str, Any]) -> None:
    stages = ("raw", "features", "model", "champion", "predictions", "backtest", "backtest_report")
    assert set(loaded["assets"]) == {f"{p}/{stage}" for p in PIPELINES for stage in stages}


def test_every_job_uses_the_k8s_job_executor(loaded: dict[str, Any]) -> None:
    assert loaded["executor"] == "k8s" and loaded["executor_is_k8s_job_executor"] is True
    user_actions = {f"{p}_{action}": "k8s" for p in PIPELINES for action in ("rollback", "promote", "retire")}
    assert loaded["jobs"] == {"__ASSET_JOB": "k8s", "delete_kuberay_clusters": "k8s", **user_actions}


def test_kuberay_cleanup_sensor_runs_by_default(loaded: dict[str, Any]) -> None:
    assert loaded["sensors"]["kuberay_cleanup_sensor"] == "RUNNING"


def test_ray_cluster_is_a_per_run_kuberay_cluster(loaded: dict[str, Any]) -> None:
    assert loaded["ray_cluster_is_kuberay"] is True
    assert loaded["resources"]["ray_cluster"] == "resources.kuberay.KubeRayRunCluster"
    assert loaded["raycluster_client_ok"] is True
    assert loaded["ray_cluster_namespace"] == "dagster"
    assert {"io_manager", "mlflow"} <= set(loaded["resources"])


def test_every_pool_the_code_declares_is_one_writer_in_production(loaded: dict[str, Any], helm_effective: Any) -> None:
    """Each stage's pool (its asset's writer and checks) and `promotion` hold one slot in the production instance:
    set to 1 by deploy/k8s/pool-limits-job.yaml, or, left unset there, at the chart's `defaultLimit`."""
    stages = ("raw", "features", "model", "predictions", "backtest", "backtest_report")
    assert set(loaded["pools"]) == {f"{p}.{stage}" for p in PIPELINES for stage in stages} | {PROMOTION_POOL}
    job = (schemas.DEPLOY_DIR / "k8s" / "pool-limits-job.yaml").read_text(encoding="utf-8")
    explicit = {pool: int(limit) for pool, limit in re.findall(r"dagster instance concurrency set (\S+) (\d+)", job)}
    default = helm_effective["concurrency"]["pools"]["defaultLimit"]
    assert helm_effective["concurrency"]["pools"]["granularity"] == "op"  # claimed per step, in-process runs too
    limits = {pool: explicit.get(pool, default) for pool in loaded["pools"]}
    assert limits == dict.fromkeys(loaded["pools"], 1), limits
    assert explicit == {PROMOTION_POOL: 1}, "a limit set for a pool the code does not declare"
