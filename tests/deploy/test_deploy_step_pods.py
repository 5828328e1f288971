"""The Kubernetes Jobs k8s_job_executor creates for OUR steps are valid, hardened and carry the platform's
environment, and each step gets the resources its pipeline spec asks for.

Production definitions are built offline (PLATFORM_ENV=prod wiring); the execution plan of every job gives
each step's tags exactly as the executor receives them; tests/deploy/run_pods.py then builds the step Job
with dagster-k8s's own merge (launcher < code location < step tag) and `construct_dagster_k8s_job`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from . import hardening, inventory, ray_clusters, run_pods, schemas

Values = dict[str, Any]
IMAGE = ray_clusters.IMAGE
# Only read when a run starts; the execution plan resolves resource config, so give them placeholders.
RUNTIME_ENV = {
    "PLATFORM_STORAGE_URI": "s3://ml-platform/platform?region=us-east-1",
    "MLFLOW_TRACKING_URI": "http://mlflow.mlflow.svc:5000",
    "PLATFORM_MLFLOW_UI_URL": "http://localhost:5000",
}


@dataclass(frozen=True)
class Step:
    job: str
    key: str
    op_name: str
    tags: dict[str, str]
    executor_config: dict[str, Any]
    resources: frozenset[str]


def executor_config(job: Any) -> dict[str, Any]:
    """The config the job's (configured) k8s_job_executor runs with, defaults filled in, as Dagster resolves it."""
    resolved = job.executor_def.config_schema.resolve_config({"config": {}})
    assert resolved.success, resolved.errors
    return dict(resolved.value["config"])


@dataclass(frozen=True)
class Location:
    defs: Any
    steps: list[Step]

    def step(self, key: str) -> Step:
        (step,) = [s for s in self.steps if s.key == key]
        return step


def _example_config(job_name: str) -> dict[str, Any] | None:
    """The rollback, manual promotion and retire jobs need their reason and requester (and version, or source) to
    plan; the other jobs need no config."""
    config = {"reason": "planning only", "requested_by": "tests"}
    if job_name.endswith("_retire"):
        return {"ops": {f"{job_name}_source": {"config": {**config, "source": "planning-only.csv"}}}}
    if job_name.endswith("_promote"):
        config["version"] = "1"
    elif not job_name.endswith("_rollback"):
        return None
    return {"ops": {f"{job_name}_champion": {"config": config}}}


def _load(specs_dir: Path, home: Path) -> Location:
    from dagster._core.execution.api import create_execution_plan

    from kernel.settings import Settings
    from platform_assets.definitions import build_definitions

    settings = Settings(
        env="prod",
        root=schemas.REPO_ROOT,
        home=home,
        specs_dir=specs_dir,
        mlflow_ui_url="http://localhost:5000",
    )
    defs = build_definitions(settings)
    steps = [
        Step(
            job=job.name,
            key=step.key,
            op_name=job.get_node(step.node_handle).definition.name,
            tags=dict(step.tags or {}),
            executor_config=executor_config(job),
            resources=frozenset(cast(Any, job.get_node(step.node_handle).definition).required_resource_keys),
        )
        for job in defs.get_repository_def().get_all_jobs()
        for step in create_execution_plan(job, run_config=_example_config(job.name)).steps
    ]
    return Location(defs=defs, steps=steps)


@pytest.fixture(scope="module")
def runtime_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in RUNTIME_ENV.items():
            patch.setenv(key, value)
        patch.setenv("PLATFORM_ENV", "prod")
        yield


@pytest.fixture(scope="module")
def location(runtime_env: None, tmp_path_factory: pytest.TempPathFactory) -> Location:
    return _load(schemas.REPO_ROOT / "pipelines", tmp_path_factory.mktemp("platform-home"))


def _variant(tmp_path_factory: pytest.TempPathFactory, **training: Any) -> Location:
    specs = tmp_path_factory.mktemp("specs")
    ray_clusters.spec_variant(specs, training=training)
    return _load(specs, tmp_path_factory.mktemp("platform-home"))


@pytest.fixture(scope="module")
def gpu_location(runtime_env: None, tmp_path_factory: pytest.TempPathFactory) -> Location:
    return _variant(tmp_path_factory, gpu=1, gpu_node_selector=ray_clusters.GPU_SELECTOR)


def _job(values: Values, step: Step, **kwargs: Any) -> dict[str, Any]:
    return run_pods.step_job_manifest(
        values, image=IMAGE, step_key=step.key, step_tags=step.tags, op_name=step.op_name,
        executor_config=step.executor_config, **kwargs,
    )  # fmt: skip


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def _container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = _pod(job)["containers"]
    return container


