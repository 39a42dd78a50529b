"""Kubernetes objects as frozen values: only the fields ipvsctl uses, already validated."""

from __future__ import annotations

from dataclasses import dataclass, field

from ipvsctl.errors import Origin, Problem
from ipvsctl.model.ipvs import IPAddress, Protocol


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    protocol: Protocol
    port: int
    target_port: int | str | None = None
    node_port: int | None = None


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    type: str = "ClusterIP"  # ClusterIP, NodePort, LoadBalancer, ExternalName
    cluster_ips: tuple[IPAddress, ...] = ()
    headless: bool = False
    ip_families: tuple[int, ...] = ()  # 4 and/or 6
    ports: tuple[ServicePort, ...] = ()
    external_ips: tuple[IPAddress, ...] = ()
    load_balancer_ips: tuple[IPAddress, ...] = ()
    session_affinity_timeout: int | None = None  # None: no ClientIP affinity
    external_traffic_local: bool = False
    internal_traffic_local: bool = False
    annotations: tuple[tuple[str, str], ...] = ()
    origin: Origin = field(default=Origin("<memory>", 0), compare=False)

    def annotation(self, key: str) -> str | None:
        for k, v in self.annotations:
            if k == key:
                return v
        return None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str
    port: int
    protocol: Protocol


@dataclass(frozen=True, slots=True)
class Endpoint:
    addresses: tuple[IPAddress, ...]
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """An EndpointSlice, or a v1 Endpoints subset converted to the same shape."""

    namespace: str
    name: str
    service_name: str
    ports: tuple[EndpointPort, ...]
    endpoints: tuple[Endpoint, ...]
    from_endpoints: bool = False  # came from a v1 Endpoints object
    origin: Origin = field(default=Origin("<memory>", 0), compare=False)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything read from the sources in one go, with what was wrong in it."""

    services: tuple[Service, ...] = ()
    slices: tuple[EndpointSlice, ...] = ()
    problems: tuple[Problem, ...] = ()
