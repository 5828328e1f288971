"""Every NetworkPolicy under deploy/ is a valid Kubernetes object, and together they let each component pair talk
exactly where the architecture needs it: each (source, destination, port) below is evaluated with NetworkPolicy
semantics (tests/deploy/network.py) and compared with NEEDED. Mutated copies (an allow-all rule, a widened
selector, a missing default deny, a NodePort, labels changed through the Helm values) fail with the pair named.

Pod labels come from where the cluster gets them: the official chart's templates (webservers, daemon, code
server; `chart_pods`, from the Helm values), dagster-k8s itself (run and step Jobs built by tests/deploy/run_pods.py),
our manifests (MLflow, PostgreSQL, MinIO, Jobs), KubeRay (`ray.io/is-ray-node` etc. on every Ray pod) and the
ingress controller's and the operator's charts (constants below)."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest
import yaml

from . import hardening, inventory, ray_clusters, run_pods, schemas
from .network import Network, Pod, default_deny_findings, exposure_findings

Doc = dict[str, Any]
MANIFESTS = inventory.manifests()
IMAGE = "ml-asset-platform:abc1234"
README = schemas.DEPLOY_DIR / "README.md"
DAGSTER_POLICIES = schemas.DEPLOY_DIR / "k8s" / "networkpolicy-dagster.yaml"
MLFLOW_POLICIES = schemas.DEPLOY_DIR / "mlflow" / "networkpolicy.yaml"

# A port no component needs: only an "every port" rule admits it.
PROBE = (2222, "TCP")
ALL_PORTS = None

# Outside our manifests. The ingress controller: ingress-nginx's chart (the policy's overridable default).
INGRESS_NAMESPACE = "ingress-nginx"
INGRESS_LABELS = {
    "app.kubernetes.io/name": "ingress-nginx",
    "app.kubernetes.io/instance": "ingress-nginx",
    "app.kubernetes.io/component": "controller",
}
# KubeRay operator chart (templates/deployment.yaml) and the labels the operator puts on every Ray pod
# (ray-operator/controllers/ray/utils/constant.go).
OPERATOR_LABELS = {
    "app.kubernetes.io/name": "kuberay-operator",
    "app.kubernetes.io/instance": "kuberay-operator",
    "app.kubernetes.io/component": "kuberay-operator",
}
RAY_CLIENT_PORT, RAY_DASHBOARD_PORT, RAY_GCS_PORT, RAY_METRICS_PORT = 10001, 8265, 6379, 8080


def _ray_labels(cluster: str, node_type: str, group: str) -> dict[str, str]:
    return {
        "ray.io/is-ray-node": "yes",
        "ray.io/cluster": cluster,
        "ray.io/node-type": node_type,
        "ray.io/group": group,
        "app.kubernetes.io/name": "kuberay",
        "app.kubernetes.io/created-by": "kuberay-operator",
    }


# ---------------------------------------------------------------------------------------------------
# The components
# ---------------------------------------------------------------------------------------------------


def chart_pods(values: Mapping[str, Any], *, release: str = run_pods.RELEASE) -> list[Pod]:
    """Webservers, daemon and code servers with the labels the official chart's templates give their pods
    (deployment-webserver / deployment-daemon / dagster-user-deployments deployment-user templates:
    `dagster.selectorLabels` (name, instance), `component`, `deployment`, then the values' extra pod labels)."""
    namespace = run_pods.NAMESPACE
    base = {"app.kubernetes.io/name": values.get("nameOverride") or "dagster", "app.kubernetes.io/instance": release}
    webserver = values["dagsterWebserver"]
    port = ((webserver["service"]["port"], "TCP"),)
    extra = webserver.get("labels") or {}
    pods = [Pod("webserver", namespace, {**base, "component": "dagster-webserver", **extra}, port)]
    if webserver.get("enableReadOnly"):
        labels = {**base, "component": "dagster-webserver-read-only", **extra}
        pods.append(Pod("webserver-read-only", namespace, labels, port))
    if values["dagsterDaemon"].get("enabled", True):
        pods.append(Pod("daemon", namespace, {**base, "component": "dagster-daemon", "deployment": "daemon"}))
    user = values["dagster-user-deployments"]
    if user.get("enabled"):
        name = user.get("nameOverride") or "dagster-user-deployments"
        for index, deployment in enumerate(user["deployments"]):
            labels = {
                "app.kubernetes.io/name": name,
                "app.kubernetes.io/instance": release,
                "component": "user-deployments",
                "deployment": deployment["name"],
                **(deployment.get("labels") or {}),
            }
            pods.append(Pod("code-server" if index == 0 else f"code-server-{index}", namespace, labels,
                            ((deployment["port"], "TCP"),)))  # fmt: skip
    return pods


def chart_services(values: Mapping[str, Any], *, release: str = run_pods.RELEASE) -> list[Doc]:
    """The Services the chart renders: webserver(s) with `dagsterWebserver.service.type`, code servers ClusterIP
    (service-user.yaml hard-codes it)."""
    base = {"app.kubernetes.io/name": values.get("nameOverride") or "dagster", "app.kubernetes.io/instance": release}
    webserver = values["dagsterWebserver"]
    kind = webserver["service"].get("type") or "ClusterIP"
    components = ["dagster-webserver", *(["dagster-webserver-read-only"] if webserver.get("enableReadOnly") else [])]
    services: list[Doc] = [
        {
            "kind": "Service",
            # dagster.webserver.fullname: <release>-<chart name or nameOverride>-webserver[-read-only]
            "metadata": {
                "name": f"{release}-{base['app.kubernetes.io/name']}-{component.removeprefix('dagster-')}",
                "namespace": run_pods.NAMESPACE,
            },
            "spec": {"type": kind, "selector": {**base, "component": component}},
        }
        for component in components
    ]
    for deployment in values["dagster-user-deployments"]["deployments"]:
        selector = {"app.kubernetes.io/instance": release, "component": "user-deployments"}
        services.append(
            {
                "kind": "Service",
                "metadata": {"name": deployment["name"], "namespace": run_pods.NAMESPACE},
                "spec": {"type": "ClusterIP", "selector": {**selector, "deployment": deployment["name"]}},
            }
        )
    return services


def _template(manifests: Iterable[inventory.Manifest], kind: str, name: str) -> tuple[str, Doc, Doc]:
    document = inventory.by_kind(list(manifests), kind, name)
    template = document["spec"]["template"]
    return document["metadata"]["namespace"], template["metadata"]["labels"], template["spec"]


def _manifest_pod(manifests: list[inventory.Manifest], component: str, kind: str, name: str) -> Pod:
    namespace, labels, spec = _template(manifests, kind, name)
    ports = {(p["containerPort"], p.get("protocol", "TCP")) for c in spec["containers"] for p in c.get("ports") or []}
    named = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports") or [] if "name" in p}
    return Pod(component, namespace, labels, tuple(sorted(ports)), named)


def _job_pod(component: str, job: Doc) -> Pod:
    return Pod(component, job["metadata"]["namespace"], job["spec"]["template"]["metadata"]["labels"])


def platform_pods(values: Mapping[str, Any], manifests: list[inventory.Manifest]) -> dict[str, Pod]:
    """Component -> its pods: namespace, labels and the ports it listens on."""
    cluster = ray_clusters.render(ray_clusters.production_cluster())
    ray_namespace = cluster["metadata"]["namespace"]
    head_labels = cluster["spec"]["headGroupSpec"]["template"].get("metadata", {}).get("labels") or {}
    name = cluster["metadata"]["name"]
    step_key = "bike_demand__model"
    pods = [
        *chart_pods(values),
        _job_pod("run-pod", run_pods.run_job_manifest(values, image=IMAGE)),
        _job_pod("step-pod", run_pods.step_job_manifest(values, image=IMAGE, step_key=step_key)),
        _manifest_pod(manifests, "pool-limits-job", "Job", "dagster-pool-limits"),
        Pod("ray-head", ray_namespace, {**head_labels, **_ray_labels(name, "head", "headgroup")},
            ((RAY_GCS_PORT, "TCP"), (RAY_DASHBOARD_PORT, "TCP"), (RAY_CLIENT_PORT, "TCP"), (RAY_METRICS_PORT, "TCP"))),
        Pod("ray-worker", ray_namespace, _ray_labels(name, "worker", "cpu"),
            ((10002, "TCP"), (RAY_METRICS_PORT, "TCP"))),
        Pod("kuberay-operator", "ray-system", OPERATOR_LABELS, ((8080, "TCP"),)),
        _manifest_pod(manifests, "oauth2-proxy", "Deployment", "oauth2-proxy"),
        _manifest_pod(manifests, "mlflow", "Deployment", "mlflow"),
        _manifest_pod(manifests, "mlflow-bootstrap-user", "Job", "mlflow-bootstrap-user"),
        _manifest_pod(manifests, "postgres", "StatefulSet", "postgres"),
        _manifest_pod(manifests, "minio", "Deployment", "minio"),
        _manifest_pod(manifests, "minio-create-bucket", "Job", "minio-create-bucket"),
        # Not ours: what the platform's pods and their neighbours look like from the policies' side.
        Pod("ingress-controller", INGRESS_NAMESPACE, INGRESS_LABELS, ((80, "TCP"), (443, "TCP"))),
        Pod("ingress-neighbour", INGRESS_NAMESPACE, {"app.kubernetes.io/name": "default-backend"}, ((80, "TCP"),)),
        Pod("coredns", "kube-system", {"k8s-app": "kube-dns"}, ((53, "UDP"), (53, "TCP"))),
        Pod("stranger-in-dagster", run_pods.NAMESPACE, {"app": "debug"}, ((8080, "TCP"),)),
        Pod("stranger-elsewhere", "default", {"app": "web"}, ((8080, "TCP"),)),
        # A pod elsewhere that copies a step pod's labels: selectors must pin the namespace too.
        Pod("impostor-elsewhere", "default", _job_pod("x", run_pods.step_job_manifest(
            values, image=IMAGE, step_key=step_key)).labels),
    ]  # fmt: skip
    return {pod.name: pod for pod in pods}


# ---------------------------------------------------------------------------------------------------
# The architecture: who needs to reach whom, on which ports. Everything else is denied.
# ---------------------------------------------------------------------------------------------------

Ports = frozenset[tuple[int, str]] | None


def _tcp(*ports: int) -> frozenset[tuple[int, str]]:
    return frozenset((port, "TCP") for port in ports)


DAGSTER_INSTANCE_USERS = ("webserver", "webserver-read-only", "daemon", "code-server", "run-pod", "step-pod",
                          "pool-limits-job")  # fmt: skip
NEEDED: dict[tuple[str, str], Ports] = {
    # The UI through the ingress controller only: the read-only one directly, the writable one through the sign-in
    # proxy, which alone reaches it (so the user header the proxy sets cannot come from anyone else).
    ("ingress-controller", "webserver-read-only"): _tcp(8080),
    ("ingress-controller", "oauth2-proxy"): _tcp(4180),
    ("oauth2-proxy", "webserver"): _tcp(8080),
    # MLflow's UI and API for people, TLS at the ingress.
    ("ingress-controller", "mlflow"): _tcp(5000),
    # The code location's gRPC server: the processes that load the workspace.
    **{
        (src, "code-server"): _tcp(4000)
        for src in ("webserver", "webserver-read-only", "daemon", "run-pod", "step-pod")
    },
    # The instance database; MLflow's databases on the same server.
    **{(src, "postgres"): _tcp(5432) for src in (*DAGSTER_INSTANCE_USERS, "mlflow")},
    # The object store: landing sensors (code server), the asset store (step pods, and Ray pods: range runs' tasks
    # read and write it themselves), MLflow's artifact proxy.
    **{
        (src, "minio"): _tcp(9000)
        for src in ("code-server", "step-pod", "ray-head", "ray-worker", "mlflow", "minio-create-bucket")
    },
    # MLflow: sensors in the code server, training and predictions in step pods, the bootstrap Job.
    **{(src, "mlflow"): _tcp(5000) for src in ("code-server", "step-pod", "mlflow-bootstrap-user")},
    # Ray: the step pod is the Ray client; head and workers talk on every port; the operator reads the dashboard.
    ("step-pod", "ray-head"): _tcp(RAY_CLIENT_PORT),
    ("kuberay-operator", "ray-head"): _tcp(RAY_DASHBOARD_PORT),
    **{(src, dst): ALL_PORTS for src in ("ray-head", "ray-worker") for dst in ("ray-head", "ray-worker")},
}
# Destinations that are not ours: our policies say nothing about them, so only an egress policy on the source
# can deny; DNS must stay reachable from everywhere.
NOT_OURS = frozenset({"ingress-controller", "ingress-neighbour", "coredns", "stranger-elsewhere", "impostor-elsewhere"})
EGRESS_CONFINED = frozenset({"postgres", "minio", "minio-create-bucket"})  # platform-data: DNS (+ MinIO) only
DNS = frozenset({(53, "UDP"), (53, "TCP")})


def expected(src: str, dst: str, port: tuple[int, str]) -> bool:
    if dst == "coredns" and port in DNS:
        return True
    if (src, dst) in NEEDED:
        ports = NEEDED[(src, dst)]
        if ports is None or port in ports:
            return True
    return dst in NOT_OURS and src not in EGRESS_CONFINED


def matrix_findings(network: Network, pods: Mapping[str, Pod], destinations: Iterable[str] | None = None) -> list[str]:
    """One line per (source, destination, port) where the policies and the architecture disagree."""
    findings = []
    for dst_name in destinations if destinations is not None else pods:
        dst = pods[dst_name]
        for src in pods.values():
            for port in sorted({*dst.ports, PROBE}):
                verdict = network.connection(src, dst, *port)
                wanted = expected(src.name, dst.name, port)
                if verdict.allowed != wanted:
                    state = "allowed" if verdict.allowed else "denied"
                    need = "the architecture denies it" if not wanted else "the architecture needs it"
                    findings.append(
                        f"{src.name} -> {dst.name} {port[0]}/{port[1]}: {state} ({verdict.reason}), but {need}"
                    )
    return findings


# ---------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------


def network_policies(manifests: Iterable[inventory.Manifest]) -> list[Doc]:
    return [doc for _, doc in manifests if doc["kind"] == "NetworkPolicy"]


def namespaces(manifests: Iterable[inventory.Manifest]) -> dict[str, dict[str, str]]:
    ours = {
        doc["metadata"]["name"]: doc["metadata"].get("labels") or {}
        for _, doc in manifests
        if doc["kind"] == "Namespace"
    }
    return {**{name: {} for name in (INGRESS_NAMESPACE, "kube-system", "default")}, **ours}


def all_findings(values: Mapping[str, Any], manifests: list[inventory.Manifest]) -> list[str]:
    """Everything the policy check reports for a set of values and manifests: schema errors of the policies,
    missing default denies, pair-matrix disagreements, exposure around the policies."""
    findings = []
    policies = network_policies(manifests)
    for policy in policies:
        try:
            schemas.validate_k8s_object(policy)
        except schemas.SchemaValidationError as error:
            findings.append(str(error))
    pods = platform_pods(values, manifests)
    findings += default_deny_findings(policies, platform_namespaces(pods))
    findings += matrix_findings(Network(policies, namespaces(manifests)), pods)
    findings += exposure_findings(services(values, manifests), pod_specs(values, manifests), pods.values())
    return findings


def platform_namespaces(pods: Mapping[str, Pod]) -> list[str]:
    return sorted({pod.namespace for name, pod in pods.items() if name not in NOT_OURS and name != "kuberay-operator"}
                  | {"ray-system"})  # fmt: skip


def services(values: Mapping[str, Any], manifests: Iterable[inventory.Manifest]) -> list[Doc]:
    return [*(doc for _, doc in manifests if doc["kind"] == "Service"), *chart_services(values)]


def pod_specs(values: Mapping[str, Any], manifests: Iterable[inventory.Manifest]) -> list[tuple[str, Doc]]:
    specs = [(where, dict(spec)) for _, doc in manifests for where, spec in hardening.iter_pod_specs(doc)]
    cluster = ray_clusters.render(ray_clusters.production_cluster())
    specs += [(where, dict(spec)) for where, spec in hardening.iter_pod_specs(cluster)]
    for job in (
        run_pods.run_job_manifest(values, image=IMAGE),
        run_pods.step_job_manifest(values, image=IMAGE, step_key="bike_demand__model"),
    ):
        specs += [(where, dict(spec)) for where, spec in hardening.iter_pod_specs(job)]
    return specs


@pytest.fixture(scope="module")
def pods(helm_effective: Doc) -> dict[str, Pod]:
    return platform_pods(helm_effective, MANIFESTS)


@pytest.fixture(scope="module")
def network() -> Network:
    return Network(network_policies(MANIFESTS), namespaces(MANIFESTS))


# ---------------------------------------------------------------------------------------------------
# The shipped policies
# ---------------------------------------------------------------------------------------------------


def test_policies_are_found_in_every_platform_namespace(pods: dict[str, Pod]) -> None:
    where = {doc["metadata"]["namespace"] for doc in network_policies(MANIFESTS)}
    assert set(platform_namespaces(pods)) == {"dagster", "mlflow", "platform-data", "ray-system"}
    assert where == set(platform_namespaces(pods))


@pytest.mark.parametrize("version", ["1.30", "1.32", "1.34"])
def test_policies_validate_strictly(version: str) -> None:
    for policy in network_policies(MANIFESTS):
        schemas.validate_k8s_object(policy, version)


def test_every_platform_namespace_denies_ingress_by_default(pods: dict[str, Pod]) -> None:
    assert default_deny_findings(network_policies(MANIFESTS), platform_namespaces(pods)) == []


def test_component_table_has_the_labels_the_selectors_rely_on(pods: dict[str, Pod]) -> None:
    # Guards the table itself: the labels come from dagster-k8s, the chart templates and our manifests.
    assert pods["run-pod"].labels["app.kubernetes.io/component"] == "run_worker"
    assert pods["step-pod"].labels["app.kubernetes.io/component"] == "step_worker"
    assert pods["step-pod"].labels["dagster/job"] and pods["run-pod"].labels["dagster/run-id"]
    assert pods["code-server"].labels["deployment"] == "ml-asset-platform"
    assert pods["code-server"].ports == ((4000, "TCP"),)
    assert pods["webserver-read-only"].labels["component"] == "dagster-webserver-read-only"
    assert pods["mlflow"].ports == ((5000, "TCP"),) and pods["postgres"].ports == ((5432, "TCP"),)
    assert pods["ray-head"].namespace == pods["step-pod"].namespace == "dagster"


ALL_DESTINATIONS = sorted(platform_pods(inventory.helm_effective(), MANIFESTS))


@pytest.mark.parametrize("destination", ALL_DESTINATIONS)
def test_traffic_to_each_component_is_exactly_what_the_architecture_needs(
    network: Network, pods: dict[str, Pod], destination: str
) -> None:
    assert matrix_findings(network, pods, [destination]) == []


def test_needed_pairs_are_really_allowed_and_others_really_denied(network: Network, pods: dict[str, Pod]) -> None:
    # A few pairs spelled out, so a bug in `expected` cannot hide one.
    assert network.connection(pods["webserver-read-only"], pods["code-server"], 4000).allowed
    assert network.connection(pods["step-pod"], pods["ray-head"], RAY_CLIENT_PORT).allowed
    assert network.connection(pods["mlflow"], pods["postgres"], 5432).allowed
    assert network.connection(pods["minio-create-bucket"], pods["minio"], 9000).allowed
    assert network.connection(pods["postgres"], pods["coredns"], 53, "UDP").allowed
    assert not network.connection(pods["run-pod"], pods["ray-head"], RAY_CLIENT_PORT).allowed
    assert not network.connection(pods["ray-worker"], pods["mlflow"], 5000).allowed
    assert network.connection(pods["ray-worker"], pods["minio"], 9000).allowed
    assert not network.connection(pods["ray-worker"], pods["postgres"], 5432).allowed
    assert not network.connection(pods["stranger-in-dagster"], pods["code-server"], 4000).allowed
    assert not network.connection(pods["impostor-elsewhere"], pods["code-server"], 4000).allowed
    assert not network.connection(pods["ingress-neighbour"], pods["webserver"], 8080).allowed
    assert not network.connection(pods["ingress-controller"], pods["webserver"], 8080).allowed
    assert network.connection(pods["oauth2-proxy"], pods["webserver"], 8080).allowed
    assert not network.connection(pods["oauth2-proxy"], pods["webserver-read-only"], 8080).allowed
    assert not network.connection(pods["ingress-controller"], pods["daemon"], PROBE[0]).allowed
    assert not network.connection(pods["postgres"], pods["stranger-elsewhere"], 8080).allowed


def test_nothing_is_exposed_around_the_policies(helm_effective: Doc, pods: dict[str, Pod]) -> None:
    found = exposure_findings(services(helm_effective, MANIFESTS), pod_specs(helm_effective, MANIFESTS), pods.values())
    assert found == []


def test_the_shipped_deploy_folder_passes_the_whole_check(helm_effective: Doc) -> None:
    assert all_findings(helm_effective, MANIFESTS) == []


# ---------------------------------------------------------------------------------------------------
# Bad input: a change that opens (or cuts off) a component fails, naming the pair
# ---------------------------------------------------------------------------------------------------


def _policy(manifests: list[inventory.Manifest], namespace: str, name: str) -> Doc:
    (policy,) = [
        doc
        for _, doc in manifests
        if doc["kind"] == "NetworkPolicy"
        and doc["metadata"]["name"] == name
        and doc["metadata"]["namespace"] == namespace
    ]
    return policy


def _drop_policy(manifests: list[inventory.Manifest], namespace: str, name: str) -> None:
    manifests[:] = [
        (key, doc)
        for key, doc in manifests
        if not (
            doc["kind"] == "NetworkPolicy"
            and doc["metadata"]["name"] == name
            and doc["metadata"]["namespace"] == namespace
        )
    ]


def _code_server(manifests: list[inventory.Manifest]) -> Doc:
    return _policy(manifests, "dagster", "dagster-code-server-from-dagster-only")


def _split_ingress_peer(manifests: list[inventory.Manifest]) -> None:
    rule = _policy(manifests, "dagster", "oauth2-proxy-from-ingress-controller")["spec"]["ingress"][0]
    (peer,) = rule["from"]
    rule["from"] = [{"namespaceSelector": peer["namespaceSelector"]}, {"podSelector": peer["podSelector"]}]


def _add_service(manifests: list[inventory.Manifest], kind: str, selector: dict[str, str], **extra: Any) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "debug", "namespace": "dagster"},
        "spec": {"type": kind, "selector": selector, "ports": [{"port": 4000}], **extra},
    }
    manifests.append(("added", service))


