"""Pure: which endpoints of a Service its health check looks at: those kube-proxy's rules would
put in rotation (ready ones, else serving-and-terminating ones), of every port and family."""

from __future__ import annotations

from collections.abc import Iterable

from ipvsctl import endpoints
from ipvsctl.model.ipvs import IPAddress
from ipvsctl.model.k8s import EndpointSlice, Service


def targets_of(svc: Service, slices: Iterable[EndpointSlice]) -> frozenset[tuple[IPAddress, int]]:
    slices = list(slices)
    found: set[tuple[IPAddress, int]] = set()
    for port in svc.ports:
        cands = endpoints.candidates(slices, port)
        for version in (4, 6):
            found.update((real.key.address, real.key.port) for real in endpoints.select(cands, version, None))
    return frozenset(found)
