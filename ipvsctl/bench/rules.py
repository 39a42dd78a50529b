"""Pure: the benchmark's rule set and the ways of writing it down.

N plain ClusterIP Services, each with one TCP port (80 → targetPort 8080) and ten ready
endpoints. ipvsctl turns one such Service into one virtual server ``-s rr`` with ten masqueraded
real servers of weight 1; the ``ipvsadm -R`` input and the keepalived configuration written here
describe exactly that, so all three tools leave the same ``ipvsadm -Sn`` behind. The Services and
EndpointSlices are written as YAML manifests, as JSON manifests in ``kubectl get -o json`` form
(a ``List``), and as API objects for the test API server, all from the same two objects.

Addresses: Service i has ClusterIP 10.96.(i // 250).(i % 250 + 1) (inside 10.96.0.0/12, the
usual Service range) and its endpoints in the /28 block number i of 10.244.0.0/14 (pod ranges),
at offsets 1 to 10. Nothing is ever sent to any of them.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

NAMESPACE = "bench"
PORT = 80
TARGET_PORT = 8080
ENDPOINTS = 10
SCHEDULER = "rr"
WEIGHT = 1
MAX_SERVICES = 250 * 256  # ClusterIPs 10.96.0.1 … 10.96.255.250

_SERVICE_BASE = ipaddress.IPv4Address("10.96.0.0")
_POD_BASE = ipaddress.IPv4Address("10.244.0.0")
_POD_BLOCK = 16  # addresses per Service in the pod range (a /28)


@dataclass(frozen=True)
class BenchService:
    """One Service of the rule set: its name, ClusterIP and endpoint addresses."""

    name: str
    vip: str
    endpoints: tuple[str, ...]

    @property
    def file_name(self) -> str:
        return f"{self.name}.yaml"

    @property
    def json_file_name(self) -> str:
        return f"{self.name}.json"

    @property
    def slice_name(self) -> str:
        return f"{self.name}-1"


def service(index: int, endpoints: int = ENDPOINTS) -> BenchService:
    """Service number ``index`` (0-based) of any rule set."""
    if not 0 <= index < MAX_SERVICES:
        raise ValueError(f"service index {index} outside 0..{MAX_SERVICES - 1}")
    if not 1 <= endpoints < _POD_BLOCK:
        raise ValueError(f"endpoints per service must be 1..{_POD_BLOCK - 1}, not {endpoints}")
    vip = _SERVICE_BASE + (index // 250) * 256 + index % 250 + 1
    block = _POD_BASE + index * _POD_BLOCK
    return BenchService(
        name=f"svc-{index:05d}",
        vip=str(vip),
        endpoints=tuple(str(block + offset) for offset in range(1, endpoints + 1)),
    )


def rule_set(count: int, endpoints: int = ENDPOINTS) -> tuple[BenchService, ...]:
    """The first ``count`` Services, in the order every generator writes them."""
    return tuple(service(i, endpoints) for i in range(count))


def manifest(svc: BenchService, not_ready: Iterable[int] = ()) -> str:
    """The Service and its EndpointSlice as one YAML file; endpoints whose index is in
    ``not_ready`` carry ``ready: false``."""
    down = set(not_ready)
    endpoints = "".join(
        f'  - addresses: ["{address}"]\n    conditions: {{ready: {"false" if i in down else "true"}}}\n'
        for i, address in enumerate(svc.endpoints)
    )
    return (
        "apiVersion: v1\n"
        "kind: Service\n"
        f"metadata: {{name: {svc.name}, namespace: {NAMESPACE}}}\n"
        "spec:\n"
        "  type: ClusterIP\n"
        f'  clusterIP: "{svc.vip}"\n'
        f"  ports: [{{name: http, protocol: TCP, port: {PORT}, targetPort: {TARGET_PORT}}}]\n"
        "---\n"
        "apiVersion: discovery.k8s.io/v1\n"
        "kind: EndpointSlice\n"
        f"metadata: {{name: {svc.slice_name}, namespace: {NAMESPACE}, "
        f"labels: {{kubernetes.io/service-name: {svc.name}}}}}\n"
        "addressType: IPv4\n"
        f"ports: [{{name: http, protocol: TCP, port: {TARGET_PORT}}}]\n"
        "endpoints:\n" + endpoints
    )


def service_object(svc: BenchService) -> dict[str, Any]:
    """The Service as an API object: what ``manifest`` writes as YAML."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": svc.name, "namespace": NAMESPACE},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": svc.vip,
            "ports": [{"name": "http", "protocol": "TCP", "port": PORT, "targetPort": TARGET_PORT}],
        },
    }


def endpoint_slice_object(svc: BenchService, not_ready: Iterable[int] = ()) -> dict[str, Any]:
    """The Service's EndpointSlice as an API object: what ``manifest`` writes as YAML."""
    down = set(not_ready)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": svc.slice_name,
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": svc.name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": TARGET_PORT}],
        "endpoints": [
            {"addresses": [address], "conditions": {"ready": i not in down}} for i, address in enumerate(svc.endpoints)
        ],
    }


def json_manifest(svc: BenchService, not_ready: Iterable[int] = ()) -> str:
    """The Service and its EndpointSlice as ``kubectl get -o json`` prints them: one ``List``."""
    items = [service_object(svc), endpoint_slice_object(svc, not_ready)]
    return json.dumps({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}, indent=4) + "\n"


def service_line(svc: BenchService) -> str:
    """The virtual server as ``ipvsadm -Sn`` prints it."""
    return f"-A -t {svc.vip}:{PORT} -s {SCHEDULER}"


def real_line(svc: BenchService, address: str, weight: int = WEIGHT) -> str:
    """One real server as ``ipvsadm -Sn`` prints it (masqueraded)."""
    return f"-a -t {svc.vip}:{PORT} -r {address}:{TARGET_PORT} -m -w {weight}"


def ipvsadm_lines(services: Sequence[BenchService]) -> list[str]:
    """The rule set in ``ipvsadm -Sn`` syntax, each virtual server followed by its real servers."""
    lines: list[str] = []
    for svc in services:
        lines.append(service_line(svc))
        lines.extend(real_line(svc, address) for address in svc.endpoints)
    return lines


def ipvsadm_rules(services: Sequence[BenchService]) -> str:
    """Input for ``ipvsadm -R``."""
    return "".join(line + "\n" for line in ipvsadm_lines(services))


def keepalived_config(services: Sequence[BenchService]) -> str:
    """A keepalived configuration with the same virtual servers and no health checkers (a real
    server without a checker is up from the start)."""
    parts = ["global_defs {\n    router_id ipvsctl_bench\n}\n"]
    for svc in services:
        reals = "".join(
            f"    real_server {address} {TARGET_PORT} {{\n        weight {WEIGHT}\n    }}\n"
            for address in svc.endpoints
        )
        parts.append(
            f"virtual_server {svc.vip} {PORT} {{\n"
            f"    lb_algo {SCHEDULER}\n"
            "    lb_kind NAT\n"
            "    protocol TCP\n"
            f"{reals}"
            "}\n"
        )
    return "".join(parts)
