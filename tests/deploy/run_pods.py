"""Build, offline, the Kubernetes Jobs dagster-k8s creates from our Helm values: one per run, one per step.

Mirrors what happens in the cluster, with dagster-k8s's own classes doing the merging:
1. the chart renders `runLauncher.config.k8sRunLauncher` into the instance's K8sRunLauncher config
   (`launcher_config`, after the chart's `dagsterYaml.runLauncher.k8s` template); a real `K8sRunLauncher`
   is built from it (`k8s_run_launcher`), against a throw-away kubeconfig so nothing needs a cluster;
2. the user-code deployment passes its container context (the chart's `dagsterUserDeployments.
   k8sContainerContext` helper: env, envConfigMaps, envSecrets, volumes, resources, ...) to every run it
   launches when `includeConfigInLaunchedRuns` is on: it travels on the run's code origin (`dagster_run`);
3. run Job (`run_job_manifest`): `K8sRunLauncher.get_container_context_for_run` = launcher < code location
   < the job's `dagster-k8s/config` tag, then `construct_dagster_k8s_job`, as `_launch_k8s_job_with_args`;
4. step Job (`step_job_manifest`): `K8sStepHandler._get_container_context` itself = launcher < code
   location (job-level tags excluded) < the executor's config < the step's `dagster-k8s/config` tag, then
   `construct_dagster_k8s_job`, as `K8sStepHandler.launch_step` does.

The builders return camelCase V1Job dicts; validate them with `schemas.validate_k8s_object` and
`hardening.workload_findings`.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster_k8s import K8sRunLauncher

RELEASE = "dagster"
NAMESPACE = "dagster"
LOCATION = "ml-asset-platform"
RUN_ID = "0123456789abcdef0123456789abcdef"
ASSET_JOB = "__ASSET_JOB"

# A kubeconfig that points nowhere: dagster-k8s loads a config when a launcher or step handler is built,
# and never connects unless asked to create something.
_OFFLINE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://kubernetes.invalid:6443"}}]
users: [{name: offline, user: {}}]
contexts: [{name: offline, context: {cluster: offline, user: offline, namespace: dagster}}]
current-context: offline
"""


@contextlib.contextmanager
def offline_kubeconfig() -> Iterator[str]:
    """A kubeconfig path for dagster-k8s constructors; the kubernetes client's process-wide default
    configuration is restored afterwards, so nothing else in the test session sees it."""
    import kubernetes

    saved = kubernetes.client.Configuration.get_default_copy()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "kubeconfig"
        path.write_text(_OFFLINE_KUBECONFIG, encoding="utf-8")
        try:
            yield str(path)
        finally:
            kubernetes.client.Configuration.set_default(saved)


def _service_account(values: Mapping[str, Any]) -> str:
    """The chart's `dagster.serviceAccountName`: global.serviceAccountName, else serviceAccount.name."""
    return (values.get("global") or {}).get("serviceAccountName") or values["serviceAccount"]["name"]


def _names(items: Any) -> list[str]:
    return [item["name"] for item in items or [] if "name" in item]


def launcher_config(values: Mapping[str, Any], *, release: str = RELEASE) -> dict[str, Any]:
    """The K8sRunLauncher `config:` block the chart renders into the instance ConfigMap (snake_case)."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    global_values = values.get("global") or {}
    config: dict[str, Any] = {
        "load_incluster_config": launcher.get("loadInclusterConfig", True),
        "job_namespace": launcher.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": launcher.get("imagePullPolicy"),
        "service_account_name": _service_account(values),
        "dagster_home": global_values.get("dagsterHome", "/opt/dagster/dagster_home"),
        "instance_config_map": f"{release}-instance",
        "postgres_password_secret": global_values.get("postgresqlSecretName", "dagster-postgresql-secret"),
    }
    optional = {
        "env_config_maps": _names(launcher.get("envConfigMaps")),
        "env_secrets": _names(launcher.get("envSecrets")),
        "env_vars": launcher.get("envVars"),
        "volume_mounts": launcher.get("volumeMounts"),
        "volumes": launcher.get("volumes"),
        "labels": launcher.get("labels"),
        "resources": launcher.get("resources"),
        "scheduler_name": launcher.get("schedulerName"),
        "security_context": launcher.get("securityContext"),
        "run_k8s_config": _snake_run_k8s_config(launcher.get("runK8sConfig")),
    }
    config.update({key: value for key, value in optional.items() if value})
    if launcher.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    return config


def _snake_run_k8s_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The chart renders the top-level runK8sConfig keys in snake_case and the contents verbatim."""
    renames = {
        "containerConfig": "container_config",
        "podSpecConfig": "pod_spec_config",
        "podTemplateSpecMetadata": "pod_template_spec_metadata",
        "jobSpecConfig": "job_spec_config",
        "jobMetadata": "job_metadata",
    }
    return {renames[key]: value for key, value in (config or {}).items() if key in renames and value}


