"""Pure endpoint selection: which endpoints of a Service port become real servers, at what weight.

kube-proxy's rules: ready endpoints get weight 1; when no endpoint in the candidate set is
ready, the serving-and-terminating ones take new connections instead. Everything else is
left out here and drained by the planner.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ipvsctl.model.ipvs import IPAddress, RealKey, RealServer
from ipvsctl.model.k8s import EndpointSlice, ServicePort


@dataclass(frozen=True)
class Candidate:
    address: IPAddress
    port: int
    ready: bool
    serving: bool
    terminating: bool
    node_name: str | None


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
    found: dict[tuple[IPAddress, int], Candidate] = {}
    for es in slices:
        number = slice_port(es, port)
        if number is None:
            continue
        for ep in es.endpoints:
            addr = ep.addresses[0]  # consumers use the first address, as kube-proxy does
            prev = found.get((addr, number))
            cand = Candidate(addr, number, ep.ready, ep.serving, ep.terminating, ep.node_name)
            if prev is None or (cand.ready and not prev.ready):
                found[(addr, number)] = cand
    return list(found.values())


def select(cands: Iterable[Candidate], version: int, local_node: str | None) -> tuple[RealServer, ...]:
    """Real servers for one virtual server: family filter, optional node-local filter, then
    ready-else-serving-terminating, all at weight 1, sorted for stable output."""
    pool = [c for c in cands if c.address.version == version]
    if local_node is not None:
        pool = [c for c in pool if c.node_name == local_node]
    chosen = [c for c in pool if c.ready]
    if not chosen:
        chosen = [c for c in pool if c.serving and c.terminating]
    reals = [RealServer(RealKey(c.address, c.port), weight=1) for c in chosen]
    return tuple(sorted(reals, key=lambda r: r.key.sort_key()))
