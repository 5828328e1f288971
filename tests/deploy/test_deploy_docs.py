"""The deployment docs keep the commands and warnings the walkthrough depends on."""

from __future__ import annotations

import re

from . import schemas

README = schemas.DEPLOY_DIR / "README.md"
KUBERAY_README = schemas.DEPLOY_DIR / "kuberay" / "README.md"


def test_walkthrough_is_marked_as_not_exercised_in_ci() -> None:
    for path in (README, KUBERAY_README, schemas.DEPLOY_DIR / "mlflow" / "README.md"):
        assert "Not exercised in CI here" in path.read_text(encoding="utf-8"), path


def test_walkthrough_covers_zero_to_backfill() -> None:
    text = README.read_text(encoding="utf-8")
    for needle in (
        "kind create cluster",
        "IMAGE_TAG=$(git rev-parse --short HEAD)",
        "kind load docker-image",
        "deploy/k8s/create-secrets.sh",
        "helm upgrade --install kuberay-operator kuberay/kuberay-operator",
        "helm upgrade --install dagster dagster/dagster",
        "-f deploy/helm/values.yaml -f deploy/helm/values-prod.yaml",
        "port-forward svc/dagster-dagster-webserver",
        "launchPartitionBackfill",
        "Launch backfill",
    ):
        assert needle in text, needle


def test_managed_cluster_guidance_covers_the_usual_changes() -> None:
    section = README.read_text(encoding="utf-8").split("## On a managed cluster", 1)[1]
    for needle in (
        "Object store",
        "GPU nodes",
        "nodeSelector",
        "tolerations",
        "PostgreSQL",
        "workload identity",
    ):
        assert needle in section, needle


def test_kuberay_operator_version_is_pinned_in_both_readmes() -> None:
    versions = {
        path.name + str(path.parent.name): set(re.findall(r"kuberay-operator[^\n]*?\n?[^\n]*--version (\S+)", text))
        for path in (README, KUBERAY_README)
        for text in [path.read_text(encoding="utf-8")]
    }
    assert all(found == {"1.7.0"} for found in versions.values()), versions


def test_walkthrough_starts_no_static_ray_cluster() -> None:
    # One mechanism: per-run clusters from dagster-ray, nothing to apply.
    for path in (README, KUBERAY_README):
        text = path.read_text(encoding="utf-8")
        assert "raycluster.yaml" not in text, path
        assert "platform-ray" not in text, path
        assert "kubectl apply -f deploy/k8s/rbac-kuberay.yaml -f deploy/kuberay/networkpolicy.yaml" in text, path


def test_docs_explain_the_per_run_cluster_and_step_jobs() -> None:
    readme = README.read_text(encoding="utf-8")
    for needle in ("k8s_job_executor", "DAGSTER_RAY_NAMESPACES", "dagster-step-", "kubectl -n dagster get rayclusters"):
        assert needle in readme, needle
    kuberay = KUBERAY_README.read_text(encoding="utf-8")
    for needle in ("kuberay_cleanup_sensor", "DAGSTER_RAY_NAMESPACES", "ClusterSharing", "dagster/image", "leases"):
        assert needle in kuberay, needle


def test_docs_say_how_the_data_path_uses_the_object_store() -> None:
    from resources.kuberay import MAX_WORKERS_PER_GROUP, PLATFORM_ENV_CONFIGMAP, RUN_OBJECT_STORE_SECRET

    section = README.read_text(encoding="utf-8").split("## How the data path uses the object store", 1)[1]
    section = section.split("\n## ", 1)[0]
    for needle in (
        "secretKeyRef",
        f"Secret `{RUN_OBJECT_STORE_SECRET}`",
        f"ConfigMap `{PLATFORM_ENV_CONFIGMAP}`",
        "`ray_cpus_per_task`",
        "`ray_resources`",
        "`ray_days_per_task`",
        f"capped at {MAX_WORKERS_PER_GROUP} (`MAX_WORKERS_PER_GROUP`",
        "`minReplicas: 0`",
        "refused",
    ):
        assert needle in section, needle
