"""Which connections a set of NetworkPolicy objects allows, evaluated as the API defines them
(a pod selected by no policy of a direction is open in that direction; a selected one accepts
only what some selecting policy's rules allow; egress and ingress must both allow a flow), for
the chart's network-policy test. Supports what the chart uses: pod and namespace selectors
with matchLabels, ipBlock CIDRs, TCP/UDP ports by number or by the destination's port name."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, eq=False)  # compared and hashed by identity
class Peer:
    """A pod (``namespace`` and ``labels``) or an address outside the cluster (``ip``)."""

    name: str
    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = ""
    ports: dict[str, int] = field(default_factory=dict)  # named container ports

    @property
    def is_pod(self) -> bool:
        return not self.ip


def _matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    wanted = (selector or {}).get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


def _peer_matches(rule_peer: dict[str, Any], peer: Peer, policy_namespace: str) -> bool:
    if "ipBlock" in rule_peer:
        if not peer.ip:
            return False
        block = rule_peer["ipBlock"]
        address = ipaddress.ip_address(peer.ip)
        inside = address in ipaddress.ip_network(block["cidr"])
        return inside and not any(
            address in ipaddress.ip_network(c) for c in block.get("except", [])
        )
    if not peer.is_pod:
        return False
    if "namespaceSelector" in rule_peer:
        namespace_labels = {"kubernetes.io/metadata.name": peer.namespace}
        if not _matches(rule_peer["namespaceSelector"], namespace_labels):
            return False
    elif peer.namespace != policy_namespace:
        return False
    return _matches(rule_peer.get("podSelector"), peer.labels)


def _port_matches(
    rule_ports: list[dict[str, Any]] | None, port: int, protocol: str, to: Peer
) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        wanted = p.get("port")
        number = to.ports.get(wanted) if isinstance(wanted, str) else wanted
        if p.get("protocol", "TCP") == protocol and (wanted is None or number == port):
            return True
    return False


def _allowed(
    policies: list[dict[str, Any]],
    pod: Peer,
    other: Peer,
    port: int,
    protocol: str,
    to: Peer,
    direction: str,
) -> bool:
    key, rule_peers = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and _matches(p["spec"].get("podSelector"), pod.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(rule_peers)
            peer_ok = not peers or any(
                _peer_matches(rp, other, policy["metadata"]["namespace"]) for rp in peers
            )
            if peer_ok and _port_matches(rule.get("ports"), port, protocol, to):
                return True
    return False


def allows(
    policies: list[dict[str, Any]],
    source: Peer,
    destination: Peer,
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether ``source`` may open a connection to ``destination:port``."""
    egress_ok = not source.is_pod or _allowed(
        policies, source, destination, port, protocol, destination, "Egress"
    )
    ingress_ok = not destination.is_pod or _allowed(
        policies, destination, source, port, protocol, destination, "Ingress"
    )
    return egress_ok and ingress_ok