def _quantities(block: dict[str, Any]) -> dict[str, Any]:
    return {key: schemas.parse_quantity(value) for key, value in block.items()}


# ---------------------------------------------------------------------------------------------------
# Which steps, with which tags
# ---------------------------------------------------------------------------------------------------


def test_every_job_runs_its_steps_in_their_own_pods(location: Location) -> None:
    from dagster_k8s import k8s_job_executor

    from platform_assets.wiring import STEP_K8S_CONFIG

    jobs = location.defs.get_repository_def().get_all_jobs()
    assert {job.name for job in jobs} >= {"__ASSET_JOB", "delete_kuberay_clusters"}
    for job in jobs:
        assert job.executor_def.name == k8s_job_executor.name, job.name
        assert job.executor_def.config_schema.parent_def is k8s_job_executor, job.name  # pyright: ignore[reportAttributeAccessIssue]
        config = executor_config(job)
        assert config["step_k8s_config"]["pod_spec_config"] == STEP_K8S_CONFIG["step_k8s_config"]["pod_spec_config"]
        assert {op: c["pod_spec_config"] for op, c in config["per_step_k8s_config"].items()} == {
            op: c["pod_spec_config"] for op, c in STEP_K8S_CONFIG["per_step_k8s_config"].items()
        }


def test_step_tags_are_the_assets_op_tags(location: Location) -> None:
    tagged = {}
    for asset in location.defs.assets or []:
        op_tags = dict(asset.op.tags)
        assert location.step(asset.op.name).tags == op_tags, asset.op.name
        if "dagster-k8s/config" in op_tags:
            tagged[asset.op.name] = op_tags
    assert {"bike_demand__model", "bike_demand__features", "bike_demand__predictions"} <= set(tagged)


# ---------------------------------------------------------------------------------------------------
# Every step Job: valid, hardened, with the platform's environment
# ---------------------------------------------------------------------------------------------------


def test_every_step_job_is_valid_and_hardened(location: Location, helm_effective: Values) -> None:
    problems: list[str] = []
    for step in location.steps:
        job = _job(helm_effective, step)
        try:
            schemas.validate_k8s_object(job)
        except schemas.SchemaValidationError as error:
            problems.append(f"{step.key}: {error}")
        problems += [f"{step.key}: {finding}" for finding in hardening.workload_findings(job)]
    assert problems == []
    assert len(location.steps) >= 10  # six assets, four check steps, the cleanup op


def test_step_jobs_inherit_the_run_launchers_hardening(location: Location, helm_effective: Values) -> None:
    launcher = helm_effective["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s = launcher["runK8sConfig"]
    for step in location.steps:
        job = _job(helm_effective, step)
        pod, container = _pod(job), _container(job)
        assert container["securityContext"] == launcher["securityContext"], step.key
        assert pod["securityContext"] == run_k8s["podSpecConfig"]["securityContext"], step.key
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], step.key  # writable /tmp on a read-only root
        assert job["spec"]["backoffLimit"] == run_k8s["jobSpecConfig"]["backoffLimit"] == 0
        assert job["spec"]["ttlSecondsAfterFinished"] == run_k8s["jobSpecConfig"]["ttlSecondsAfterFinished"]
        assert job["metadata"]["namespace"] == "dagster"
        assert container["args"][-2:] == ["api", "execute_step"]
        assert container["image"] == IMAGE


def test_step_pods_get_the_platform_environment(location: Location, helm_effective: Values) -> None:
    job = _job(helm_effective, location.step("bike_demand__model"))
    container = _container(job)
    env = {item["name"]: item for item in container["env"]}
    assert env["PLATFORM_ENV"]["value"] == "prod"
    assert env["DAGSTER_RAY_NAMESPACES"]["value"] == "dagster"
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "ray-auth-token", "key": "auth_token"}
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "dagster-postgresql-secret"
    assert "RAY_ADDRESS" not in env
    sources = {next(iter(source.values()))["name"] for source in container["envFrom"]}
    assert {"platform-env", "mlflow-client-credentials", "platform-object-store-sensors"} <= sources


