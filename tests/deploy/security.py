"""The security posture of deploy/ as finding functions (empty list = compliant), beside the network policies'
(network.py): nothing reaches the writable UI past the sign-in proxy, the UI takes the requester from the proxy, every
Ingress serves TLS, PostgreSQL is never reached without TLS, each pod uses its own object-store identity whose bucket
policy grants exactly what it needs, and the MinIO root keys never leave namespace platform-data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from . import hardening
from .network import Pod, selector_matches

Doc = Mapping[str, Any]

SAFE_SSLMODES = frozenset({"require", "verify-ca", "verify-full"})
IDENTITY_HEADER_VARIABLE = "PLATFORM_UI_IDENTITY_HEADER"
# The user header oauth2-proxy sets with OAUTH2_PROXY_PASS_USER_HEADERS (and strips from clients).
PROXY_USER_HEADERS = frozenset({"x-forwarded-email", "x-forwarded-user"})
ROOT_SECRET = "minio-root"
ROOT_HOLDERS = frozenset({"Deployment/minio", "Job/minio-create-bucket"})  # both in platform-data
BUCKET = "ml-platform"
# Secret (namespace, name) -> the object-store identity whose keys it holds (deploy/k8s/create-secrets.sh).
IDENTITY_SECRETS: dict[tuple[str, str], str] = {
    ("dagster", "platform-object-store-runs"): "platform-runs",
    ("dagster", "platform-object-store-sensors"): "platform-sensors",
    ("mlflow", "mlflow-object-store"): "mlflow-artifacts",
}


# ---------------------------------------------------------------------------------------------------
# TLS to PostgreSQL
# ---------------------------------------------------------------------------------------------------


def sslmode_findings(values: Doc, instance_config: Doc, create_secrets: str) -> list[str]:
    """PostgreSQL connections that could go without TLS: the chart values, deploy/dagster.yaml, the install script."""
    found = []
    chart = ((values.get("postgresql") or {}).get("postgresqlParams") or {}).get("sslmode")
    if chart not in SAFE_SSLMODES:
        found.append(f"helm values postgresql.postgresqlParams.sslmode: {chart!r} lets passwords cross in clear")
    params = (((instance_config.get("storage") or {}).get("postgres") or {}).get("postgres_db") or {}).get("params")
    instance = (params or {}).get("sslmode")
    if instance not in SAFE_SSLMODES:
        found.append(f"deploy/dagster.yaml storage.postgres.postgres_db.params.sslmode: {instance!r} is not TLS")
    default = re.search(r'PG_SSLMODE="\$\{PG_SSLMODE:-([^}]*)\}"', create_secrets)
    if default is None or default.group(1) not in SAFE_SSLMODES:
        found.append(f"create-secrets.sh PG_SSLMODE default: {default.group(1) if default else None!r} is not TLS")
    return found


# ---------------------------------------------------------------------------------------------------
# The sign-in proxy and the ingresses
# ---------------------------------------------------------------------------------------------------


def identity_header_findings(values: Doc, proxy_config: Doc) -> list[str]:
    """The writable webserver takes the requester from the header the sign-in proxy sets, and the proxy sets it."""
    env = {item["name"]: item.get("value") for item in values["dagsterWebserver"].get("env") or []}
    header = (env.get(IDENTITY_HEADER_VARIABLE) or "").lower()
    found = []
    if header not in PROXY_USER_HEADERS:
        found.append(
            f"dagsterWebserver.env {IDENTITY_HEADER_VARIABLE}: {env.get(IDENTITY_HEADER_VARIABLE)!r} is not a header "
            f"oauth2-proxy sets ({', '.join(sorted(PROXY_USER_HEADERS))}): requested_by would be free text"
        )
    if str(proxy_config.get("OAUTH2_PROXY_PASS_USER_HEADERS", "")).lower() != "true":
        found.append("ConfigMap dagster/oauth2-proxy: OAUTH2_PROXY_PASS_USER_HEADERS is not true: no user header")
    return found


def ingress_findings(ingresses: Iterable[Doc], services: Iterable[Doc], writable: Pod) -> list[str]:
    """Every Ingress host is TLS, and no Ingress routes to a Service selecting the writable webserver."""
    by_name = {(svc["metadata"]["namespace"], svc["metadata"]["name"]): svc for svc in services}
    found = []
    for ingress in ingresses:
        namespace, name = ingress["metadata"]["namespace"], ingress["metadata"]["name"]
        spec = ingress["spec"]
        secured = {host for tls in spec.get("tls") or [] if tls.get("secretName") for host in tls.get("hosts") or []}
        rules = spec.get("rules") or []
        for rule in rules:
            if rule.get("host") not in secured:
                found.append(f"Ingress {namespace}/{name}: host {rule.get('host')!r} is served without TLS")
        backends = [path["backend"] for rule in rules for path in (rule.get("http") or {}).get("paths") or []]
        backends += [spec["defaultBackend"]] if spec.get("defaultBackend") else []
        for backend in backends:
            service_name = (backend.get("service") or {}).get("name")
            service = by_name.get((namespace, service_name))
            selector = (service or {}).get("spec", {}).get("selector")
            if (
                namespace == writable.namespace
                and selector
                and selector_matches({"matchLabels": selector}, writable.labels)
            ):
                found.append(
                    f"Ingress {namespace}/{name} routes to the writable webserver (Service {service_name}) past the "
                    "sign-in proxy: route it to Service oauth2-proxy"
                )
    return found


# ---------------------------------------------------------------------------------------------------
# Object-store identities
# ---------------------------------------------------------------------------------------------------


def key_source(container: Doc, namespace: str, secret_keys: Mapping[tuple[str, str], set[str]]) -> tuple[str, str]:
    """(namespace, Secret) the container's AWS_ACCESS_KEY_ID comes from, as Kubernetes resolves it: the last explicit
    `env` entry wins over every `envFrom`, and among `envFrom` sources the last that has the key."""
    for item in reversed(container.get("env") or []):
        if item["name"] == "AWS_ACCESS_KEY_ID":
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            return (namespace, ref["name"]) if ref else (namespace, "<literal value>")
    for source in reversed(container.get("envFrom") or []):
        ref = source.get("secretRef")
        if ref and "AWS_ACCESS_KEY_ID" in secret_keys.get((namespace, ref["name"]), set()):
            return (namespace, ref["name"])
    return (namespace, "<none>")


def identity_findings(
    containers: Mapping[str, tuple[str, Doc]],
    expected: Mapping[str, str],
    secret_keys: Mapping[tuple[str, str], set[str]],
) -> list[str]:
    """Each component's object-store keys are those of its identity (`expected`: component -> identity)."""
    found = []
    for component, identity in expected.items():
        namespace, container = containers[component]
        source = key_source(container, namespace, secret_keys)
        actual = IDENTITY_SECRETS.get(source)
        if actual != identity:
            found.append(
                f"{component}: object-store keys from Secret {source[0]}/{source[1]} "
                f"(identity {actual or 'unknown'}), expected identity {identity}"
            )
    return found


