"""The RayCluster production creates per run (dagster-ray's KubeRayCluster from resources/kuberay.py, sized
from the pipeline specs) is a valid KubeRay object, hardened like everything else we run, consistent with
the RBAC, NetworkPolicy, Secret and namespace deploy/ sets up; and the CRD validator rejects broken copies.

There is no static RayCluster under deploy/ any more: this rendered object is the one to check."""

from __future__ import annotations

import copy
import json
import math
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kernel.spec import PipelineSpec
from resources.kuberay import MAX_WORKERS_PER_GROUP

from . import hardening, inventory, ray_clusters, schemas

Doc = dict[str, Any]
MANIFESTS = inventory.manifests()


@pytest.fixture(scope="module")
def cluster() -> Doc:
    return ray_clusters.render(ray_clusters.production_cluster())


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory: pytest.TempPathFactory) -> Doc:
    path = ray_clusters.spec_variant(
        tmp_path_factory.mktemp("gpu-spec"), training={"gpu": 1, "gpu_node_selector": ray_clusters.GPU_SELECTOR}
    )
    return ray_clusters.render(ray_clusters.production_cluster([ray_clusters.load_spec(path)]))


# A team's pipeline whose tasks need 2 CPUs and a node kind of their own (custom Ray resource large_memory), built
# 120 days per task: a group of its own, shaped by its own hints.
LARGE_MEMORY = {"ray_cpus_per_task": 2, "ray_resources": {"large_memory": 1}, "ray_days_per_task": 120}
LARGE_MEMORY_TRAINING = {"cpu": "4", "memory": "8Gi"}


@pytest.fixture(scope="module")
def large_memory_spec(tmp_path_factory: pytest.TempPathFactory) -> PipelineSpec:
    path = ray_clusters.spec_variant(
        tmp_path_factory.mktemp("large-memory"), training=LARGE_MEMORY_TRAINING, compute=LARGE_MEMORY, name="bike_large"
    )
    return ray_clusters.load_spec(path)


@pytest.fixture(scope="module")
def mixed_cluster(large_memory_spec: PipelineSpec) -> Doc:
    """Both shipped pipelines (pipelines/*.yaml) and the large-memory variant in one run's cluster."""
    return ray_clusters.render(ray_clusters.production_cluster([*ray_clusters.shipped_specs(), large_memory_spec]))


def test_no_static_raycluster_is_shipped() -> None:
    # One mechanism: clusters are created per run by dagster-ray, never applied from a file.
    assert [name for name, doc in MANIFESTS if doc["kind"] in {"RayCluster", "RayJob", "RayService"}] == []
    assert not (schemas.DEPLOY_DIR / "kuberay" / "raycluster.yaml").exists()


# ---------------------------------------------------------------------------------------------------
# Valid and hardened
# ---------------------------------------------------------------------------------------------------


def test_production_raycluster_validates_strictly_against_the_crd(cluster: Doc) -> None:
    schemas.validate_raycluster(cluster)  # strict: a field the CRD would prune is an error


def test_gpu_variant_validates_strictly_against_the_crd(gpu_cluster: Doc) -> None:
    schemas.validate_raycluster(gpu_cluster)


def test_custom_resource_variant_validates_strictly_against_the_crd(mixed_cluster: Doc) -> None:
    schemas.validate_raycluster(mixed_cluster)


@pytest.mark.parametrize("variant", ["cpu", "gpu", "mixed"])
def test_production_raycluster_is_hardened(cluster: Doc, gpu_cluster: Doc, mixed_cluster: Doc, variant: str) -> None:
    # Head, workers and KubeRay's autoscaler sidecar (autoscalerOptions): same policy as every pod we ship.
    # A finding here is a fix in resources/kuberay.py, not a new exception.
    rendered = {"cpu": cluster, "gpu": gpu_cluster, "mixed": mixed_cluster}[variant]
    assert hardening.workload_findings(rendered) == []


def _image_user() -> tuple[int, int | None]:
    text = (schemas.DEPLOY_DIR / "docker" / "Dockerfile").read_text(encoding="utf-8")
    users = re.findall(r"^USER\s+(\d+)(?::(\d+))?\s*$", text, flags=re.M)
    assert users, "the Dockerfile sets no numeric USER"
    uid, gid = users[-1]
    return int(uid), int(gid) if gid else None


