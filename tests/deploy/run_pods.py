"""Build, offline, the Kubernetes Job that K8sRunLauncher would create for a run, from our Helm values.

Mirrors what happens in the cluster:
1. the chart renders `runLauncher.config.k8sRunLauncher` into the instance's K8sRunLauncher config;
2. the user-code deployment passes its container context (env, envConfigMaps, envSecrets, volumes,
   resources, ...: the chart's `dagsterUserDeployments.k8sContainerContext` helper) when
   `includeConfigInLaunchedRuns` is on;
3. dagster-k8s deep-merges launcher < code location < the job's `dagster-k8s/config` tag and calls
   `construct_dagster_k8s_job`.

`run_job_manifest(values, image=..., job_tags=...)` returns the camelCase V1Job dict; validate it with
`schemas.validate_k8s_object` and `hardening.workload_findings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

RELEASE = "dagster"
NAMESPACE = "dagster"


def _snake_run_k8s_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The chart renders the top-level runK8sConfig keys in snake_case and the contents verbatim."""
    renames = {
        "containerConfig": "container_config",
        "podSpecConfig": "pod_spec_config",
        "podTemplateSpecMetadata": "pod_template_spec_metadata",
        "jobSpecConfig": "job_spec_config",
        "jobMetadata": "job_metadata",
    }
    return {renames.get(key, key): value for key, value in (config or {}).items()}


def code_location_container_context(deployment: Mapping[str, Any], *, release: str = RELEASE) -> dict[str, Any]:
    """What the chart's `dagsterUserDeployments.k8sContainerContext` helper renders for one deployment."""
    k8s: dict[str, Any] = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [
            f"{release}-{deployment['name']}-user-env",
            *[item["name"] for item in deployment.get("envConfigMaps") or [] if "name" in item],
        ],
        "namespace": NAMESPACE,
    }
    secrets = [item["name"] for item in deployment.get("envSecrets") or [] if "name" in item]
    if secrets:
        k8s["env_secrets"] = secrets
    for source, target in (
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
    ):
        if deployment.get(source):
            k8s[target] = deployment[source]
    if isinstance(deployment.get("env"), list) and deployment["env"]:
        k8s["env"] = deployment["env"]
    return {"k8s": k8s}


def run_job_manifest(
    values: Mapping[str, Any],
    *,
    image: str,
    job_tags: Mapping[str, str] | None = None,
    deployment_index: int = 0,
    job_name: str = "dagster-run-0123456789abcdef",
) -> dict[str, Any]:
    """The run worker Job for a run of `deployments[deployment_index]`, as a camelCase dict."""
    import kubernetes
    from dagster_k8s import DagsterK8sJobConfig, construct_dagster_k8s_job
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import UserDefinedDagsterK8sConfig, get_user_defined_k8s_config

    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    global_values = values.get("global", {})
    service_account = global_values.get("serviceAccountName") or values["serviceAccount"]["name"]
    launcher_context = K8sContainerContext(
        image_pull_policy=launcher.get("imagePullPolicy"),
        service_account_name=service_account,
        env_config_maps=[
            f"{RELEASE}-pipeline-env",
            *[item["name"] for item in launcher.get("envConfigMaps") or [] if "name" in item],
        ],
        env_secrets=[item["name"] for item in launcher.get("envSecrets") or [] if "name" in item],
        env_vars=launcher.get("envVars") or [],
        volume_mounts=launcher.get("volumeMounts") or [],
        volumes=launcher.get("volumes") or [],
        labels=launcher.get("labels") or {},
        namespace=launcher.get("jobNamespace") or NAMESPACE,
        resources=launcher.get("resources") or {},
        security_context=launcher.get("securityContext") or {},
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(_snake_run_k8s_config(launcher.get("runK8sConfig"))),
    )
    context = K8sContainerContext().merge(launcher_context)

    user_context = K8sContainerContext()
    deployment = values["dagster-user-deployments"]["deployments"][deployment_index]
    if (deployment.get("includeConfigInLaunchedRuns") or {"enabled": True}).get("enabled", True):
        user_context = user_context.merge(
            K8sContainerContext.create_from_config(code_location_container_context(deployment))
        )
    if job_tags:
        user_context = user_context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(job_tags)))
    context = context.merge(user_context)

    job = construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(
            job_image=image,
            dagster_home=global_values.get("dagsterHome", "/opt/dagster/dagster_home"),
            instance_config_map=f"{RELEASE}-instance",
            postgres_password_secret=global_values.get("postgresqlSecretName", "dagster-postgresql-secret"),
        ),
        args=["dagster", "api", "execute_run", "{}"],
        job_name=job_name,
        pod_name=job_name,
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": "__ASSET_JOB", "dagster/run-id": "0123456789abcdef"},
    )
    manifest = cast(dict[str, Any], kubernetes.client.ApiClient().sanitize_for_serialization(job))
    manifest.setdefault("metadata", {})["namespace"] = context.namespace or NAMESPACE
    return manifest
