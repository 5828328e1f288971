"""Offline validators for everything under deploy/: Helm values, Kubernetes objects and KubeRay resources.

Every validator raises `SchemaValidationError` (listing every problem with its JSON path) on invalid
input and returns None otherwise. Only the vendored copies under deploy/schemas/ and the schemas bundled
in the `kubernetes-validate` package are read; nothing touches the network.

- `validate_helm_values(values)`: the official Dagster chart's values.schema.json (and the
  dagster-user-deployments subchart schema), after merging the chart defaults the way Helm does.
- `validate_k8s_object(obj, k8s_version)`: `kubernetes_validate` in strict mode (unknown fields rejected).
- `validate_raycluster(obj)` / `validate_rayjob(obj)`: the KubeRay CRDs' openAPIV3Schema, with the
  structural-schema pruning rule turned into an error (a field the CRD does not declare is rejected).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, cast

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
SCHEMA_DIR = DEPLOY_DIR / "schemas"
HELM_SCHEMA_DIR = SCHEMA_DIR / "dagster-helm"
KUBERAY_SCHEMA_DIR = SCHEMA_DIR / "kuberay"

DEFAULT_K8S_VERSION = "1.32"

# The only remote document the chart schemas reference (see deploy/schemas/dagster-helm/README.md).
HELM_K8S_DEFINITIONS_URL = (
    "https://raw.githubusercontent.com/yannh/kubernetes-json-schema/master/v1.19.0/_definitions.json"
)

# Keys the chart templates read from a user deployment although the generated schema does not declare
# them (templates/service-user.yaml reads `service.annotations`, deployment-user.yaml reads
# `serviceAccount.name`). Strict mode accepts these and nothing else.
_UNDECLARED_TEMPLATE_KEYS: dict[str, tuple[str, ...]] = {"UserDeployment": ("service", "serviceAccount")}

# Chart-schema objects that strict mode closes (pydantic left them open, so a misspelled key such as
# `envSecret` would otherwise pass and be silently ignored by the templates).
STRICT_HELM_DEFS: tuple[str, ...] = (
    "UserDeployment",
    "UserDeploymentIncludeConfigInLaunchedRuns",
    "Image",
    "RunRetries",
    "ServiceAccount",
    "Sensors",
    "Schedules",
    "TickRetention",
)

# Required by the vendored subchart schema but missing from the (older) vendored subchart values.yaml, as
# deploy/schemas/dagster-helm/README.md records. Filled in only when absent, with the chart's behaviour
# when the key is unset.
_SUBCHART_DEFAULTS_NEWER_THAN_VENDORED_VALUES: dict[str, Any] = {"includeInstance": False}

_MAX_REPORTED_ERRORS = 25

# libyaml's loader when PyYAML was built with it: the CRDs are 1-1.4 MB and the pure-Python one takes seconds.
_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SchemaValidationError(ValueError):
    """A document failed validation; `errors` holds one "path: message" line per problem."""

    def __init__(self, subject: str, errors: Iterable[str]) -> None:
        self.subject = subject
        self.errors = list(errors)
        shown = self.errors[:_MAX_REPORTED_ERRORS]
        more = len(self.errors) - len(shown)
        lines = "\n".join(f"  - {line}" for line in shown)
        suffix = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{subject} is invalid ({len(self.errors)} problem(s)):\n{lines}{suffix}")


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    """All non-empty YAML documents in a file, as dicts."""
    with path.open(encoding="utf-8") as handle:
        documents = [doc for doc in yaml.load_all(handle, Loader=_SAFE_LOADER) if doc is not None]
    for doc in documents:
        if not isinstance(doc, dict):
            raise SchemaValidationError(str(path), [f"a YAML document is a {type(doc).__name__}, not a mapping"])
    return cast(list[dict[str, Any]], documents)


def load_yaml_file(path: Path) -> dict[str, Any]:
    """A single-document YAML file as a dict (an empty file is an empty dict)."""
    documents = load_yaml_documents(path)
    if len(documents) > 1:
        raise SchemaValidationError(str(path), [f"expected one YAML document, found {len(documents)}"])
    return documents[0] if documents else {}


def _format_errors(errors: Iterable[jsonschema.ValidationError]) -> list[str]:
    lines = []
    for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        lines.append(f"{error.json_path}: {_describe(error)}")
    return lines


def _describe(error: jsonschema.ValidationError) -> str:
    if error.context:
        # anyOf/oneOf: the branch that got furthest is the useful explanation; "is not null" never is.
        candidates = [e for e in error.context if not (e.validator == "type" and e.validator_value == "null")]
        if candidates:
            best = max(candidates, key=lambda e: len(e.absolute_path))
            return f"{_describe(best)} (at {best.json_path}; no alternative of {error.validator} matched)"
    return error.message


# --------------------------------------------------------------------------------------------------
# Kubernetes definitions from kubernetes-validate (used by the Helm schema's remote $refs and for
# RayCluster metadata)
# --------------------------------------------------------------------------------------------------


def _k8s_schema_dir(k8s_version: str) -> str:
    """The kubernetes-validate schema directory for a version, e.g. "v1.32.0-local-strict"."""
    wanted = kubernetes_validate.utils.major_minor(k8s_version.removeprefix("v"))
    candidates = [
        version
        for version in kubernetes_validate.utils.all_versions()
        if _version_tuple(kubernetes_validate.utils.major_minor(version)) <= _version_tuple(wanted)
    ]
    if not candidates:
        raise ValueError(f"kubernetes-validate bundles no schema for Kubernetes {k8s_version}")
    return f"v{candidates[-1]}-local-strict"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@functools.cache
def k8s_definitions(k8s_version: str = DEFAULT_K8S_VERSION, strict: bool = True) -> dict[str, Any]:
    """The `_definitions.json` kubernetes-validate bundles for a Kubernetes version (`$defs` keyed).

    The strict flavour sets `additionalProperties: false` on every object, so unknown fields are errors.
    """
    directory = _k8s_schema_dir(k8s_version)
    if not strict:
        directory = directory.removesuffix("-strict")
    ref = resources.files("kubernetes_validate").joinpath(f"kubernetes-json-schema/{directory}/_definitions.json")
    return json.loads(ref.read_text(encoding="utf-8"))


@functools.cache
def _helm_registry(k8s_version: str, strict: bool) -> Registry[Any]:
    """A registry serving the real Kubernetes definitions under the URL the chart schema references.

    The chart schema says `<url>#/definitions/<name>` (the old yannh layout) while kubernetes-validate's
    file keeps them under `$defs`; the same definitions are exposed under both keys. Inner references
    (`#/$defs/...`) resolve against the registered URL, so the document stays self-contained.

    In strict mode `open_top/<name>` holds each definition without its top-level
    `additionalProperties: false`: the chart wraps some Kubernetes types with extra keys of its own
    (`readinessProbe.enabled`), and `_strict_schema` points those wrappers there and closes them with
    `unevaluatedProperties: false` instead, so both the Kubernetes and the chart's keys are accepted and
    nothing else is.
    """
    bundled = k8s_definitions(k8s_version, strict)["$defs"]
    document: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": bundled,
        "definitions": bundled,
    }
    if strict:
        document["open_top"] = {
            name: {key: value for key, value in definition.items() if key != "additionalProperties"}
            for name, definition in bundled.items()
        }
    return Registry().with_resource(HELM_K8S_DEFINITIONS_URL, Resource.from_contents(document, DRAFT202012))


def helm_k8s_refs(schema: Mapping[str, Any]) -> set[str]:
    """Every distinct remote `$ref` in a chart schema."""
    refs: set[str] = set()
    for node in _walk(schema):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            refs.add(ref)
    return refs


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield cast(dict[str, Any], node)
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


# --------------------------------------------------------------------------------------------------
# Helm values
# --------------------------------------------------------------------------------------------------


@functools.cache
def helm_schema() -> dict[str, Any]:
    return json.loads((HELM_SCHEMA_DIR / "values.schema.json").read_text(encoding="utf-8"))


@functools.cache
def helm_subchart_schema() -> dict[str, Any]:
    return json.loads((HELM_SCHEMA_DIR / "dagster-user-deployments" / "values.schema.json").read_text("utf-8"))


def helm_chart_defaults() -> dict[str, Any]:
    """The chart's own values.yaml (a fresh copy each call)."""
    return copy.deepcopy(_helm_chart_defaults())