def root_key_findings(pod_specs: Iterable[tuple[str, str, Doc]], create_secrets: str) -> list[str]:
    """Only MinIO and its setup Job reference Secret minio-root, and the install script copies the root keys into no
    other Secret. `pod_specs`: (workload, namespace, pod spec)."""
    found = []
    for where, namespace, spec in pod_specs:
        if ROOT_SECRET in referenced_secrets(spec) and not (namespace == "platform-data" and where in ROOT_HOLDERS):
            found.append(f"{where} ({namespace}) holds the MinIO root keys (Secret {ROOT_SECRET})")
    text = create_secrets.replace("\\\n", " ")
    for line in text.splitlines():
        match = re.match(r"\s*create (\S+) (\S+)(.*)$", line)
        if match and (match.group(1), match.group(2)) != ("platform-data", ROOT_SECRET) and "$MINIO_ROOT_" in line:
            found.append(f"create-secrets.sh puts the MinIO root keys in Secret {match.group(1)}/{match.group(2)}")
    for chunk in re.findall(r"object_store_args\+?=\((.*?)\)", text, flags=re.S):
        if "$MINIO_ROOT_" in chunk:
            found.append("create-secrets.sh puts the MinIO root keys in Secret mlflow/mlflow-object-store")
    return found


def referenced_secrets(spec: Doc) -> set[str]:
    """Names of the Secrets a pod spec reads: env, envFrom and volumes, init containers included."""
    names = set()
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        for item in container.get("env") or []:
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        for source in container.get("envFrom") or []:
            if source.get("secretRef"):
                names.add(source["secretRef"]["name"])
    for volume in spec.get("volumes") or []:
        if volume.get("secret"):
            names.add(volume["secret"]["secretName"])
    return names


def manifest_pod_specs(manifests: Iterable[tuple[str, Doc]]) -> list[tuple[str, str, Doc]]:
    """(workload, namespace, pod spec) of every pod template in the manifests."""
    return [
        (where, doc["metadata"].get("namespace", "default"), spec)
        for _, doc in manifests
        for where, spec in hardening.iter_pod_specs(doc)
    ]


Grant = tuple[str, str]  # (action, resource)


def policy_grants(name: str, text: str) -> tuple[set[Grant], list[str]]:
    """The (action, resource) pairs an IAM-style bucket policy allows, and why it is not a plain one: not JSON, not
    version 2012-10-17, a Deny, wildcard actions, resources outside the bucket, conditions, principals."""
    problems = []
    try:
        document = json.loads(text)
    except ValueError as error:
        return set(), [f"policy {name}: not JSON ({error})"]
    if document.get("Version") != "2012-10-17":
        problems.append(f"policy {name}: Version {document.get('Version')!r}, expected '2012-10-17'")
    grants: set[Grant] = set()
    for index, statement in enumerate(document.get("Statement") or []):
        where = f"policy {name} Statement[{index}]"
        extra = set(statement) - {"Effect", "Action", "Resource", "Sid"}
        if extra:
            problems.append(f"{where}: {', '.join(sorted(extra))} not allowed (plain Allow statements only)")
        if statement.get("Effect") != "Allow":
            problems.append(f"{where}: Effect {statement.get('Effect')!r}")
        actions, resources = statement.get("Action") or [], statement.get("Resource") or []
        for action in actions:
            if not re.fullmatch(r"s3:[A-Za-z]+", action):
                problems.append(f"{where}: action {action!r} is not one named S3 action")
        for resource in resources:
            if not re.fullmatch(rf"arn:aws:s3:::{BUCKET}(/[a-z0-9-]+/\*)?", resource):
                problems.append(f"{where}: resource {resource!r} is not the bucket or one prefix of it")
        grants |= {(action, resource) for action in actions for resource in resources}
    if not grants:
        problems.append(f"policy {name}: grants nothing")
    return grants, problems