def test_ray_pods_run_as_the_images_user(cluster: Doc) -> None:
    # Ray writes under $HOME (/home/app, owned by the image's user) and /tmp; another UID cannot.
    uid, gid = _image_user()
    for where, pod in hardening.iter_pod_specs(cluster):
        security = pod.get("securityContext") or {}
        assert security.get("runAsUser") == uid, where
        if gid is not None:
            assert security.get("runAsGroup") == gid, where


def test_ray_pods_run_the_runs_image(cluster: Doc) -> None:
    # No image in the spec: dagster-ray fills in the run's `dagster/image` tag, which K8sRunLauncher sets to
    # the code location's image. Workers unpickle our functions, so they must run the same build.
    resource = ray_clusters.production_cluster()
    assert resource.image is None
    images = {c["image"] for _, pod in hardening.iter_pod_specs(cluster) for c in pod["containers"]}
    assert images == {ray_clusters.IMAGE}
    with pytest.raises(ValueError, match="Image is missing"):
        ray_clusters.render(resource, image=None)


# ---------------------------------------------------------------------------------------------------
# Consistent with the rest of deploy/
# ---------------------------------------------------------------------------------------------------


def test_token_auth_from_the_secret_create_secrets_makes(cluster: Doc) -> None:
    auth = cluster["spec"]["authOptions"]
    assert auth["mode"] == "token"
    assert "auth_token" in inventory.created_secrets()[(cluster["metadata"]["namespace"], auth["secretName"])]


def test_ray_version_matches_the_locked_ray(cluster: Doc) -> None:
    lock = (schemas.REPO_ROOT / "uv.lock").read_text(encoding="utf-8")
    assert f'name = "ray"\nversion = "{cluster["spec"]["rayVersion"]}"' in lock


def test_clusters_live_where_rbac_cleanup_and_network_policy_look(cluster: Doc, helm_effective: Doc) -> None:
    namespace = cluster["metadata"]["namespace"]
    assert namespace == "dagster"
    role = inventory.by_kind(MANIFESTS, "Role", "dagster-kuberay")
    assert role["metadata"]["namespace"] == namespace
    (deployment,) = helm_effective["dagster-user-deployments"]["deployments"]
    env = {item["name"]: item.get("value") for item in deployment["env"]}
    assert namespace in env["DAGSTER_RAY_NAMESPACES"].split(",")
    policy = inventory.by_kind(MANIFESTS, "NetworkPolicy", "ray-ingress-from-platform-only")
    assert policy["metadata"]["namespace"] == namespace


def test_network_policy_keeps_ray_inside_the_namespace() -> None:
    # KubeRay labels every pod of every RayCluster ray.io/is-ray-node=yes, so per-run clusters are covered.
    policy = inventory.by_kind(MANIFESTS, "NetworkPolicy", "ray-ingress-from-platform-only")["spec"]
    assert policy["podSelector"] == {"matchLabels": {"ray.io/is-ray-node": "yes"}}
    assert policy["policyTypes"] == ["Ingress"]
    # Every port only between Ray pods; step pods (the Ray clients) and the operator on one port each. Which
    # component reaches which port is evaluated pair by pair in test_deploy_network_policies.py.
    open_rules = [rule for rule in policy["ingress"] if "ports" not in rule]
    assert [rule["from"] for rule in open_rules] == [[{"podSelector": policy["podSelector"]}]]
    for rule in policy["ingress"]:
        assert all("podSelector" in peer and peer["podSelector"] for peer in rule["from"]), rule


