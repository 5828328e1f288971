"""NetworkPolicy semantics, offline: may pod A open a connection to pod B on port P?

`Network(policies, namespaces).connection(src, dst, port, protocol)` applies the rules of networking.k8s.io/v1:

- a policy applies to the pods of its own namespace that its `podSelector` selects (`{}` selects all of them),
  for the directions in `policyTypes` (absent: Ingress, plus Egress when the policy has an `egress` section);
- a pod that no policy selects for a direction is open in that direction; a selected pod admits only what
  the union of the selecting policies' rules admits (a policy with no rules for that direction denies all);
- a rule matches when one of its peers matches (no `from`/`to`: every peer) and one of its ports matches (no
  `ports`: every port); a peer with `podSelector` only means pods of the policy's namespace, with
  `namespaceSelector` only every pod of the selected namespaces, with both the selected pods of the selected
  namespaces; `ipBlock` is treated as possibly covering every pod (the API leaves pod IPs in an ipBlock to the
  CNI), which errs towards "allowed";
- named ports resolve against the destination pod's container ports; `endPort` makes a range;
- a connection needs both the source's egress and the destination's ingress to admit it.

Selectors support `matchLabels` and `matchExpressions` (In, NotIn, Exists, DoesNotExist). Host-network pods,
node traffic (kubelet probes) and Services are not modelled here: `exposure_findings` checks Services and pod
specs for the ways around a NetworkPolicy (NodePort, LoadBalancer, externalIPs, hostNetwork, hostPort).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

Labels = Mapping[str, str]
Doc = Mapping[str, Any]

EXPOSING_SERVICE_TYPES = frozenset({"NodePort", "LoadBalancer"})


@dataclass(frozen=True)
class Pod:
    """One component's pods: where they run, their labels, what they listen on ((port, protocol) pairs)."""

    name: str
    namespace: str
    labels: Labels
    ports: tuple[tuple[int, str], ...] = ()
    named_ports: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str