Mutation = Callable[[Doc, list[inventory.Manifest]], None]
OPENINGS: dict[str, tuple[Mutation, str]] = {
    "allow-all ingress rule on the code server": (
        lambda _, m: _code_server(m)["spec"]["ingress"].append({}),
        "stranger-in-dagster -> code-server 4000/TCP: allowed",
    ),
    "code server open to every namespace": (
        lambda _, m: _code_server(m)["spec"]["ingress"][0].update({"from": [{"namespaceSelector": {}}]}),
        "stranger-elsewhere -> code-server 4000/TCP: allowed",
    ),
    "code server rule without ports": (
        lambda _, m: _code_server(m)["spec"]["ingress"][0].pop("ports"),
        "webserver -> code-server 2222/TCP: allowed",
    ),
    "ingress controller peer split in two (OR instead of AND)": (
        lambda _, m: _split_ingress_peer(m),
        "ingress-neighbour -> oauth2-proxy 4180/TCP: allowed",
    ),
    "no default deny in namespace dagster": (
        lambda _, m: _drop_policy(m, "dagster", "default-deny-ingress"),
        "stranger-in-dagster -> daemon 2222/TCP: allowed",
    ),
    "Ray open to its whole namespace (the policy before this change)": (
        lambda _, m: _policy(m, "dagster", "ray-ingress-from-platform-only")["spec"].update(
            ingress=[{"from": [{"podSelector": {}}]}]
        ),
        "run-pod -> ray-head 10001/TCP: allowed",
    ),
    "MLflow open to namespace dagster (the policy before this change)": (
        lambda _, m: _policy(m, "mlflow", "mlflow-ingress-from-platform-only")["spec"]["ingress"][0].update(
            {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dagster"}}}]}
        ),
        "ray-worker -> mlflow 5000/TCP: allowed",
    ),
    "PostgreSQL rule without a namespace selector on the dagster peer": (
        lambda _, m: _policy(m, "platform-data", "postgres-from-its-clients-only")["spec"]["ingress"][0]["from"][0].pop(
            "namespaceSelector"
        ),
        "webserver -> postgres 5432/TCP: denied",
    ),
    "platform-data egress open": (
        lambda _, m: _policy(m, "platform-data", "default-deny")["spec"]["egress"].append({}),
        "postgres -> stranger-elsewhere 8080/TCP: allowed",
    ),
    # Too narrow is a failure too: the pipeline would break in the cluster.
    "Ray workers cut off from MinIO (the policy before the data path moved to the tasks)": (
        lambda _, m: _policy(m, "platform-data", "minio-from-its-clients-only")["spec"]["ingress"][0]["from"].pop(3),
        "ray-worker -> minio 9000/TCP: denied",
    ),
    "MinIO open to every pod of namespace dagster (Ray peer without its pod selector)": (
        lambda _, m: _policy(m, "platform-data", "minio-from-its-clients-only")["spec"]["ingress"][0]["from"][3].pop(
            "podSelector"
        ),
        "run-pod -> minio 9000/TCP: allowed",
    ),
    "step pods cut off from MLflow": (
        lambda _, m: _policy(m, "mlflow", "mlflow-ingress-from-platform-only")["spec"]["ingress"][0]["from"].pop(),
        "step-pod -> mlflow 5000/TCP: denied",
    ),
    "DNS egress removed in platform-data": (
        lambda _, m: _policy(m, "platform-data", "default-deny")["spec"].pop("egress"),
        "postgres -> coredns 53/UDP: denied",
    ),
    "code server policy in the wrong namespace": (
        lambda _, m: _code_server(m)["metadata"].update(namespace="default"),
        "webserver -> code-server 4000/TCP: denied",
    ),
    # Values that move the pods away from the labels the policies select.
    "values: the code location renamed": (
        lambda v, _: v["dagster-user-deployments"]["deployments"][0].update(name="other-location"),
        "webserver -> code-server 4000/TCP: denied",
    ),
    "values: chart nameOverride": (
        lambda v, _: v.update(nameOverride="platform"),
        "oauth2-proxy -> webserver 8080/TCP: denied",
    ),
    "the writable webserver opened to the ingress controller (bypassing the sign-in proxy)": (
        lambda _, m: _policy(m, "dagster", "dagster-webserver-from-ingress-controller")["spec"].update(
            podSelector={"matchLabels": {"app.kubernetes.io/name": "dagster"}}
        ),
        "ingress-controller -> webserver 8080/TCP: allowed",
    ),
    # Exposure around the policies.
    "values: the webserver behind a LoadBalancer Service": (
        lambda v, _: v["dagsterWebserver"]["service"].update(type="LoadBalancer"),
        "(LoadBalancer) exposes webserver outside the cluster",
    ),
    "a NodePort Service on the code server": (
        lambda _, m: _add_service(m, "NodePort", {"component": "user-deployments", "deployment": "ml-asset-platform"}),
        "Service dagster/debug (NodePort) exposes code-server outside the cluster",
    ),
    "externalIPs on a ClusterIP Service of the daemon": (
        lambda _, m: _add_service(m, "ClusterIP", {"component": "dagster-daemon"}, externalIPs=["203.0.113.7"]),
        "(externalIPs) exposes daemon outside the cluster",
    ),
    "MLflow on the host network": (
        lambda _, m: inventory.by_kind(m, "Deployment", "mlflow")["spec"]["template"]["spec"].update(hostNetwork=True),
        "Deployment/mlflow: hostNetwork: true",
    ),
    "a malformed policy (misspelled namespaceSelector)": (
        lambda _, m: _code_server(m)["spec"]["ingress"][0]["from"].append({"namespaceSelectr": {}}),
        "namespaceSelectr",
    ),
}


@pytest.mark.parametrize("mutation", list(OPENINGS), ids=list(OPENINGS))
def test_a_change_beyond_the_architecture_fails_naming_the_pair(helm_effective: Doc, mutation: str) -> None:
    values = copy.deepcopy(helm_effective)
    manifests = copy.deepcopy(MANIFESTS)
    mutate, expected_finding = OPENINGS[mutation]
    mutate(values, manifests)
    try:
        findings = all_findings(values, manifests)
    except ValueError as error:  # the evaluator refuses a peer it cannot interpret
        findings = [str(error)]
    assert any(expected_finding in finding for finding in findings), findings


def test_unmutated_copies_pass_the_check(helm_effective: Doc) -> None:
    # The copies the mutations start from pass: a mutation's finding is caused by the mutation.
    assert all_findings(copy.deepcopy(helm_effective), copy.deepcopy(MANIFESTS)) == []


# ---------------------------------------------------------------------------------------------------
# The walkthrough applies every policy, and the ingress controller is a documented, working override
# ---------------------------------------------------------------------------------------------------


def _policy_files() -> list[str]:
    files = set()
    for key, doc in MANIFESTS:
        if doc["kind"] == "NetworkPolicy":
            files.add(key.split("#", 1)[0])
    return sorted(files)


@pytest.mark.parametrize("path", _policy_files())
def test_the_walkthrough_applies_every_policy_file(path: str) -> None:
    text = README.read_text(encoding="utf-8").replace("\\\n", " ")
    commands = [line for line in text.splitlines() if "kubectl apply" in line]
    assert any(re.search(rf"(-f|sed .*) {re.escape(path)}\b", line) for line in commands), path


def _readme_sed(path: Any = DAGSTER_POLICIES) -> str:
    """The walkthrough's `sed ... <path> | kubectl apply -f -` for that policy file."""
    text = README.read_text(encoding="utf-8")
    relative = str(path.relative_to(schemas.REPO_ROOT))
    commands = [
        match.group(1).replace("\\\n", " ")
        for match in re.finditer(r"^(sed -e [^|]*?)\s*\|\s*kubectl apply -f -$", text, flags=re.M | re.S)
    ]
    named = [command for command in commands if relative in command]
    assert named, f"deploy/README.md has no `sed ... {relative} | kubectl apply -f -`"
    return named[0]


@pytest.mark.parametrize(
    ("namespace", "app"), [("ingress-nginx", "ingress-nginx"), ("traefik", "traefik"), ("kube-system", "traefik")]
)
def test_the_readme_override_admits_the_chosen_ingress_controller_only(namespace: str, app: str) -> None:
    env = {**os.environ, "INGRESS_NAMESPACE": namespace, "INGRESS_APP": app}
    rendered = subprocess.run(
        ["bash", "-c", _readme_sed()], cwd=schemas.REPO_ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout
    policies = [doc for doc in yaml.safe_load_all(rendered) if doc]
    for policy in policies:
        schemas.validate_k8s_object(policy)
    network = Network(policies, {"dagster": {}, namespace: {}, INGRESS_NAMESPACE: {}})
    values = inventory.helm_effective()
    pods = {pod.name: pod for pod in chart_pods(values)}
    viewer, writable = pods["webserver-read-only"], pods["webserver"]
    proxy = _manifest_pod(MANIFESTS, "oauth2-proxy", "Deployment", "oauth2-proxy")
    chosen = Pod("chosen", namespace, {"app.kubernetes.io/name": app})
    assert network.connection(chosen, viewer, 8080).allowed
    assert network.connection(chosen, proxy, 4180).allowed
    assert not network.connection(chosen, writable, 8080).allowed, "the writable UI only through the sign-in proxy"
    assert not network.connection(Pod("other", namespace, {"app.kubernetes.io/name": "other"}), viewer, 8080).allowed
    if namespace != INGRESS_NAMESPACE:
        assert not network.connection(Pod("nginx", INGRESS_NAMESPACE, INGRESS_LABELS), viewer, 8080).allowed


def test_the_readme_override_admits_the_chosen_ingress_controller_to_mlflow() -> None:
    env = {**os.environ, "INGRESS_NAMESPACE": "kube-system", "INGRESS_APP": "traefik"}
    rendered = subprocess.run(
        ["bash", "-c", _readme_sed(MLFLOW_POLICIES)], cwd=schemas.REPO_ROOT, env=env, check=True,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    policies = [doc for doc in yaml.safe_load_all(rendered) if doc]
    network = Network(policies, {"mlflow": {}, "kube-system": {}, INGRESS_NAMESPACE: {}})
    mlflow = _manifest_pod(MANIFESTS, "mlflow", "Deployment", "mlflow")
    assert network.connection(
        Pod("traefik", "kube-system", {"app.kubernetes.io/name": "traefik"}), mlflow, 5000
    ).allowed
    assert not network.connection(Pod("nginx", INGRESS_NAMESPACE, INGRESS_LABELS), mlflow, 5000).allowed


def test_readme_has_the_threat_table_and_says_what_remains() -> None:
    text = README.read_text(encoding="utf-8")
    table = text.split("## Threat table", 1)[1].split("\n## ", 1)[0]
    for component in ("Webserver (writable)", "oauth2-proxy", "Read-only webserver", "Daemon", "Code server",
                      "Run pods", "Step pods", "Ray head and workers", "MLflow", "PostgreSQL", "MinIO",
                      "KubeRay operator"):  # fmt: skip
        assert f"\n| {component}" in table, component
    assert "owns one run pod" in table and "can:**" in table and "cannot:**" in table
    assert "**What remains**" in table and "pod creation" in table
    assert "no authentication yet" not in table and "root keys" in table


# ---------------------------------------------------------------------------------------------------
# The evaluator follows NetworkPolicy semantics (each case would pass with a naive "allow" or "deny")
# ---------------------------------------------------------------------------------------------------


def _np(namespace: str, spec: Doc, name: str = "p") -> Doc:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip


A = Pod("a", "ns1", {"app": "a"})
B = Pod("b", "ns1", {"app": "b"}, ((80, "TCP"),), {"http": 80})
C = Pod("c", "ns2", {"app": "a"})


def test_a_pod_no_policy_selects_is_open_and_an_empty_selector_selects_all() -> None:
    assert Network([], {}).connection(C, B, 80).allowed
    deny = _np("ns1", {"podSelector": {}, "policyTypes": ["Ingress"]})
    assert not Network([deny], {}).connection(A, B, 80).allowed
    # A policy in another namespace, or selecting other pods, leaves B open.
    assert Network([_np("ns2", {"podSelector": {}, "policyTypes": ["Ingress"]})], {}).connection(A, B, 80).allowed
    other = _np("ns1", {"podSelector": {"matchLabels": {"app": "zzz"}}, "policyTypes": ["Ingress"]})
    assert Network([other], {}).connection(A, B, 80).allowed


def test_peers_ports_and_their_combinations() -> None:
    def allows(peer: Doc, ports: list[Doc] | None, src: Pod, port: int = 80, protocol: str = "TCP") -> bool:
        rule: Doc = {"from": [peer]} | ({"ports": ports} if ports is not None else {})
        spec = {"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Ingress"], "ingress": [rule]}
        return Network([_np("ns1", spec)], {"ns2": {"team": "x"}}).connection(src, B, port, protocol).allowed

    same_namespace_a = {"podSelector": {"matchLabels": {"app": "a"}}}
    assert allows(same_namespace_a, None, A) and not allows(same_namespace_a, None, C)
    ns2 = {"namespaceSelector": {"matchLabels": {"team": "x"}}}
    assert allows(ns2, None, C) and not allows(ns2, None, A)
    both = {**ns2, **same_namespace_a}
    assert allows(both, None, C) and not allows(both, None, Pod("d", "ns2", {"app": "d"}))
    assert allows({"namespaceSelector": {}}, None, C)
    assert allows(same_namespace_a, [{"port": 80}], A) and not allows(same_namespace_a, [{"port": 81}], A)
    assert not allows(same_namespace_a, [{"port": 80}], A, protocol="UDP")
    assert allows(same_namespace_a, [{"port": "http"}], A) and not allows(same_namespace_a, [{"port": "grpc"}], A)
    assert allows(same_namespace_a, [{"port": 70, "endPort": 90}], A)
    assert not allows(same_namespace_a, [{"port": 70, "endPort": 79}], A)
    assert allows(same_namespace_a, [{"protocol": "TCP"}], A, port=12345)


@pytest.mark.parametrize(
    ("expression", "labels", "matches"),
    [
        ({"key": "app", "operator": "In", "values": ["a", "b"]}, {"app": "b"}, True),
        ({"key": "app", "operator": "In", "values": ["a"]}, {}, False),
        ({"key": "app", "operator": "NotIn", "values": ["a"]}, {}, True),
        ({"key": "app", "operator": "NotIn", "values": ["a"]}, {"app": "a"}, False),
        ({"key": "app", "operator": "Exists"}, {"app": ""}, True),
        ({"key": "app", "operator": "DoesNotExist"}, {"app": "a"}, False),
    ],
)
def test_match_expressions(expression: Doc, labels: dict[str, str], matches: bool) -> None:
    from .network import selector_matches

    assert selector_matches({"matchExpressions": [expression]}, labels) is matches


def test_egress_and_ingress_must_both_admit() -> None:
    only_dns = _np("ns1", {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Egress"], "egress": []})
    assert not Network([only_dns], {}).connection(A, B, 80).allowed
    assert Network([only_dns], {}).connection(B, A, 80).allowed, "egress of a does not limit traffic to a"
    # No policyTypes: Ingress, plus Egress because the policy has an egress section.
    implicit = _np("ns1", {"podSelector": {"matchLabels": {"app": "a"}}, "egress": []})
    assert not Network([implicit], {}).connection(A, B, 80).allowed
    assert not Network([implicit], {}).connection(B, A, 80).allowed
    # Several policies selecting one pod: the union of their rules.
    first = _np("ns1", {"podSelector": {}, "policyTypes": ["Ingress"]}, "deny")
    second = _np("ns1", {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": [{"from": [{"podSelector": {}}]}]})
    assert Network([first, second], {}).connection(A, B, 80).allowed