def test_dashboard_and_client_stay_inside_the_cluster(cluster: Doc) -> None:
    head = cluster["spec"]["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert head.get("enableIngress", False) is False
    assert head.get("headService", {}).get("spec", {}).get("type", "ClusterIP") == "ClusterIP"


def test_one_cluster_per_run_shared_by_its_steps() -> None:
    # Steps of a run join the cluster the first one created (ClusterSharing); another run must not: it may
    # run another image, and its locks would keep this run's cluster alive.
    resource = ray_clusters.production_cluster()
    sharing = resource.cluster_sharing
    assert sharing.enabled
    assert sharing.match_dagster_labels.run_id, "cluster sharing does not match on dagster/run-id"
    assert resource.lifecycle.cleanup == "always"


# ---------------------------------------------------------------------------------------------------
# Sized from the specs
# ---------------------------------------------------------------------------------------------------


def test_cpu_workers_fit_the_heaviest_step_and_scale_from_zero(cluster: Doc) -> None:
    spec = ray_clusters.load_spec()
    hints = [spec.compute.training, spec.compute.default]
    cpu = max(schemas.parse_quantity(hint.cpu) for hint in hints)
    memory = max(schemas.parse_quantity(hint.memory) for hint in hints)
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    groups = ray_clusters.worker_groups(cluster)
    assert set(groups) == {"cpu"}, "no GPU group unless a spec asks for a GPU"
    cpu_group = groups["cpu"]
    assert (cpu_group["minReplicas"], cpu_group["replicas"]) == (0, 0)
    assert cpu_group["maxReplicas"] >= 1
    requests = ray_clusters.first_container(cpu_group)["resources"]["requests"]
    assert schemas.parse_quantity(requests["cpu"]) == cpu
    assert schemas.parse_quantity(requests["memory"]) == memory
    assert cpu_group["rayStartParams"]["num-cpus"] == str(int(cpu)), "Ray's CPUs are the pod's whole CPUs"
    assert "resources" not in cpu_group["rayStartParams"], "no custom resources unless a spec asks for one"
    head_params = cluster["spec"]["headGroupSpec"]["rayStartParams"]
    assert head_params["num-cpus"] == "0", "the head schedules no tasks"


def test_shipped_specs_share_one_cpu_group_scaled_to_the_cap() -> None:
    # Neither shipped pipeline sets ray_days_per_task: the data path splits a run into about two tasks per CPU of the
    # cluster, so the range does not bound the workers and the group may grow to the cap.
    specs = ray_clusters.shipped_specs()
    assert {spec.name for spec in specs} == {"bike_demand", "air_quality"}
    assert all(spec.compute.ray_days_per_task is None and not spec.compute.ray_resources for spec in specs)
    groups = ray_clusters.worker_groups(ray_clusters.render(ray_clusters.production_cluster(specs)))
    assert set(groups) == {"cpu"}
    assert groups["cpu"]["maxReplicas"] == MAX_WORKERS_PER_GROUP


def test_a_custom_resource_spec_gets_a_group_of_its_own_sized_from_it(
    mixed_cluster: Doc, large_memory_spec: PipelineSpec
) -> None:
    groups = ray_clusters.worker_groups(mixed_cluster)
    assert set(groups) == {"cpu", "cpu-large-memory"}
    large = groups["cpu-large-memory"]
    assert ray_clusters.first_container(large)["resources"]["requests"] == LARGE_MEMORY_TRAINING
    params = large["rayStartParams"]
    assert params["num-cpus"] == "4"
    # Two 2-CPU tasks at a time per worker, each holding one large_memory: the CPUs stay the limit. KubeRay writes
    # rayStartParams into the pod's shell command as `--key=value`; what `ray start` then receives is plain JSON.
    (flag,) = shlex.split(f"--resources={params['resources']}")
    assert json.loads(flag.removeprefix("--resources=")) == {"large_memory": 2}
    # Its longest run (the whole partition range) makes ceil(days / 120) tasks, two per worker.
    partitioning = large_memory_spec.partitioning
    assert partitioning.end_date is not None
    days = (partitioning.end_date - partitioning.start_date).days
    expected = math.ceil(math.ceil(days / 120) / 2)
    assert (large["minReplicas"], large["replicas"], large["maxReplicas"]) == (0, 0, expected)
    assert expected < MAX_WORKERS_PER_GROUP, "the range bounds this group, not the cap"
    # The shipped pipelines keep their group, shaped by their own hints.
    assert ray_clusters.first_container(groups["cpu"])["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert groups["cpu"]["rayStartParams"] == {"num-cpus": "2"}


def test_a_long_range_is_capped(tmp_path: Path) -> None:
    # One day per task over two years: far more tasks than workers; the cap bounds what one run takes.
    path = ray_clusters.spec_variant(tmp_path, compute={"ray_days_per_task": 1})
    (group,) = ray_clusters.worker_groups(
        ray_clusters.render(ray_clusters.production_cluster([ray_clusters.load_spec(path)]))
    ).values()
    assert group["maxReplicas"] == MAX_WORKERS_PER_GROUP


def test_the_autoscaler_finds_a_node_type_for_every_specs_tasks(
    mixed_cluster: Doc, large_memory_spec: PipelineSpec
) -> None:
    # Read the way KubeRay's autoscaler reads it (Ray's own parser of rayStartParams num-cpus and resources): a task
    # with no node type that fits would wait forever, the autoscaler never adding a node for it.
    types = ray_clusters.node_types(mixed_cluster)
    assert types["headgroup"]["resources"]["CPU"] == 0
    assert ray_clusters.node_types_for(large_memory_spec, types) == ["cpu-large-memory"]
    for spec in ray_clusters.shipped_specs():
        assert "cpu" in ray_clusters.node_types_for(spec, types), spec.name
    assert (
        types["cpu-large-memory"]["max_workers"]
        == ray_clusters.worker_groups(mixed_cluster)["cpu-large-memory"]["maxReplicas"]
    )
    # The check bites: without the group offering large_memory, nothing can run that spec's tasks.
    without = copy.deepcopy(mixed_cluster)
    without["spec"]["workerGroupSpecs"] = [ray_clusters.worker_groups(without)["cpu"]]
    assert ray_clusters.node_types_for(large_memory_spec, ray_clusters.node_types(without)) == []


def test_a_spec_whose_tasks_no_worker_could_run_is_refused(tmp_path: Path) -> None:
    # 4 CPUs per task on workers of 2 (the spec's largest compute.*.cpu): refused at render time, naming the spec.
    path = ray_clusters.spec_variant(tmp_path, compute={"ray_cpus_per_task": 4}, name="bike_wide")
    with pytest.raises(ValueError, match=r"'bike_wide' \(.*bike_wide.yaml\): compute.ray_cpus_per_task 4 .*'cpu'"):
        ray_clusters.production_cluster([ray_clusters.load_spec(path)])
    # The same tasks on workers sized for them render.
    fits = ray_clusters.spec_variant(tmp_path / "fits", compute={"ray_cpus_per_task": 4}, training={"cpu": "4"})
    (group,) = ray_clusters.worker_groups(
        ray_clusters.render(ray_clusters.production_cluster([ray_clusters.load_spec(fits)]))
    ).values()
    assert group["rayStartParams"]["num-cpus"] == "4"


def test_a_resource_name_kuberay_cannot_pass_is_refused(tmp_path: Path) -> None:
    path = ray_clusters.spec_variant(tmp_path, compute={"ray_resources": {'big"disk': 1}}, name="bike_quoted")
    with pytest.raises(ValueError, match=r"'bike_quoted' .*compute.ray_resources name 'big\"disk'"):
        ray_clusters.production_cluster([ray_clusters.load_spec(path)])


# ---------------------------------------------------------------------------------------------------
# Ray pods read and write the asset store themselves
# ---------------------------------------------------------------------------------------------------


def _run_pod_env(values: Doc) -> dict[str, Doc]:
    env = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]["env"]
    return {item["name"]: item for item in env}


@pytest.mark.parametrize("variant", ["mixed", "gpu"])
def test_every_ray_pod_holds_the_run_identitys_keys_by_reference(
    mixed_cluster: Doc, gpu_cluster: Doc, helm_effective: Doc, variant: str
) -> None:
    rendered = mixed_cluster if variant == "mixed" else gpu_cluster
    run_env = _run_pod_env(helm_effective)
    secrets = inventory.created_secrets()
    pods = list(hardening.iter_pod_specs(rendered))
    assert len(pods) == 1 + len(rendered["spec"]["workerGroupSpecs"])
    for where, pod in pods:
        env = {item["name"]: item for item in pod["containers"][0]["env"]}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "value" not in env[key], (where, key)
            ref = env[key]["valueFrom"]["secretKeyRef"]
            # The very Secret and key run and step pods use (identity platform-runs), and create-secrets.sh makes it.
            assert ref == run_env[key]["valueFrom"]["secretKeyRef"], (where, key)
            assert ref["key"] in secrets[(rendered["metadata"]["namespace"], ref["name"])], (where, key)


def test_ray_pods_reach_the_object_store_the_steps_reach(cluster: Doc) -> None:
    # Endpoint and region from the ConfigMap the steps read (pyarrow's S3FileSystem honours AWS_ENDPOINT_URL);
    # optional, so a managed S3 without an endpoint override still starts the pods.
    configmap = inventory.by_kind(MANIFESTS, "ConfigMap", "platform-env")
    assert configmap["metadata"]["namespace"] == cluster["metadata"]["namespace"]
    for where, pod in hardening.iter_pod_specs(cluster):
        env = {item["name"]: item for item in pod["containers"][0]["env"]}
        for key in ("AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
            ref = env[key]["valueFrom"]["configMapKeyRef"]
            assert ref == {"name": "platform-env", "key": key, "optional": True}, where
            assert key in configmap["data"], key


def test_gpu_spec_adds_a_gpu_worker_group(gpu_cluster: Doc) -> None:
    groups = ray_clusters.worker_groups(gpu_cluster)
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]
    assert (gpu["minReplicas"], gpu["replicas"]) == (0, 0) and gpu["maxReplicas"] >= 1
    pod = gpu["template"]["spec"]
    assert ray_clusters.first_container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == ray_clusters.GPU_SELECTOR
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    # CPU workers stay off GPU nodes.
    cpu_pod = groups["cpu"]["template"]["spec"]
    assert "nvidia.com/gpu" not in ray_clusters.first_container(groups["cpu"])["resources"].get("limits", {})
    assert not cpu_pod.get("tolerations")


# ---------------------------------------------------------------------------------------------------
# The CRD validator rejects broken copies
# ---------------------------------------------------------------------------------------------------


def _head_container(doc: Doc) -> Doc:
    return doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


def _first_worker(doc: Doc) -> Doc:
    return doc["spec"]["workerGroupSpecs"][0]


RAYCLUSTER_BREAKAGES: dict[str, tuple[Callable[[Doc], None], str]] = {
    "wrong type: maxReplicas as string": (
        lambda d: _first_worker(d).__setitem__("maxReplicas", "4"),
        "is not of type 'integer'",
    ),
    "misspelled: workerGroupSpecs[].minReplica": (
        lambda d: _first_worker(d).__setitem__("minReplica", _first_worker(d).pop("minReplicas")),
        "'minReplica' was unexpected",
    ),
    "misspelled: headGroupSpec.rayStartParam": (
        lambda d: d["spec"]["headGroupSpec"].__setitem__("rayStartParam", {}),
        "'rayStartParam' was unexpected",
    ),
    "pruned: metadata directly under headGroupSpec (dagster-ray's default spec)": (
        lambda d: d["spec"]["headGroupSpec"].__setitem__("metadata", {"labels": {}}),
        "'metadata' was unexpected",
    ),
    "misspelled inside the pod template: imagePullPolicyy": (
        lambda d: _head_container(d).__setitem__("imagePullPolicyy", "Always"),
        "'imagePullPolicyy' was unexpected",
    ),
    "misspelled in metadata: labelz": (
        lambda d: d["metadata"].__setitem__("labelz", {}),
        "'labelz' was unexpected",
    ),
    "missing required: groupName": (
        lambda d: _first_worker(d).pop("groupName"),
        "'groupName' is a required property",
    ),
    "missing required: headGroupSpec": (
        lambda d: d["spec"].pop("headGroupSpec"),
        "'headGroupSpec' is a required property",
    ),
    "bad enum: authOptions.mode": (
        lambda d: d["spec"]["authOptions"].__setitem__("mode", "tokens"),
        "is not one of",
    ),
    "bad enum: autoscalerOptions.upscalingMode": (
        lambda d: d["spec"]["autoscalerOptions"].__setitem__("upscalingMode", "Fast"),
        "is not one of",
    ),
    "controller check: minReplicas > maxReplicas": (
        lambda d: _first_worker(d).update(minReplicas=9, replicas=9, maxReplicas=4),
        "minReplicas (9) > maxReplicas",
    ),
    "controller check: token auth needs rayVersion >= 2.52": (
        lambda d: d["spec"].__setitem__("rayVersion", "2.40.0"),
        "needs rayVersion >= 2.52.0",
    ),
    "pod creation: memory request above its limit": (
        lambda d: ray_clusters.first_container(_first_worker(d))["resources"].update(
            requests={"cpu": "1", "memory": "8Gi"}, limits={"cpu": "1", "memory": "4Gi"}
        ),
        "exceeds limits.memory",
    ),
    "wrong apiVersion": (lambda d: d.__setitem__("apiVersion", "ray.io/v2"), "is not served"),
}


@pytest.mark.parametrize("breakage", list(RAYCLUSTER_BREAKAGES), ids=list(RAYCLUSTER_BREAKAGES))
def test_broken_raycluster_is_rejected(cluster: Doc, breakage: str) -> None:
    broken = copy.deepcopy(cluster)
    corrupt, expected = RAYCLUSTER_BREAKAGES[breakage]
    corrupt(broken)
    with pytest.raises(schemas.SchemaValidationError) as raised:
        schemas.validate_raycluster(broken)
    assert expected in str(raised.value)


def test_non_strict_validation_tolerates_pruned_fields_only(cluster: Doc) -> None:
    pruned = copy.deepcopy(cluster)
    pruned["spec"]["headGroupSpec"]["metadata"] = {"labels": {}}
    with pytest.raises(schemas.SchemaValidationError):
        schemas.validate_raycluster(pruned)
    schemas.validate_raycluster(pruned, strict=False)
    wrong_type = copy.deepcopy(cluster)
    _first_worker(wrong_type)["maxReplicas"] = "4"
    with pytest.raises(schemas.SchemaValidationError):
        schemas.validate_raycluster(wrong_type, strict=False)


def test_dagster_rays_default_spec_would_be_pruned() -> None:
    # Why resources/kuberay.py spells out headGroupSpec: dagster-ray's default carries a field KubeRay drops.
    import dagster as dg
    from dagster_ray.kuberay import RayClusterConfig

    default = RayClusterConfig(metadata={"namespace": "dagster"}).to_k8s(
        dg.build_init_resource_context(), image=ray_clusters.IMAGE
    )
    default["metadata"]["name"] = "default"
    with pytest.raises(schemas.SchemaValidationError, match="'metadata' was unexpected"):
        schemas.validate_raycluster(default)


# The RayJob validator stays (tests/deploy/schemas.py offers it) and proves it can fail too.


def _rayjob(cluster: Doc) -> Doc:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "step-cluster", "namespace": "dagster"},
        "spec": {
            "submissionMode": "InteractiveMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 300,
            "activeDeadlineSeconds": 86400,
            "rayClusterSpec": copy.deepcopy(cluster["spec"]),
        },
    }