def k8s_run_launcher(values: Mapping[str, Any]) -> K8sRunLauncher:
    """A real K8sRunLauncher configured exactly as the chart configures it (minus in-cluster loading)."""
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher

    config = launcher_config(values)
    result = process_config(K8sRunLauncher.config_type(), config)
    if not result.success:
        raise ValueError(f"the chart would render an invalid K8sRunLauncher config: {result.errors}")
    processed = {
        key: value
        for key, value in cast(dict[str, Any], result.value).items()
        if key not in {"load_incluster_config", "kubeconfig_file"}
    }
    with offline_kubeconfig() as kubeconfig:
        return K8sRunLauncher(load_incluster_config=False, kubeconfig_file=kubeconfig, **processed)


def code_location_container_context(
    deployment: Mapping[str, Any], values: Mapping[str, Any] | None = None, *, release: str = RELEASE
) -> dict[str, Any]:
    """What the chart's `dagsterUserDeployments.k8sContainerContext` helper renders for one deployment."""
    k8s: dict[str, Any] = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [f"{release}-{deployment['name']}-user-env", *_names(deployment.get("envConfigMaps"))],
        "namespace": NAMESPACE,
    }
    if values is not None:
        k8s["service_account_name"] = _service_account(values)
    secrets = _names(deployment.get("envSecrets"))
    if secrets:
        k8s["env_secrets"] = secrets
    for source, target in (
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("schedulerName", "scheduler_name"),
    ):
        if deployment.get(source):
            k8s[target] = deployment[source]
    if isinstance(deployment.get("env"), list) and deployment["env"]:
        k8s["env"] = deployment["env"]
    return {"k8s": k8s}


def dagster_run(
    values: Mapping[str, Any],
    *,
    image: str,
    tags: Mapping[str, str] | None = None,
    deployment_index: int = 0,
    job_name: str = ASSET_JOB,
) -> DagsterRun:
    """A run of `deployments[deployment_index]` as the code server submits it: its code origin carries
    the image and (with includeConfigInLaunchedRuns) the deployment's container context."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.storage.dagster_run import DagsterRun

    deployment = values["dagster-user-deployments"]["deployments"][deployment_index]
    include = (deployment.get("includeConfigInLaunchedRuns") or {"enabled": True}).get("enabled", True)
    args = deployment["dagsterApiGrpcArgs"]
    pointer = ModuleCodePointer(args[args.index("-m") + 1], args[args.index("-a") + 1], None)
    repository = RepositoryPythonOrigin(
        executable_path="/app/.venv/bin/python",
        code_pointer=pointer,
        container_image=image,
        container_context=code_location_container_context(deployment, values) if include else None,
    )
    return DagsterRun(
        job_name=job_name,
        run_id=RUN_ID,
        tags=dict(tags or {}),
        job_code_origin=JobPythonOrigin(job_name, repository),
    )


def _serialize(job: Any, namespace: str | None) -> dict[str, Any]:
    import kubernetes

    manifest = cast(dict[str, Any], kubernetes.client.ApiClient().sanitize_for_serialization(job))
    manifest.setdefault("metadata", {})["namespace"] = namespace or NAMESPACE
    return manifest


def run_job_manifest(
    values: Mapping[str, Any],
    *,
    image: str,
    job_tags: Mapping[str, str] | None = None,
    deployment_index: int = 0,
    job_name: str = "dagster-run-0123456789abcdef",
) -> dict[str, Any]:
    """The run worker Job for a run of `deployments[deployment_index]`, as a camelCase dict."""
    from dagster_k8s import construct_dagster_k8s_job

    launcher = k8s_run_launcher(values)
    run = dagster_run(values, image=image, tags=job_tags, deployment_index=deployment_index)
    context = launcher.get_container_context_for_run(run)
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=image, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name=job_name,
        pod_name=job_name,
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/run-id": run.run_id},
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": run.job_name}],
    )
    return _serialize(job, context.namespace)


class _StepHandlerContext:
    """The part of dagster's StepHandlerContext that `K8sStepHandler._get_container_context` reads."""

    def __init__(self, launcher: K8sRunLauncher, run: DagsterRun, step_key: str, op_name: str, tags: Any) -> None:
        from types import SimpleNamespace

        from dagster._grpc.types import ExecuteStepArgs

        assert run.job_code_origin is not None
        self.dagster_run = run
        self.instance = SimpleNamespace(run_launcher=launcher)
        self.execute_step_args = ExecuteStepArgs(run.job_code_origin, run.run_id, [step_key])
        self.step_tags = {step_key: dict(tags)}
        self._step = SimpleNamespace(step=SimpleNamespace(op_name=op_name))

    def get_step_context(self, step_key: str) -> Any:
        assert step_key in self.step_tags
        return self._step


