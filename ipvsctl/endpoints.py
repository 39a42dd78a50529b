"""Pure endpoint selection: which endpoints of a Service port become real servers, at what weight.

kube-proxy's rules: ready endpoints get weight 1; when no endpoint in the candidate set is
ready, the serving-and-terminating ones take new connections instead. Everything else is
left out here and drained by the planner.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ipvsctl.model.desired import RealServers
from ipvsctl.model.ipvs import IPAddress
from ipvsctl.model.k8s import Endpoints, EndpointSlice, Packed, ServicePort, packed_version


@dataclass(frozen=True, slots=True)
class Candidate:
    address: Packed | IPAddress  # packed (``pack_address``) unless it has a zone
    port: int
    ready: bool
    serving: bool
    terminating: bool
    node_name: str | None

    @property
    def version(self) -> int:
        return packed_version(self.address) if isinstance(self.address, bytes) else self.address.version

    @property
    def number(self) -> int:
        """The address as a number (the order of ``RealKey.sort_key`` within one family)."""
        return int.from_bytes(self.address[1:]) if isinstance(self.address, bytes) else int(self.address)


def slice_port(es: EndpointSlice, port: ServicePort) -> int | None:
    """The backend port this slice serves for a Service port: matched by port name and protocol,
    then by a named targetPort."""
    for p in es.ports:
        if p.name == port.name and p.protocol == port.protocol:
            return p.port
    if isinstance(port.target_port, str):
        for p in es.ports:
            if p.name == port.target_port and p.protocol == port.protocol:
                return p.port
    return None


def candidates(slices: Iterable[EndpointSlice], port: ServicePort) -> list[Candidate]:
    """Every endpoint of the Service port, de-duplicated by (address, port), in input order."""
    found: dict[tuple[Packed | IPAddress, int], Candidate] = {}
    for es in slices:
        number = slice_port(es, port)
        if number is None:
            continue
        endpoints = es.endpoints if isinstance(es.endpoints, Endpoints) else Endpoints(es.endpoints)
        # consumers use the first address, as kube-proxy does
        for address, ready, serving, terminating, node in endpoints.rows():
            prev = found.get((address, number))
            if prev is None or (ready and not prev.ready):
                found[(address, number)] = Candidate(address, number, ready, serving, terminating, node)
    return list(found.values())


def select(cands: Iterable[Candidate], version: int, local_node: str | None) -> RealServers:
    """Real servers for one virtual server: family filter, optional node-local filter, then
    ready-else-serving-terminating, all at weight 1, sorted for stable output."""
    pool = [c for c in cands if c.version == version]
    if local_node is not None:
        pool = [c for c in pool if c.node_name == local_node]
    chosen = [c for c in pool if c.ready]
    if not chosen:
        chosen = [c for c in pool if c.serving and c.terminating]
    chosen.sort(key=lambda c: (c.number, c.port))  # one family: RealKey.sort_key's order
    return RealServers.plain((c.address, c.port) for c in chosen)