def test_rayjob_built_from_our_cluster_spec_validates(cluster: Doc) -> None:
    schemas.validate_rayjob(_rayjob(cluster))


RAYJOB_BREAKAGES: dict[str, tuple[Callable[[Doc], None], str]] = {
    "bad enum: submissionMode": (
        lambda d: d["spec"].__setitem__("submissionMode", "Interactive"),
        "is not one of",
    ),
    "misspelled: rayClusterSpecs": (
        lambda d: d["spec"].__setitem__("rayClusterSpecs", d["spec"].pop("rayClusterSpec")),
        "'rayClusterSpecs' was unexpected",
    ),
    "wrong type: ttlSecondsAfterFinished": (
        lambda d: d["spec"].__setitem__("ttlSecondsAfterFinished", "300"),
        "is not of type 'integer'",
    ),
    "missing required in the embedded cluster: containers": (
        lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"].pop("containers"),
        "'containers' is a required property",
    ),
    "wrong kind": (lambda d: d.__setitem__("kind", "RayCluster"), "expected 'RayJob'"),
}


@pytest.mark.parametrize("breakage", list(RAYJOB_BREAKAGES), ids=list(RAYJOB_BREAKAGES))
def test_broken_rayjob_is_rejected(cluster: Doc, breakage: str) -> None:
    broken = _rayjob(cluster)
    corrupt, expected = RAYJOB_BREAKAGES[breakage]
    corrupt(broken)
    with pytest.raises(schemas.SchemaValidationError) as raised:
        schemas.validate_rayjob(broken)
    assert expected in str(raised.value)


def test_spec_variant_helper_changes_only_compute(tmp_path: Path) -> None:
    original = ray_clusters.load_spec()
    variant = ray_clusters.load_spec(ray_clusters.spec_variant(tmp_path, training={"gpu": 1}))
    assert variant.compute.training.gpu == 1
    assert variant.model_copy(update={"compute": original.compute}).model_dump() == original.model_dump()