def step_job_manifest(
    values: Mapping[str, Any],
    *,
    image: str,
    step_key: str,
    step_tags: Mapping[str, str] | None = None,
    op_name: str | None = None,
    executor_config: Mapping[str, Any] | None = None,
    run_tags: Mapping[str, str] | None = None,
    deployment_index: int = 0,
) -> dict[str, Any]:
    """The Job `k8s_job_executor` launches for one step of a run, as a camelCase dict.

    `step_tags` are the step's tags as the executor sees them (the op's tags: `dagster-k8s/config` from
    Pipeline.op_tags); `executor_config` is the executor's run config (we pass none in production);
    `run_tags` are the run's own tags (dagster-k8s leaves their `dagster-k8s/config` out of step pods).
    """
    from dagster_k8s import construct_dagster_k8s_job
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.executor import K8sStepHandler
    from dagster_k8s.job import UserDefinedDagsterK8sConfig, get_k8s_job_name

    executor = dict(executor_config or {})
    launcher = k8s_run_launcher(values)
    run = dagster_run(values, image=image, tags=run_tags, deployment_index=deployment_index)
    assert run.job_code_origin is not None
    with offline_kubeconfig() as kubeconfig:
        handler = K8sStepHandler(
            image=executor.get("job_image"),
            container_context=K8sContainerContext(
                run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor.get("step_k8s_config", {}))
            ),
            load_incluster_config=False,
            kubeconfig_file=kubeconfig,
            per_step_k8s_config=executor.get("per_step_k8s_config", {}),
        )
    step_context = _StepHandlerContext(launcher, run, step_key, op_name or step_key, step_tags or {})
    context = handler._get_container_context(cast(Any, step_context))  # pyright: ignore[reportPrivateUsage]

    job_config = context.get_k8s_job_config(executor.get("job_image"), launcher)
    if not job_config.job_image:
        job_config = job_config.with_image(run.job_code_origin.repository_origin.container_image)
    step_args = step_context.execute_step_args
    job_name = f"dagster-step-{get_k8s_job_name(run.run_id, step_key)}"
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=step_args.get_command_args(skip_serialized_namedtuple=True),
        job_name=job_name,
        pod_name=job_name,
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={
            "dagster/job": run.job_name,
            "dagster/op": step_key,
            "dagster/run-id": run.run_id,
            "dagster/code-location": LOCATION,
        },
        env_vars=[
            *step_args.get_command_env(),
            {"name": "DAGSTER_RUN_JOB_NAME", "value": run.job_name},
            {"name": "DAGSTER_RUN_STEP_KEY", "value": step_key},
        ],
    )
    return _serialize(job, context.namespace)
