"""What deploy/ ships: the Helm values files and every Kubernetes object in its YAML files."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import schemas

HELM_DIR = schemas.DEPLOY_DIR / "helm"
CREATE_SECRETS = schemas.DEPLOY_DIR / "k8s" / "create-secrets.sh"
# Vendored upstream files are not ours to lint; everything else under deploy/ is.
EXCLUDED_DIRS = (schemas.SCHEMA_DIR,)

Manifest = tuple[str, dict[str, Any]]


def manifest_files() -> list[Path]:
    """Every YAML file under deploy/ except the vendored schemas."""
    files = sorted({*schemas.DEPLOY_DIR.rglob("*.yaml"), *schemas.DEPLOY_DIR.rglob("*.yml")})
    return [path for path in files if not any(path.is_relative_to(excluded) for excluded in EXCLUDED_DIRS)]


def manifests() -> list[Manifest]:
    """(id, document) for every Kubernetes object (a YAML document with apiVersion and kind) under deploy/."""
    found: list[Manifest] = []
    for path in manifest_files():
        for index, document in enumerate(schemas.load_yaml_documents(path)):
            if schemas.is_k8s_object(document):
                relative = path.relative_to(schemas.REPO_ROOT)
                name = (document.get("metadata") or {}).get("name", "<unnamed>")
                found.append((f"{relative}#{index}:{document['kind']}/{name}", document))
    return found


def by_kind(documents: list[Manifest], kind: str, name: str) -> dict[str, Any]:
    """The one shipped object of that kind and name."""
    matches = [doc for _, doc in documents if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected exactly one {kind}/{name} under deploy/, found {len(matches)}"
    return matches[0]


def helm_base() -> dict[str, Any]:
    return schemas.load_yaml_file(HELM_DIR / "values.yaml")


def helm_prod() -> dict[str, Any]:
    return schemas.load_yaml_file(HELM_DIR / "values-prod.yaml")


def helm_effective() -> dict[str, Any]:
    """What the chart renders from: chart defaults, then values.yaml, then values-prod.yaml."""
    return schemas.helm_merge(schemas.helm_chart_defaults(), helm_base(), helm_prod())


def created_secrets(script: str | None = None) -> dict[tuple[str, str], set[str]]:
    """(namespace, name) -> keys, from the `create NS NAME --from-literal=KEY=...` calls in the script (the shipped
    create-secrets.sh unless its text is given)."""
    text = (CREATE_SECRETS.read_text(encoding="utf-8") if script is None else script).replace("\\\n", " ")
    secrets: dict[tuple[str, str], set[str]] = defaultdict(set)
    for line in text.splitlines():
        match = re.match(r"\s*create (\S+) (\S+)(.*)$", line)
        if match:
            keys = re.findall(r"--from-(?:literal|file)=([A-Za-z0-9_.-]+)=", match.group(3))
            secrets[(match.group(1), match.group(2))].update(keys)
    # Keys passed through the object_store_args array.
    array = re.search(r"object_store_args=\((.*?)\)", text, flags=re.S)
    extra = re.findall(r"object_store_args\+=\((.*?)\)", text, flags=re.S)
    for chunk in ([array.group(1)] if array else []) + extra:
        secrets[("mlflow", "mlflow-object-store")].update(re.findall(r"--from-literal=([A-Za-z0-9_]+)=", chunk))
    return dict(secrets)