@functools.cache
def _helm_chart_defaults() -> dict[str, Any]:
    return load_yaml_file(HELM_SCHEMA_DIR / "values.yaml")


@functools.cache
def _helm_subchart_defaults() -> dict[str, Any]:
    return load_yaml_file(HELM_SCHEMA_DIR / "dagster-user-deployments" / "values.yaml")


def helm_merge(base: Mapping[str, Any], *overlays: Mapping[str, Any]) -> dict[str, Any]:
    """Coalesce values files the way Helm does: maps merge key by key, lists and scalars replace, and an
    explicit null deletes the key."""
    result = copy.deepcopy(dict(base))
    for overlay in overlays:
        result = _coalesce(result, overlay)
    return result


def _coalesce(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in overlay.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(base.get(key), dict):
            base[key] = _coalesce(base[key], cast(Mapping[str, Any], value))
        else:
            base[key] = copy.deepcopy(value)
    return base


def subchart_values(parent_values: Mapping[str, Any]) -> dict[str, Any]:
    """The values Helm hands to the dagster-user-deployments subchart: its defaults, then the parent's
    `dagster-user-deployments` block, with the parent's `global` block on top of the subchart's."""
    block = cast(Mapping[str, Any], parent_values.get("dagster-user-deployments") or {})
    merged = helm_merge(_helm_subchart_defaults(), block)
    merged["global"] = helm_merge(
        cast(Mapping[str, Any], merged.get("global") or {}),
        cast(Mapping[str, Any], parent_values.get("global") or {}),
    )
    for key, default in _SUBCHART_DEFAULTS_NEWER_THAN_VENDORED_VALUES.items():
        merged.setdefault(key, default)
    return merged


def _strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    strict = copy.deepcopy(schema)
    definitions = strict.get("$defs", {})
    for name in STRICT_HELM_DEFS:
        definition = definitions.get(name)
        if definition is None:
            continue
        definition["additionalProperties"] = False
        for key in _UNDECLARED_TEMPLATE_KEYS.get(name, ()):
            definition.setdefault("properties", {})[key] = {"type": ["object", "null"]}
    for node in _walk(strict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(HELM_K8S_DEFINITIONS_URL) and node.get("properties"):
            node["$ref"] = ref.replace("#/definitions/", "#/open_top/", 1)
            # `additionalProperties: true` would mark every key as evaluated; closing the node is the point.
            if node.get("additionalProperties") is True:
                del node["additionalProperties"]
            node["unevaluatedProperties"] = False
    return strict


@functools.cache
def _helm_validator(which: str, strict: bool, k8s_version: str) -> jsonschema.Draft202012Validator:
    schema = helm_schema() if which == "main" else helm_subchart_schema()
    if strict:
        schema = _strict_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=_helm_registry(k8s_version, strict))


def validate_helm_values(
    values: Mapping[str, Any],
    *,
    merge_chart_defaults: bool = True,
    strict: bool = True,
    k8s_version: str = DEFAULT_K8S_VERSION,
) -> None:
    """Validate Dagster chart values against the vendored chart and subchart schemas.

    `values` is what you pass with `-f`/`--set` (one file or several already merged with `helm_merge`).
    Helm validates the chart defaults coalesced with those values, so by default the vendored chart
    values.yaml is merged underneath first. Kubernetes sub-objects (resources, securityContext, env, ...)
    are checked against the real, strict Kubernetes definitions. `strict=True` additionally rejects unknown
    keys in the chart objects listed in STRICT_HELM_DEFS.
    """
    merged = helm_merge(_helm_chart_defaults(), values) if merge_chart_defaults else dict(values)
    errors = _format_errors(_helm_validator("main", strict, k8s_version).iter_errors(merged))

    user_deployments = cast(Mapping[str, Any], merged.get("dagster-user-deployments") or {})
    if user_deployments.get("enabled") and user_deployments.get("enableSubchart"):
        sub = subchart_values(merged)
        sub_errors = _helm_validator("subchart", strict, k8s_version).iter_errors(sub)
        errors += [f"(subchart dagster-user-deployments) {line}" for line in _format_errors(sub_errors)]
    if errors:
        raise SchemaValidationError("Dagster Helm values", errors)


# --------------------------------------------------------------------------------------------------
# Kubernetes objects (built-in kinds)
# --------------------------------------------------------------------------------------------------


def validate_k8s_object(obj: Mapping[str, Any], k8s_version: str = DEFAULT_K8S_VERSION) -> None:
    """Validate a built-in Kubernetes object (camelCase dict) with kubernetes-validate in strict mode.

    Custom resources have no schema there: use `validate_raycluster`/`validate_rayjob` for KubeRay kinds.
    """
    subject = _subject(obj)
    for key in ("apiVersion", "kind"):
        if not isinstance(obj.get(key), str):
            raise SchemaValidationError(subject, [f"$.{key}: missing or not a string"])
    try:
        kubernetes_validate.validate(dict(obj), k8s_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        raise SchemaValidationError(subject, _format_errors([error])) from error
    except kubernetes_validate.SchemaNotFoundError as error:
        raise SchemaValidationError(subject, [f"$: {error.message}"]) from error
    # The published JSON schemas type quantities as "string or number" only; the API server parses them,
    # and rejects a container whose request exceeds its limit.
    quantity_errors = list(_quantity_errors(obj, "$"))
    if quantity_errors:
        raise SchemaValidationError(subject, quantity_errors)
    request_errors = list(_request_over_limit_errors(obj, "$"))
    if request_errors:
        raise SchemaValidationError(subject, request_errors)


# resource.Quantity's grammar, as the CRDs spell it.
_QUANTITY = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _quantity_errors(node: Any, path: str) -> Iterator[str]:
    """Every resources.{requests,limits} value and emptyDir.sizeLimit must be a Kubernetes quantity."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _quantity_errors(item, f"{path}[{index}]")
        return
    if not isinstance(node, Mapping):
        return
    for key, value in cast(Mapping[str, Any], node).items():
        here = f"{path}.{key}"
        if key in {"requests", "limits"} and path.endswith(".resources") and isinstance(value, Mapping):
            for resource, quantity in cast(Mapping[str, Any], value).items():
                if not _QUANTITY.match(str(quantity)):
                    yield f"{here}.{resource}: {quantity!r} is not a Kubernetes quantity"
        elif key == "sizeLimit" and not _QUANTITY.match(str(value)):
            yield f"{here}: {value!r} is not a Kubernetes quantity"
        else:
            yield from _quantity_errors(value, here)


_QUANTITY_SUFFIXES: dict[str, Decimal] = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def parse_quantity(quantity: str | float) -> Decimal:
    """A Kubernetes quantity ("500m", "4Gi", "1e3", 2) as a number of base units."""
    text = str(quantity).strip()
    if not _QUANTITY.match(text):
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    for suffix in sorted(_QUANTITY_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):  # an exponent ("1e3") always ends in a digit
            return Decimal(text[: -len(suffix)]) * _QUANTITY_SUFFIXES[suffix]
    return Decimal(text)


def _request_over_limit_errors(node: Any, path: str) -> Iterator[str]:
    """Every container `resources` whose request for a resource exceeds its limit for the same resource
    (the API server's "must be less than or equal to ... limit")."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _request_over_limit_errors(item, f"{path}[{index}]")
        return
    if not isinstance(node, Mapping):
        return
    for key, value in cast(Mapping[str, Any], node).items():
        here = f"{path}.{key}"
        if key == "resources" and isinstance(value, Mapping):
            requests = cast(Mapping[str, Any], value).get("requests") or {}
            limits = cast(Mapping[str, Any], value).get("limits") or {}
            for resource, request in requests.items():
                if resource not in limits:
                    continue
                try:
                    over = parse_quantity(request) > parse_quantity(limits[resource])
                except ValueError:
                    continue  # reported by _quantity_errors
                if over:
                    yield (
                        f"{here}.requests.{resource}: {request!r} exceeds limits.{resource} {limits[resource]!r} "
                        "(the API server rejects a request above its limit)"
                    )
        else:
            yield from _request_over_limit_errors(value, here)


def _subject(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    name = metadata.get("name", "<unnamed>") if isinstance(metadata, Mapping) else "<unnamed>"
    return f"{obj.get('kind', '<no kind>')}/{name}"


# --------------------------------------------------------------------------------------------------
# KubeRay custom resources
# --------------------------------------------------------------------------------------------------

KUBERAY_CRD_FILES: dict[str, Path] = {
    "RayCluster": KUBERAY_SCHEMA_DIR / "ray.io_rayclusters.yaml",
    "RayJob": KUBERAY_SCHEMA_DIR / "ray.io_rayjobs.yaml",
}

_OPENAPI_ONLY_KEYS = {"nullable", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields"}


@functools.cache
def _crd(kind: str) -> dict[str, Any]:
    return load_yaml_file(KUBERAY_CRD_FILES[kind])


def crd_versions(kind: str) -> dict[str, dict[str, Any]]:
    """The served versions of a vendored CRD, `{"ray.io/v1": openAPIV3Schema, ...}`."""
    crd = _crd(kind)
    group = crd["spec"]["group"]
    return {
        f"{group}/{version['name']}": version["schema"]["openAPIV3Schema"]
        for version in crd["spec"]["versions"]
        if version.get("served")
    }


def crd_storage_version(kind: str) -> str:
    crd = _crd(kind)
    (version,) = [v["name"] for v in crd["spec"]["versions"] if v.get("storage")]
    return f"{crd['spec']['group']}/{version}"


def structural_to_jsonschema(node: Any, *, strict: bool = True) -> Any:
    """Turn a CRD structural (OpenAPI v3) schema into JSON Schema.

    - `nullable: true` admits null;
    - an object that declares `properties` and no `additionalProperties` is pruned by the API server:
      with `strict` an undeclared field is an error instead (unless `x-kubernetes-preserve-unknown-fields`);
    - other `x-kubernetes-*` annotations (list types, CEL validations) are not evaluated.
    """
    if isinstance(node, list):
        return [structural_to_jsonschema(item, strict=strict) for item in node]
    if not isinstance(node, dict):
        return node
    source = cast(dict[str, Any], node)
    out: dict[str, Any] = {}
    for key, value in source.items():
        if key.startswith("x-kubernetes-") or key in _OPENAPI_ONLY_KEYS:
            continue
        if key == "properties":
            out[key] = {name: structural_to_jsonschema(sub, strict=strict) for name, sub in value.items()}
        elif key in {"items", "additionalProperties", "anyOf", "allOf", "oneOf", "not"}:
            out[key] = structural_to_jsonschema(value, strict=strict)
        else:
            out[key] = copy.deepcopy(value)
    if source.get("nullable"):
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    preserve = source.get("x-kubernetes-preserve-unknown-fields") is True
    if strict and not preserve and "properties" in source and "additionalProperties" not in source:
        out["additionalProperties"] = False
    return out


@functools.cache
def _crd_validator(kind: str, api_version: str, strict: bool, k8s_version: str) -> jsonschema.Draft202012Validator:
    schema = cast(dict[str, Any], structural_to_jsonschema(crd_versions(kind)[api_version], strict=strict))
    # The API server validates a custom resource's metadata as ObjectMeta: do the same, strictly.
    schema["properties"]["metadata"] = {
        "$ref": "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    }
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    definitions = Resource.from_contents(k8s_definitions(k8s_version), DRAFT202012)
    registry = Registry().with_resource("https://kubernetes.io/api/_definitions.json", definitions)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_custom_resource(
    obj: Mapping[str, Any], kind: str, *, strict: bool = True, k8s_version: str = DEFAULT_K8S_VERSION
) -> None:
    """Validate a KubeRay resource against the vendored CRD version its apiVersion names."""
    subject = _subject(obj)
    versions = crd_versions(kind)
    api_version = obj.get("apiVersion")
    if obj.get("kind") != kind:
        raise SchemaValidationError(subject, [f"$.kind: expected {kind!r}, got {obj.get('kind')!r}"])
    if api_version not in versions:
        served = ", ".join(sorted(versions))
        raise SchemaValidationError(subject, [f"$.apiVersion: {api_version!r} is not served (served: {served})"])
    validator = _crd_validator(kind, cast(str, api_version), strict, k8s_version)
    errors = _format_errors(validator.iter_errors(dict(obj)))
    errors += _kuberay_semantic_errors(obj, kind)
    if errors:
        raise SchemaValidationError(subject, errors)


def validate_raycluster(obj: Mapping[str, Any], *, strict: bool = True) -> None:
    """Validate a RayCluster (e.g. deploy/kuberay/raycluster.yaml or what dagster-ray renders).

    `strict=False` accepts fields the CRD does not declare (the API server would silently drop them).
    """
    validate_custom_resource(obj, "RayCluster", strict=strict)


def validate_rayjob(obj: Mapping[str, Any], *, strict: bool = True) -> None:
    """Validate a RayJob (e.g. what dagster-ray's KubeRayInteractiveJob renders)."""
    validate_custom_resource(obj, "RayJob", strict=strict)


# The CRD types submissionMode as a free string; the controller accepts only these.
RAYJOB_SUBMISSION_MODES = frozenset({"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"})
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _kuberay_semantic_errors(obj: Mapping[str, Any], kind: str) -> list[str]:
    """Checks KubeRay's controller makes (it has no admission webhook by default, so a spec failing these
    is accepted by the API server and then never reconciled)."""
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return []
    if kind == "RayJob":
        errors = []
        mode = spec.get("submissionMode", "K8sJobMode")
        if mode not in RAYJOB_SUBMISSION_MODES:
            errors.append(f"$.spec.submissionMode: {mode!r} is not one of {sorted(RAYJOB_SUBMISSION_MODES)}")
        cluster = spec.get("rayClusterSpec")
        if isinstance(cluster, Mapping):
            errors += _raycluster_spec_errors(cluster, "$.spec.rayClusterSpec")
        return errors
    return _raycluster_spec_errors(spec, "$.spec")


def _raycluster_spec_errors(spec: Mapping[str, Any], where: str) -> list[str]:
    errors: list[str] = []
    groups = spec.get("workerGroupSpecs") or []
    names = [group.get("groupName") for group in groups if isinstance(group, Mapping)]
    if len(names) != len(set(names)):
        errors.append(f"{where}.workerGroupSpecs: groupName values must be unique, got {names}")
    for index, group in enumerate(groups):
        if not isinstance(group, Mapping):
            continue
        path = f"{where}.workerGroupSpecs[{index}]"
        name = group.get("groupName")
        if isinstance(name, str) and not _DNS_LABEL.match(name):
            errors.append(f"{path}.groupName: {name!r} is not a DNS-1123 label")
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        replicas = group.get("replicas")
        if isinstance(low, int) and isinstance(high, int) and low > high:
            errors.append(f"{path}: minReplicas ({low}) > maxReplicas ({high})")
        if isinstance(replicas, int) and isinstance(low, int) and isinstance(high, int) and not low <= replicas <= high:
            errors.append(f"{path}.replicas: {replicas} is outside [minReplicas, maxReplicas] = [{low}, {high}]")
    # KubeRay creates the pods from these templates; the API server then refuses a request above its limit.
    errors += [error.replace("$", where, 1) for error in _request_over_limit_errors(spec, "$")]
    auth = spec.get("authOptions")
    if isinstance(auth, Mapping) and auth.get("mode", "token") == "token":
        version = spec.get("rayVersion")
        if not isinstance(version, str) or _version_tuple_loose(version) < (2, 52, 0):
            errors.append(f"{where}.rayVersion: authOptions.mode=token needs rayVersion >= 2.52.0, got {version!r}")
    return errors


def _version_tuple_loose(version: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", version)
    return tuple(int(part) for part in parts[:3]) if parts else (0,)


# --------------------------------------------------------------------------------------------------
# Dispatch over files
# --------------------------------------------------------------------------------------------------

CUSTOM_RESOURCE_VALIDATORS = {"RayCluster": validate_raycluster, "RayJob": validate_rayjob}


def is_k8s_object(document: Mapping[str, Any]) -> bool:
    return isinstance(document.get("apiVersion"), str) and isinstance(document.get("kind"), str)


def validate_manifest(document: Mapping[str, Any], k8s_version: str = DEFAULT_K8S_VERSION) -> None:
    """Route one manifest to its validator: KubeRay kinds to the CRD, the rest to kubernetes-validate."""
    validator = CUSTOM_RESOURCE_VALIDATORS.get(cast(str, document.get("kind")))
    if validator is not None and str(document.get("apiVersion", "")).startswith("ray.io/"):
        validator(document)
    else:
        validate_k8s_object(document, k8s_version)