def test_only_the_steps_that_drive_ray_may_create_clusters(location: Location, helm_effective: Values) -> None:
    """A step with the `ray_cluster` resource creates or joins its run's RayCluster through the Kubernetes API, and
    dagster-ray's delete op (`raycluster_client`) deletes expired ones: they run as the account
    deploy/k8s/rbac-kuberay.yaml binds to the KubeRay Role, token mounted. Every other step (ingest, champion,
    checks, rollback, ...) runs as the account with no rights and no token."""
    binding = inventory.by_kind(inventory.manifests(), "RoleBinding", "dagster-kuberay")
    kuberay = {subject["name"] for subject in binding["subjects"]}
    drivers = set()
    for step in location.steps:
        pod = _pod(_job(helm_effective, step))
        drives_ray = bool(step.resources & {"ray_cluster", "raycluster_client"})
        assert (pod["serviceAccountName"] in kuberay) is drives_ray, step.key
        if drives_ray:
            drivers.add(step.key.split("__")[-1])
            assert pod.get("automountServiceAccountToken", True) is True, step.key
        else:
            assert pod["serviceAccountName"] == "dagster-step", step.key
    assert drivers == {"features", "model", "predictions", "delete_kuberay_clusters_op"}


# ---------------------------------------------------------------------------------------------------
# Resources from the spec's compute hints
# ---------------------------------------------------------------------------------------------------


def test_training_step_gets_the_specs_training_requests(location: Location, helm_effective: Values) -> None:
    hint = ray_clusters.load_spec().compute.training
    resources = _container(_job(helm_effective, location.step("bike_demand__model")))["resources"]
    assert _quantities(resources["requests"]) == _quantities({"cpu": hint.cpu, "memory": hint.memory})
    assert schemas.parse_quantity(resources["limits"]["memory"]) == schemas.parse_quantity(hint.memory)
    assert "nvidia.com/gpu" not in resources["limits"]
    assert "nodeSelector" not in _pod(_job(helm_effective, location.step("bike_demand__model")))


@pytest.mark.parametrize("step_key", ["bike_demand__features", "bike_demand__predictions"])
def test_other_ray_steps_get_the_specs_default_requests(
    location: Location, helm_effective: Values, step_key: str
) -> None:
    hint = ray_clusters.load_spec().compute.default
    resources = _container(_job(helm_effective, location.step(step_key)))["resources"]
    assert _quantities(resources["requests"]) == _quantities({"cpu": hint.cpu, "memory": hint.memory})


def test_untagged_steps_get_the_run_launchers_floor(location: Location, helm_effective: Values) -> None:
    floor = helm_effective["runLauncher"]["config"]["k8sRunLauncher"]["resources"]
    untagged = [step for step in location.steps if "dagster-k8s/config" not in step.tags]
    assert {"bike_demand__raw", "bike_demand__champion", "delete_kuberay_clusters_op"} <= {s.key for s in untagged}
    for step in untagged:
        assert _container(_job(helm_effective, step))["resources"] == floor, step.key


def test_gpu_spec_gives_the_training_step_a_gpu(gpu_location: Location, helm_effective: Values) -> None:
    job = _job(helm_effective, gpu_location.step("bike_demand__model"))
    schemas.validate_k8s_object(job)
    assert hardening.workload_findings(job) == []
    pod, container = _pod(job), _container(job)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == ray_clusters.GPU_SELECTOR
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    # Only the training step: the others keep their CPU shape and stay off GPU nodes.
    other = _job(helm_effective, gpu_location.step("bike_demand__features"))
    assert "nvidia.com/gpu" not in _container(other)["resources"]["limits"]
    assert "nodeSelector" not in _pod(other)


def test_a_spec_asking_more_cpu_than_the_floors_limit_still_gets_a_valid_step_job(
    runtime_env: None, tmp_path_factory: pytest.TempPathFactory, helm_effective: Values
) -> None:
    heavy = _variant(tmp_path_factory, cpu="4", memory="8Gi")
    schemas.validate_k8s_object(_job(helm_effective, heavy.step("bike_demand__model")))


def test_job_level_k8s_tags_do_not_reach_step_pods(location: Location, helm_effective: Values) -> None:
    # k8s_job_executor builds step pods with include_run_tags=False: per-step shape comes from op tags only.
    run_tag = {"dagster-k8s/config": json.dumps({"pod_spec_config": {"node_selector": {"pool": "run-level"}}})}
    step = location.step("bike_demand__model")
    assert "nodeSelector" not in _pod(_job(helm_effective, step, run_tags=run_tag))
    run_job = run_pods.run_job_manifest(helm_effective, image=IMAGE, job_tags=run_tag)
    assert _pod(run_job)["nodeSelector"] == {"pool": "run-level"}
