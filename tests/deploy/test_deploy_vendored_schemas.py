"""The vendored schemas are the upstream files, and the chart schema's remote $refs resolve offline to real
Kubernetes definitions (not a permissive stub)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from referencing import Registry

from . import schemas

PROVENANCE_ROW = re.compile(
    r"^\| `(?P<file>[^`]+)` \| `[^`]+` \| `[0-9a-f]{40}` \| (?P<size>\d+) \| `(?P<sha>[0-9a-f]{64})` \|$"
)


def _provenance() -> list[tuple[str, int, str]]:
    text = (schemas.HELM_SCHEMA_DIR / "README.md").read_text(encoding="utf-8")
    rows = [PROVENANCE_ROW.match(line) for line in text.splitlines()]
    return [(m["file"], int(m["size"]), m["sha"]) for m in rows if m]


def test_provenance_table_lists_every_vendored_chart_file() -> None:
    listed = {name for name, _, _ in _provenance()}
    on_disk = {
        str(path.relative_to(schemas.HELM_SCHEMA_DIR))
        for path in schemas.HELM_SCHEMA_DIR.rglob("*")
        if path.is_file() and path.name != "README.md"
    }
    assert listed == on_disk


@pytest.mark.parametrize(("name", "size", "sha256"), _provenance(), ids=lambda value: str(value)[:40])
def test_vendored_chart_file_matches_upstream_checksum(name: str, size: int, sha256: str) -> None:
    data = (schemas.HELM_SCHEMA_DIR / name).read_bytes()
    assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha256)


def test_kuberay_crds_are_the_served_ray_io_v1_kinds() -> None:
    for kind in ("RayCluster", "RayJob"):
        assert "ray.io/v1" in schemas.crd_versions(kind)
        assert schemas.crd_storage_version(kind) == "ray.io/v1"
    assert "KubeRay operator" in (schemas.KUBERAY_SCHEMA_DIR / "SOURCE.md").read_text(encoding="utf-8")


def test_chart_schemas_reference_only_the_yannh_definitions_document() -> None:
    refs = schemas.helm_k8s_refs(schemas.helm_schema()) | schemas.helm_k8s_refs(schemas.helm_subchart_schema())
    assert len(refs) == 17
    assert {ref.split("#", 1)[0] for ref in refs} == {schemas.HELM_K8S_DEFINITIONS_URL}


@pytest.mark.parametrize("strict", [True, False])
def test_every_remote_ref_resolves_to_a_real_kubernetes_definition(strict: bool) -> None:
    registry: Registry[Any] = schemas._helm_registry(schemas.DEFAULT_K8S_VERSION, strict)  # pyright: ignore[reportPrivateUsage]
    resolver = registry.resolver()
    for ref in sorted(schemas.helm_k8s_refs(schemas.helm_schema())):
        contents = resolver.lookup(ref).contents
        assert isinstance(contents, dict) and contents, ref
        # Real definitions carry structure (not `{}` / `true`).
        assert {"properties", "additionalProperties", "type", "items"} & set(contents), ref


def test_definitions_come_from_kubernetes_validate_for_the_requested_version() -> None:
    for version in ("1.28", "1.32", schemas.kubernetes_validate.latest_version()):
        definitions = schemas.k8s_definitions(version)["$defs"]
        assert "io.k8s.api.core.v1.Container" in definitions
        container = definitions["io.k8s.api.core.v1.Container"]
        assert container.get("additionalProperties") is False  # the strict flavour