def selector_matches(selector: Mapping[str, Any], labels: Labels) -> bool:
    """A LabelSelector against a label set; the empty selector matches everything."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In":
            ok = key in labels and labels[key] in values
        elif operator == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            raise ValueError(f"unknown selector operator {operator!r}")
        if not ok:
            return False
    return True


def policy_types(policy: Doc) -> list[str]:
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if "egress" in spec else [])]


def policy_id(policy: Doc) -> str:
    metadata = policy.get("metadata") or {}
    return f"NetworkPolicy {metadata.get('namespace', '<no namespace>')}/{metadata.get('name', '<unnamed>')}"


class Network:
    """The policies of a cluster and the labels of its namespaces (`kubernetes.io/metadata.name` included)."""

    def __init__(self, policies: Iterable[Doc], namespaces: Mapping[str, Labels]) -> None:
        self.policies = [policy for policy in policies if policy.get("kind") == "NetworkPolicy"]
        self.namespaces = {name: {**labels, "kubernetes.io/metadata.name": name} for name, labels in namespaces.items()}

    def _namespace_labels(self, namespace: str) -> Labels:
        return self.namespaces.get(namespace, {"kubernetes.io/metadata.name": namespace})

    def selecting(self, pod: Pod, direction: str) -> list[Doc]:
        """The policies that apply to `pod` for `direction` ("Ingress" or "Egress")."""
        return [
            policy
            for policy in self.policies
            if policy["metadata"].get("namespace") == pod.namespace
            and direction in policy_types(policy)
            and selector_matches(policy["spec"].get("podSelector") or {}, pod.labels)
        ]

    def peer_matches(self, peer: Mapping[str, Any], policy_namespace: str, pod: Pod) -> bool:
        if "ipBlock" in peer:
            return True
        if "namespaceSelector" not in peer and "podSelector" not in peer:
            raise ValueError(f"a peer needs podSelector, namespaceSelector or ipBlock: {dict(peer)}")
        namespace_selector = peer.get("namespaceSelector")
        if namespace_selector is None:
            in_namespace = pod.namespace == policy_namespace
        else:
            in_namespace = selector_matches(namespace_selector, self._namespace_labels(pod.namespace))
        pod_selector = peer.get("podSelector")
        return in_namespace and (pod_selector is None or selector_matches(pod_selector, pod.labels))

    @staticmethod
    def port_matches(rule_ports: Any, port: int, protocol: str, destination: Pod) -> bool:
        if not rule_ports:
            return True
        for rule_port in rule_ports:
            if rule_port.get("protocol", "TCP") != protocol:
                continue
            if "port" not in rule_port:
                return True
            value = rule_port["port"]
            number = destination.named_ports.get(value) if isinstance(value, str) else int(value)
            if number is None:
                continue
            if number <= port <= int(rule_port.get("endPort", number)):
                return True
        return False

    def _direction(self, src: Pod, dst: Pod, port: int, protocol: str, direction: str) -> Verdict:
        subject, peer, peers_key = (dst, src, "from") if direction == "Ingress" else (src, dst, "to")
        policies = self.selecting(subject, direction)
        if not policies:
            return Verdict(True, f"no policy selects {subject.name} for {direction.lower()}")
        for policy in policies:
            namespace = policy["metadata"]["namespace"]
            for index, rule in enumerate(policy["spec"].get(direction.lower()) or []):
                peers = rule.get(peers_key)
                if peers and not any(self.peer_matches(p, namespace, peer) for p in peers):
                    continue
                if self.port_matches(rule.get("ports"), port, protocol, dst):
                    return Verdict(True, f"{policy_id(policy)} {direction.lower()}[{index}]")
        names = ", ".join(policy_id(policy) for policy in policies)
        return Verdict(False, f"{direction.lower()} of {subject.name} is limited by {names}")

    def connection(self, src: Pod, dst: Pod, port: int, protocol: str = "TCP") -> Verdict:
        """Whether `src` may open a connection to `dst` on `port`, and which rule decides it."""
        egress = self._direction(src, dst, port, protocol, "Egress")
        if not egress.allowed:
            return egress
        ingress = self._direction(src, dst, port, protocol, "Ingress")
        if not ingress.allowed:
            return ingress
        return Verdict(True, f"egress: {egress.reason}; ingress: {ingress.reason}")


def default_deny_findings(policies: Iterable[Doc], namespaces: Iterable[str]) -> list[str]:
    """Each namespace needs a policy that selects every pod for ingress and admits nothing by itself."""
    findings = []
    policies = list(policies)
    for namespace in namespaces:
        found = [
            policy
            for policy in policies
            if policy.get("kind") == "NetworkPolicy"
            and policy["metadata"].get("namespace") == namespace
            and (policy["spec"].get("podSelector") or {}) == {}
            and "Ingress" in policy_types(policy)
            and not policy["spec"].get("ingress")
        ]
        if not found:
            findings.append(f"namespace {namespace}: no default-deny ingress policy (podSelector {{}}, no rules)")
    return findings


# --------------------------------------------------------------------------------------------------
# Ways around a NetworkPolicy
# --------------------------------------------------------------------------------------------------


def exposure_findings(services: Iterable[Doc], pod_specs: Iterable[tuple[str, Doc]], pods: Iterable[Pod]) -> list[str]:
    """Services that publish a component outside the cluster network (NodePort, LoadBalancer, externalIPs: the
    policy may see the node's address, not the client's, or be bypassed by the load balancer's health path),
    and pod specs on the host network or with host ports (NetworkPolicy does not apply to them)."""
    findings = []
    pods = list(pods)
    for service in services:
        metadata = service.get("metadata") or {}
        spec = cast(Mapping[str, Any], service.get("spec") or {})
        kind = spec.get("type", "ClusterIP")
        exposing = kind in EXPOSING_SERVICE_TYPES or bool(spec.get("externalIPs"))
        selector = spec.get("selector") or {}
        if not exposing or not selector:
            continue
        namespace = metadata.get("namespace")
        for pod in pods:
            if pod.namespace == namespace and all(pod.labels.get(k) == v for k, v in selector.items()):
                how = kind if kind in EXPOSING_SERVICE_TYPES else "externalIPs"
                findings.append(
                    f"Service {namespace}/{metadata.get('name')} ({how}) exposes {pod.name} outside the cluster, "
                    "around its NetworkPolicy"
                )
    for where, spec in pod_specs:
        if spec.get("hostNetwork"):
            findings.append(f"{where}: hostNetwork: true puts the pod outside every NetworkPolicy")
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            for port in container.get("ports") or []:
                if port.get("hostPort"):
                    findings.append(
                        f"{where}:{container.get('name')}: hostPort {port['hostPort']} is reachable on the node, "
                        "around the NetworkPolicy"
                    )
    return findings
