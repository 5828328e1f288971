"""What deploy/ ships: the Helm values files and every Kubernetes object in its YAML files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import schemas

HELM_DIR = schemas.DEPLOY_DIR / "helm"
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
