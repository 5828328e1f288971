"""Security/operability policy for everything we ship to Kubernetes, as reusable finding functions.

Each function returns a list of human-readable findings (empty = compliant), so a test can assert on the
whole list and print every problem at once. The policy, per container (init containers included):

- runs as non-root: `runAsNonRoot: true` at pod or container level, and no `runAsUser: 0`;
- `allowPrivilegeEscalation: false`, not privileged, all capabilities dropped;
- a seccomp profile (`RuntimeDefault` or `Localhost`) at pod or container level;
- `readOnlyRootFilesystem: true`, except where READ_ONLY_ROOT_FS_EXCEPTIONS documents why not;
- CPU and memory requests and limits;
- an image pinned by tag or digest, never `latest`;
- no secret-looking environment variable with a literal value.

Manifests: no `kind: Secret` carrying data (Secrets are created by deploy/k8s/create-secrets.sh), no
ConfigMap key that looks like a credential, no URI with embedded credentials.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Mapping
from typing import Any, cast

# Containers allowed a writable root filesystem: pattern on "<workload>:<container>" -> why.
READ_ONLY_ROOT_FS_EXCEPTIONS: dict[str, str] = {
    "helm:dagsterWebserver*": (
        "the webserver (our image, for the cross-site guard) writes under $DAGSTER_HOME (.nux, .telemetry, "
        "storage/), which the chart only provides as a ConfigMap subPath mount (its init containers share the "
        "securityContext)"
    ),
    "helm:dagsterDaemon*": "official dagster-celery-k8s image: the same $DAGSTER_HOME writes (and its init container)",
    "RayCluster/*:ray-*": (
        "Ray writes session state, runtime_env caches, spill files and the dashboard's state under /tmp and $HOME"
    ),
    "RayCluster/*:autoscaler": "KubeRay's autoscaler sidecar is a Ray process too (same image, same writes)",
    "RayJob/*:ray-*": "the RayCluster inside a RayJob: Ray writes under /tmp and $HOME as above",
}

SECCOMP_PROFILES = frozenset({"RuntimeDefault", "Localhost"})
SECRET_LIKE_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY|API_KEY)", re.I)
URI_WITH_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I)


def parse_image(image: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of an image reference; a ':' before the last '/' is a registry port."""
    name, _, digest = image.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag or None, digest or None


def image_findings(image: Any, where: str) -> list[str]:
    if not isinstance(image, str) or not image:
        return [f"{where}: no image"]
    _, tag, digest = parse_image(image)
    if digest is None and tag is None:
        return [f"{where}: image {image!r} has no tag or digest"]
    if tag == "latest":
        return [f"{where}: image {image!r} uses the 'latest' tag"]
    return []


def resources_findings(resources: Any, where: str) -> list[str]:
    findings = []
    resources = resources if isinstance(resources, Mapping) else {}
    for section in ("requests", "limits"):
        block = resources.get(section)
        block = block if isinstance(block, Mapping) else {}
        for resource in ("cpu", "memory"):
            if block.get(resource) in (None, ""):
                findings.append(f"{where}: resources.{section}.{resource} not set")
    return findings


def security_findings(
    pod_security: Mapping[str, Any] | None, container_security: Mapping[str, Any] | None, where: str
) -> list[str]:
    pod = pod_security or {}
    container = container_security or {}
    findings = []

    def effective(key: str) -> Any:
        return container[key] if key in container else pod.get(key)

    if effective("runAsNonRoot") is not True:
        findings.append(f"{where}: runAsNonRoot is not true (pod or container securityContext)")
    if effective("runAsUser") == 0:
        findings.append(f"{where}: runAsUser is 0")
    if container.get("allowPrivilegeEscalation") is not False:
        findings.append(f"{where}: allowPrivilegeEscalation is not false")
    if container.get("privileged") is True:
        findings.append(f"{where}: privileged")
    seccomp = effective("seccompProfile") or {}
    if not isinstance(seccomp, Mapping) or seccomp.get("type") not in SECCOMP_PROFILES:
        findings.append(f"{where}: no RuntimeDefault/Localhost seccompProfile (pod or container securityContext)")
    drop = ((container.get("capabilities") or {}).get("drop")) or []
    if "ALL" not in drop:
        findings.append(f"{where}: capabilities.drop does not include ALL")
    if container.get("readOnlyRootFilesystem") is not True and not read_only_exception(where):
        findings.append(f"{where}: readOnlyRootFilesystem is not true and no documented exception applies")
    return findings


def read_only_exception(where: str) -> str | None:
    for pattern, reason in READ_ONLY_ROOT_FS_EXCEPTIONS.items():
        if fnmatch.fnmatchcase(where, pattern):
            return reason
    return None


def env_findings(env: Any, where: str) -> list[str]:
    findings = []
    for item in env if isinstance(env, list) else []:
        if not isinstance(item, Mapping):
            continue
        name, value = item.get("name", ""), item.get("value")
        if value not in (None, "") and SECRET_LIKE_NAME.search(str(name)):
            findings.append(f"{where}: env {name} has a literal value; use valueFrom.secretKeyRef")
        if isinstance(value, str) and URI_WITH_CREDENTIALS.search(value):
            findings.append(f"{where}: env {name} holds a URI with credentials")
    return findings


def container_findings(container: Mapping[str, Any], pod_security: Mapping[str, Any] | None, where: str) -> list[str]:
    return [
        *image_findings(container.get("image"), where),
        *resources_findings(container.get("resources"), where),
        *security_findings(pod_security, container.get("securityContext"), where),
        *env_findings(container.get("env"), where),
    ]


def iter_pod_specs(obj: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(workload label, pod spec) for every pod template in a manifest, KubeRay kinds included."""
    kind = obj.get("kind")
    name = (obj.get("metadata") or {}).get("name", "<unnamed>")
    label = f"{kind}/{name}"
    spec = cast(Mapping[str, Any], obj.get("spec") or {})
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        yield label, spec.get("template", {}).get("spec", {})
    elif kind == "CronJob":
        yield label, spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    elif kind == "Pod":
        yield label, spec
    elif kind == "RayCluster":
        yield from _raycluster_pod_specs(label, spec)
    elif kind == "RayJob":
        yield from _raycluster_pod_specs(label, spec.get("rayClusterSpec") or {})
        submitter = spec.get("submitterPodTemplate")
        if submitter:
            yield f"{label}/submitter", submitter.get("spec", {})


def _raycluster_pod_specs(label: str, spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    head = spec.get("headGroupSpec") or {}
    yield label, head.get("template", {}).get("spec", {})
    for group in spec.get("workerGroupSpecs") or []:
        yield label, group.get("template", {}).get("spec", {})


def workload_findings(obj: Mapping[str, Any]) -> list[str]:
    """Findings for every container of every pod template in one manifest."""
    findings = []
    for label, pod in iter_pod_specs(obj):
        pod_security = pod.get("securityContext")
        for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
            findings += container_findings(container, pod_security, f"{label}:{container.get('name')}")
    if obj.get("kind") == "RayCluster":
        autoscaler = (obj.get("spec") or {}).get("autoscalerOptions") or {}
        if (obj.get("spec") or {}).get("enableInTreeAutoscaling"):
            where = f"RayCluster/{(obj.get('metadata') or {}).get('name')}:autoscaler"
            findings += resources_findings(autoscaler.get("resources"), where)
            head_pod = ((obj["spec"].get("headGroupSpec") or {}).get("template") or {}).get("spec") or {}
            findings += security_findings(head_pod.get("securityContext"), autoscaler.get("securityContext"), where)
    return findings


def manifest_findings(obj: Mapping[str, Any]) -> list[str]:
    """Findings about data at rest in a manifest: Secrets with data, credential-like ConfigMap entries."""
    kind = obj.get("kind")
    where = f"{kind}/{(obj.get('metadata') or {}).get('name', '<unnamed>')}"
    findings = []
    if kind == "Secret" and (obj.get("data") or obj.get("stringData")):
        findings.append(f"{where}: a Secret with data is committed; create it with deploy/k8s/create-secrets.sh")
    if kind == "ConfigMap":
        for key, value in (obj.get("data") or {}).items():
            if SECRET_LIKE_NAME.search(key):
                findings.append(f"{where}: key {key} looks like a credential; put it in a Secret")
            if isinstance(value, str) and URI_WITH_CREDENTIALS.search(value):
                findings.append(f"{where}: key {key} holds a URI with credentials")
    return findings


# --------------------------------------------------------------------------------------------------
# Helm values: the chart turns these keys into containers; check them with the same policy.
# --------------------------------------------------------------------------------------------------


def _helm_image(image: Mapping[str, Any] | None) -> str | None:
    if not image:
        return None
    repository = image.get("repository")
    if image.get("registry"):
        repository = f"{image['registry']}/{repository}"
    if image.get("digest"):
        return f"{repository}@{image['digest']}"
    tag = image.get("tag")
    return f"{repository}:{tag}" if tag not in (None, "") else str(repository)


def helm_container_views(
    values: Mapping[str, Any],
) -> Iterator[tuple[str, dict[str, Any], Mapping[str, Any]]]:
    """(where, container-like dict, pod securityContext) for every container the chart renders from
    these (merged) values: webserver(s), daemon, their init containers, user deployments, run pods."""
    postgres_image = _helm_image(cast(Mapping[str, Any], values.get("postgresql", {}).get("image")))
    busybox_image = _helm_image(cast(Mapping[str, Any], values.get("busybox", {}).get("image")))
    for component in ("dagsterWebserver", "dagsterDaemon"):
        block = cast(Mapping[str, Any], values.get(component) or {})
        if component == "dagsterDaemon" and not block.get("enabled", True):
            continue
        pod = cast(Mapping[str, Any], block.get("podSecurityContext") or {})
        security = block.get("securityContext") or {}
        yield (
            f"helm:{component}",
            {
                "image": _helm_image(block.get("image")),
                "resources": block.get("resources"),
                "securityContext": security,
                "env": block.get("env"),
            },
            pod,
        )
        if block.get("checkDbReadyInitContainer", True):
            yield (
                f"helm:{component}/init:check-db-ready",
                {
                    "image": postgres_image,
                    "resources": block.get("initContainerResources"),
                    "securityContext": security,
                },
                pod,
            )
    user_deployments = cast(Mapping[str, Any], values.get("dagster-user-deployments") or {})
    webserver = cast(Mapping[str, Any], values.get("dagsterWebserver") or {})
    for deployment in user_deployments.get("deployments") or [] if user_deployments.get("enabled") else []:
        yield (
            f"helm:dagster-user-deployments/{deployment.get('name')}",
            {
                "image": _helm_image(deployment.get("image")),
                "resources": deployment.get("resources"),
                "securityContext": deployment.get("securityContext"),
                "env": deployment.get("env"),
            },
            cast(Mapping[str, Any], deployment.get("podSecurityContext") or {}),
        )
        yield (
            f"helm:dagsterWebserver/init:init-user-deployment-{deployment.get('name')}",
            {
                "image": busybox_image,
                "resources": webserver.get("initContainerResources"),
                "securityContext": webserver.get("securityContext"),
            },
            cast(Mapping[str, Any], webserver.get("podSecurityContext") or {}),
        )


def helm_findings(values: Mapping[str, Any]) -> list[str]:
    findings = []
    for where, container, pod in helm_container_views(values):
        findings += container_findings(container, pod, where)
    postgresql = cast(Mapping[str, Any], values.get("postgresql") or {})
    if postgresql.get("postgresqlPassword"):
        findings.append("helm:postgresql.postgresqlPassword holds a literal password")
    if values.get("generatePostgresqlPasswordSecret", True):
        findings.append("helm:generatePostgresqlPasswordSecret is on (the password would come from values)")
    return findings
